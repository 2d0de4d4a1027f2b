/**
 * Token counts read from the end of an answer: Ollama's final object (`prompt_eval_count`,
 * `eval_count`, `eval_duration`) or OpenAI's `usage`. Only the last chunks are decoded, once.
 */

/** Token figures of one answer; any may be missing. */
export interface Usage {
  promptTokens?: number;
  completionTokens?: number;
  evalCount?: number;
  evalDurationNs?: number;
}

const PATTERNS: [keyof Usage, RegExp][] = [
  ["promptTokens", /"prompt_eval_count":\s*(\d+)/g],
  ["evalCount", /"eval_count":\s*(\d+)/g],
  ["evalDurationNs", /"eval_duration":\s*(\d+)/g],
  ["promptTokens", /"prompt_tokens":\s*(\d+)/g],
  ["completionTokens", /"completion_tokens":\s*(\d+)/g],
];

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
  for (const [key, re] of PATTERNS) {
    let m: RegExpExecArray | null;
    let lastValue: number | undefined;
    re.lastIndex = 0;
    while ((m = re.exec(text)) !== null) lastValue = Number(m[1]);
    if (lastValue !== undefined) usage[key] = lastValue;
  }
  if (usage.completionTokens === undefined && usage.evalCount !== undefined) {
    usage.completionTokens = usage.evalCount;
  }
  return usage;
}
