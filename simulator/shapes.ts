/**
 * How each API writes a generation: Ollama's generate and chat (NDJSON), OpenAI's chat and text
 * completions (SSE). One {@linkcode Shape} per request knows its chunk, its final chunks and its
 * whole-body form, so the pacing code is shared.
 *
 * @module
 */
import { isoNow } from "./http.ts";
import { normalizeModelName } from "../shared/model_name.ts";
import { tokenIds } from "./text.ts";

/** What the final object reports; durations in ns. */
export interface Summary {
  text: string;
  reason: "stop" | "length";
  promptTokens: number;
  evalCount: number;
  totalNs: number;
  loadNs: number;
  promptEvalNs: number;
  evalNs: number;
}

/** How one API writes a generation: stream chunks, final chunks and the non-streaming body. */
export interface Shape {
  contentType: string;
  /** Number of chunks written after the tokens. */
  finalCount: number;
  chunk(token: string, index: number): string;
  final(s: Summary): string[];
  whole(s: Summary): unknown;
}

function durations(s: Summary) {
  const out: Record<string, number> = {
    total_duration: s.totalNs,
    load_duration: s.loadNs,
    prompt_eval_count: s.promptTokens,
    prompt_eval_duration: s.promptEvalNs,
    eval_count: s.evalCount,
    eval_duration: s.evalNs,
  };
  // Ollama omits zero values.
  for (const k of Object.keys(out)) if (out[k] === 0) delete out[k];
  return out;
}

/** /api/generate: `response` per chunk; the final object carries `context` and durations. */
export function generateShape(model: string, context: number[]): Shape {
  const line = (o: unknown) => JSON.stringify(o) + "\n";
  return {
    contentType: "application/x-ndjson",
    finalCount: 1,
    chunk: (token) => line({ model, created_at: isoNow(), response: token, done: false }),
    final: (
      s,
    ) => [
      line({ model, created_at: isoNow(), ...finalGenerate(s, context, "") }),
    ],
    whole: (s) => ({
      model,
      created_at: isoNow(),
      ...finalGenerate(s, context, s.text),
    }),
  };
}

function finalGenerate(s: Summary, context: number[], response: string) {
  return {
    response,
    done: true,
    done_reason: s.reason,
    context: [...context, ...tokenIds(s.text)],
    ...durations(s),
  };
}

/** /api/chat: an assistant `message` per chunk; the final object carries durations. */
export function chatShape(model: string): Shape {
  const line = (o: unknown) => JSON.stringify(o) + "\n";
  const msg = (content: string) => ({ role: "assistant", content });
  return {
    contentType: "application/x-ndjson",
    finalCount: 1,
    chunk: (token) => line({ model, created_at: isoNow(), message: msg(token), done: false }),
    final: (s) => [
      line({
        model,
        created_at: isoNow(),
        message: msg(""),
        done: true,
        done_reason: s.reason,
        ...durations(s),
      }),
    ],
    whole: (s) => ({
      model,
      created_at: isoNow(),
      message: msg(s.text),
      done: true,
      done_reason: s.reason,
      ...durations(s),
    }),
  };
}

function usage(s: Summary) {
  return {
    prompt_tokens: s.promptTokens,
    completion_tokens: s.evalCount,
    total_tokens: s.promptTokens + s.evalCount,
  };
}

/**
 * /v1/chat/completions (`chat`) and /v1/completions (`text`): SSE events ending in a finish
 * event, an optional usage event and `[DONE]`.
 */
export function openaiShape(
  kind: "chat" | "text",
  model: string,
  includeUsage: boolean,
): Shape {
  const id = `${kind === "chat" ? "chatcmpl" : "cmpl"}-${Math.floor(Math.random() * 1000)}`;
  const created = Math.floor(Date.now() / 1000);
  const object = kind === "chat" ? "chat.completion.chunk" : "text_completion";
  const head = { id, object, created, model, system_fingerprint: "fp_ollama" };
  const event = (o: unknown) => `data: ${JSON.stringify(o)}\n\n`;
  const choice = (token: string | null, index: number, finish: string | null) =>
    kind === "chat"
      ? {
        index: 0,
        delta: token === null
          ? {}
          : index === 0
          ? { role: "assistant", content: token }
          : { content: token },
        finish_reason: finish,
      }
      : { text: token ?? "", index: 0, finish_reason: finish };
  return {
    contentType: "text/event-stream",
    finalCount: includeUsage ? 3 : 2,
    chunk: (token, i) => event({ ...head, choices: [choice(token, i, null)] }),
    final: (s) => [
      event({ ...head, choices: [choice(null, -1, s.reason)] }),
      ...(includeUsage ? [event({ ...head, choices: [], usage: usage(s) })] : []),
      "data: [DONE]\n\n",
    ],
    whole: (s) => ({
      id,
      object: kind === "chat" ? "chat.completion" : "text_completion",
      created,
      model,
      system_fingerprint: "fp_ollama",
      choices: [
        kind === "chat"
          ? {
            index: 0,
            message: { role: "assistant", content: s.text },
            finish_reason: s.reason,
          }
          : { text: s.text, index: 0, finish_reason: s.reason, logprobs: null },
      ],
      usage: usage(s),
    }),
  };
}

/** A /v1/models entry; the owner is the namespace of the model's full name. */
export function openaiModel(id: string, modifiedAt: string, name = id) {
  const parts = normalizeModelName(name).split("/");
  return {
    id,
    object: "model",
    created: Math.floor(Date.parse(modifiedAt) / 1000),
    owned_by: parts[parts.length - 2],
  };
}

/** Anthropic's `stop_reason` for Ollama's `done_reason`, as Ollama maps it. */
function stopReason(reason: Summary["reason"]): string {
  return reason === "length" ? "max_tokens" : "end_turn";
}

/**
 * /v1/messages (Anthropic's Messages API, as Ollama 0.14+ serves it): named SSE events. The first
 * chunk carries `message_start` (with the input tokens), `content_block_start` and the first
 * `content_block_delta`; each later token one delta; the end `content_block_stop`,
 * `message_delta` (stop reason and usage) and `message_stop`.
 */
export function anthropicShape(model: string, promptTokens: number, id: string): Shape {
  const event = (name: string, o: unknown) => `event: ${name}\ndata: ${JSON.stringify(o)}\n\n`;
  const delta = (token: string) =>
    event("content_block_delta", {
      type: "content_block_delta",
      index: 0,
      delta: { type: "text_delta", text: token },
    });
  return {
    contentType: "text/event-stream",
    finalCount: 1,
    chunk: (token, i) =>
      i > 0 ? delta(token) : event("message_start", {
        type: "message_start",
        message: {
          id,
          type: "message",
          role: "assistant",
          model,
          content: [],
          usage: { input_tokens: promptTokens, output_tokens: 0 },
        },
      }) +
        event("content_block_start", {
          type: "content_block_start",
          index: 0,
          content_block: { type: "text", text: "" },
        }) + delta(token),
    final: (s) => [
      event("content_block_stop", { type: "content_block_stop", index: 0 }) +
      event("message_delta", {
        type: "message_delta",
        delta: { stop_reason: stopReason(s.reason) },
        usage: { input_tokens: s.promptTokens, output_tokens: s.evalCount },
      }) +
      event("message_stop", { type: "message_stop" }),
    ],
    whole: (s) => ({
      id,
      type: "message",
      role: "assistant",
      model,
      content: [{ type: "text", text: s.text }],
      stop_reason: stopReason(s.reason),
      usage: { input_tokens: s.promptTokens, output_tokens: s.evalCount },
    }),
  };
}
