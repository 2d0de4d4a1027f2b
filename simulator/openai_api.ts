/**
 * Ollama's OpenAI-compatible routes (`/v1/*`): chat and text completions, embeddings (floats or
 * base64) and models, with OpenAI's error shape.
 *
 * @module
 */
import { wholeBody } from "./faults.ts";
import { type Ctx, HttpError, json, type Methods, num, readJson, str } from "./http.ts";
import { embedVectors, infer, requireModel } from "./inference.ts";
import { openaiModel, openaiShape } from "./shapes.ts";
import type { SimState } from "./state.ts";
import { countTokens, dimensions, float32Base64, messageText, planAnswer } from "./text.ts";

function openaiMaxTokens(body: Record<string, unknown>): number | undefined {
  const n = num(body.max_completion_tokens) ?? num(body.max_tokens);
  return n === undefined ? undefined : Math.floor(n);
}

function includeUsage(body: Record<string, unknown>): boolean {
  return (body.stream_options as { include_usage?: unknown } | undefined)
    ?.include_usage === true;
}

/** OpenAI's routes by path and method; `/v1/models/{name}` is {@linkcode openaiModelRoute}. */
export function openaiRoutes(state: SimState): Record<string, Methods> {
  return {
    "/v1/chat/completions": { POST: (r, c) => chatCompletion(state, r, c) },
    "/v1/completions": { POST: (r, c) => completion(state, r, c) },
    "/v1/embeddings": { POST: (r, c) => embeddings(state, r, c) },
    "/v1/models": {
      GET: () =>
        json({
          object: "list",
          data: state.models.tags().map((t) => openaiModel(t.name, t.modified_at)),
        }),
    },
  };
}

/** `GET /v1/models/{name}`. */
export function openaiModelRoute(state: SimState, name: string): Methods {
  return {
    GET: () => {
      const e = state.models.find(name);
      if (!e) throw new HttpError(404, `model "${name}" not found`);
      return json(openaiModel(name, e.modifiedAt.toISOString(), e.name));
    },
  };
}

async function chatCompletion(
  state: SimState,
  req: Request,
  ctx: Ctx,
): Promise<Response> {
  const body = await readJson(req);
  const raw = str(body.model);
  const entry = requireModel(state, raw, "chat");
  const messages = Array.isArray(body.messages) ? body.messages : [];
  if (messages.length === 0) {
    throw new HttpError(400, "[] is too short - 'messages'");
  }
  const seed = messageText(messages);
  const stream = body.stream === true;
  return await infer(state, ctx, {
    entry,
    keepAliveMs: undefined,
    plan: planAnswer(seed, openaiMaxTokens(body)),
    promptTokens: countTokens(seed) + messages.length,
    stream,
    shape: openaiShape("chat", raw, stream && includeUsage(body)),
  });
}

async function completion(
  state: SimState,
  req: Request,
  ctx: Ctx,
): Promise<Response> {
  const body = await readJson(req);
  const raw = str(body.model);
  const entry = requireModel(state, raw, "generate");
  const prompt = Array.isArray(body.prompt) ? body.prompt.map(str).join("\n") : str(body.prompt);
  const stream = body.stream === true;
  return await infer(state, ctx, {
    entry,
    keepAliveMs: undefined,
    plan: planAnswer(prompt, openaiMaxTokens(body)),
    promptTokens: Math.max(1, countTokens(prompt)),
    stream,
    shape: openaiShape("text", raw, stream && includeUsage(body)),
  });
}

async function embeddings(
  state: SimState,
  req: Request,
  ctx: Ctx,
): Promise<Response> {
  const body = await readJson(req);
  const raw = str(body.model);
  const entry = requireModel(state, raw, "embed");
  const input = body.input;
  let inputs: string[];
  if (typeof input === "string") inputs = [input];
  else if (Array.isArray(input) && input.length > 0) {
    // Token arrays are accepted too; their ids stand for the text.
    inputs = input.every((x) => typeof x === "number")
      ? [input.join(" ")]
      : input.map((x) => (Array.isArray(x) ? x.join(" ") : String(x)));
  } else throw new HttpError(400, "invalid input");
  const r = await embedVectors(state, ctx, {
    entry,
    inputs,
    keepAliveMs: undefined,
    dim: dimensions(body.dimensions),
  });
  const base64 = body.encoding_format === "base64";
  return wholeBody(ctx, state.fault, {
    object: "list",
    data: r.embeddings.map((embedding, index) => ({
      object: "embedding",
      embedding: base64 ? float32Base64(embedding) : embedding,
      index,
    })),
    model: raw,
    usage: { prompt_tokens: r.promptTokens, total_tokens: r.promptTokens },
  });
}
