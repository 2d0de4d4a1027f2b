/**
 * Anthropic's Messages API as Ollama (0.14+) serves it: `POST /v1/messages`, streaming named SSE
 * events or answering one message, with Anthropic's error shape. Like Ollama, no
 * `/v1/messages/count_tokens` (that path is a 404).
 *
 * @module
 */
import { type Ctx, HttpError, type Methods, num, randomId, readJson, str } from "./http.ts";
import { infer, requireModel } from "./inference.ts";
import { anthropicShape } from "./shapes.ts";
import type { SimState } from "./state.ts";
import { countTokens, messageText, planAnswer } from "./text.ts";

/** Anthropic's routes by path and method. */
export function anthropicRoutes(state: SimState): Record<string, Methods> {
  return {
    "/v1/messages": { POST: (r, c) => messages(state, r, c) },
  };
}

/** The text of Anthropic's `system`: a string or text blocks. */
function systemText(system: unknown): string {
  if (typeof system === "string") return system;
  return messageText([{ content: system }]);
}

async function messages(
  state: SimState,
  req: Request,
  ctx: Ctx,
): Promise<Response> {
  const body = await readJson(req);
  const raw = str(body.model);
  if (raw.trim() === "") throw new HttpError(400, "model is required");
  const maxTokens = num(body.max_tokens);
  if (maxTokens === undefined || maxTokens <= 0) {
    throw new HttpError(400, "max_tokens is required and must be positive");
  }
  const list = Array.isArray(body.messages) ? body.messages : [];
  if (list.length === 0) throw new HttpError(400, "messages is required");
  const entry = requireModel(state, raw, "chat");
  const system = systemText(body.system);
  const seed = messageText(list);
  const promptTokens = countTokens(system) + countTokens(seed) + list.length;
  const plan = planAnswer(seed, undefined);
  // Ollama passes max_tokens on as num_predict: a shorter answer ends at the limit.
  if (plan.tokens.length > maxTokens) {
    plan.tokens.length = Math.floor(maxTokens);
    plan.reason = "length";
  }
  return await infer(state, ctx, {
    entry,
    keepAliveMs: undefined,
    plan,
    promptTokens,
    stream: body.stream === true,
    shape: anthropicShape(raw, promptTokens, randomId("msg")),
  });
}
