/**
 * Deterministic text, tokens and embeddings: words are picked by a hash of the prompt, so the same
 * request always gets the same answer.
 *
 * @module
 */

const VOCAB = (
  "the a model answer quickly river light stone cloud green signal garden mountain paper " +
  "engine window quiet bright simple steady ocean forest morning silver data server token " +
  "stream night careful small large open yellow orange blue music story path bridge field " +
  "winter summer valley city road shadow voice memory letter number system network graph " +
  "circle"
).split(" ");

/** Length of an embedding unless the request asks for `dimensions`. */
export const EMBED_DIM = 8;

/** FNV-1a, 32 bits: the seed of every deterministic choice. */
export function fnv1a(text: string, seed = 0x811c9dc5): number {
  let h = seed >>> 0;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h;
}

function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Whitespace-separated words: the simulator's idea of a token count. */
export function countTokens(text: string): number {
  return text.split(/\s+/).filter(Boolean).length;
}

/** The tokens of an answer and why it ends. */
export interface Plan {
  tokens: string[];
  reason: "stop" | "length";
}

/** The answer to a prompt: 10–40 words ending in "." (stop), or exactly `numPredict` (length). */
export function planAnswer(
  seedText: string,
  numPredict: number | undefined,
): Plan {
  const rand = mulberry32(fnv1a(seedText));
  const natural = 10 + Math.floor(rand() * 31);
  const limited = numPredict !== undefined && numPredict >= 0;
  const n = limited ? numPredict : natural;
  const tokens: string[] = [];
  for (let i = 0; i < n; i++) {
    const word = VOCAB[Math.floor(rand() * VOCAB.length)];
    tokens.push(i === 0 ? word[0].toUpperCase() + word.slice(1) : ` ${word}`);
  }
  if (!limited && n > 0) tokens[n - 1] += ".";
  return { tokens, reason: limited ? "length" : "stop" };
}

/** Token ids of a text, as `context` reports them. */
export function tokenIds(text: string): number[] {
  return text.split(/\s+/).filter(Boolean).map((w) => fnv1a(w) % 128_000);
}

/** A unit-length vector derived from the text. */
export function embedText(text: string, dim: number): number[] {
  const rand = mulberry32(fnv1a(text, 0x9e3779b9));
  const v = Array.from({ length: dim }, () => rand() * 2 - 1);
  const norm = Math.hypot(...v) || 1;
  return v.map((x) => x / norm);
}

/** Little-endian float32 bytes in base64, OpenAI's `encoding_format: "base64"`. */
export function float32Base64(values: number[]): string {
  const bytes = new Uint8Array(values.length * 4);
  const view = new DataView(bytes.buffer);
  values.forEach((x, i) => view.setFloat32(i * 4, x, true));
  let binary = "";
  for (const b of bytes) binary += String.fromCharCode(b);
  return btoa(binary);
}

/** The text of chat messages (strings or OpenAI content parts), the seed of the answer. */
export function messageText(messages: unknown[]): string {
  return messages.map((m) => {
    const content = (m as { content?: unknown })?.content;
    if (typeof content === "string") return content;
    // OpenAI content parts: [{type:"text", text}]
    if (Array.isArray(content)) {
      return content.map((p) => (typeof p?.text === "string" ? p.text : ""))
        .join(" ");
    }
    return "";
  }).join("\n");
}

/** The embedding length a request asks for (1–4096), else {@linkcode EMBED_DIM}. */
export function dimensions(value: unknown): number {
  const n = typeof value === "number" && Number.isFinite(value) ? value : undefined;
  return n !== undefined && n >= 1 && n <= 4096 ? Math.floor(n) : EMBED_DIM;
}
