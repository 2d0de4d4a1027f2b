/**
 * Token counts read from the end of an answer: Ollama's final object (`prompt_eval_count`,
 * `eval_count`, `eval_duration`), OpenAI's `usage` (`prompt_tokens`, `completion_tokens`) or
 * Anthropic's and OpenAI Responses' `usage` (`input_tokens`, `output_tokens`: a final message, a
 * `message_delta` or `response.completed` event). Only the last chunks are decoded, once.
 */

/** Token figures of one answer; any may be missing. */
export interface Usage {
  promptTokens?: number;
  completionTokens?: number;
  evalCount?: number;
  evalDurationNs?: number;
}

const FIELDS: [keyof Usage, string][] = [
  ["promptTokens", '"prompt_eval_count":'],
  ["evalCount", '"eval_count":'],
  ["evalDurationNs", '"eval_duration":'],
  ["promptTokens", '"prompt_tokens":'],
  ["completionTokens", '"completion_tokens":'],
  ["promptTokens", '"input_tokens":'],
  ["completionTokens", '"output_tokens":'],
];

/** The number after the last `"field":` in `text`, if any. */
function lastNumber(text: string, field: string): number | undefined {
  const at = text.lastIndexOf(field);
  if (at === -1) return undefined;
  let i = at + field.length;
  while (text.charCodeAt(i) === 32 || text.charCodeAt(i) === 9) i++;
  let value = 0;
  const start = i;
  for (let c = text.charCodeAt(i); c >= 48 && c <= 57; c = text.charCodeAt(++i)) {
    value = value * 10 + (c - 48);
  }
  return i > start ? value : undefined;
}

/** Reads usage from the tail chunks of an answer (at most the last 8 KiB are decoded). */
export function readUsage(chunks: (Uint8Array | undefined)[]): Usage {
  const parts = chunks.filter((c): c is Uint8Array => c !== undefined);
  if (parts.length === 0) return {};
  const decoder = new TextDecoder();
  let text = parts.map((p) =>
    decoder.decode(p.byteLength > 8192 ? p.subarray(p.byteLength - 8192) : p)
  ).join("");
  if (text.length > 8192) text = text.slice(-8192);
  const usage: Usage = {};
  for (const [key, field] of FIELDS) {
    const value = lastNumber(text, field);
    if (value !== undefined) usage[key] = value;
  }
  if (usage.completionTokens === undefined && usage.evalCount !== undefined) {
    usage.completionTokens = usage.evalCount;
  }
  return usage;
}
