/**
 * The one parse of an inference body the coordinator does: the model, whether to stream, and
 * a conversation key for affinity. The original bytes are what goes upstream.
 */
import type { Flavor } from "../http/errors.ts";
import { MESSAGES } from "../http/messages.ts";

/** Largest inference body accepted (images travel inline as base64). */
export const INFERENCE_BODY_LIMIT = 64 * 1024 * 1024;

const decoder = new TextDecoder();

/** What routing needs from a body. */
export interface RoutingInfo {
  model: string;
  /** The member the model was named in: `model`, or the older `name` (native API). */
  field: "model" | "name";
  stream: boolean;
  affinity?: string;
}

/** Parses an inference body; returns an error message instead when it cannot be routed. */
export function routingInfo(
  bytes: Uint8Array,
  options: { flavor: Flavor; streams: boolean; modelField?: "model" | "name" },
): RoutingInfo | string {
  let body: unknown;
  try {
    body = JSON.parse(decoder.decode(bytes));
  } catch {
    return bytes.byteLength === 0 ? "missing request body" : MESSAGES.invalidJson;
  }
  if (typeof body !== "object" || body === null || Array.isArray(body)) {
    return "request body must be a JSON object";
  }
  const b = body as Record<string, unknown>;
  const respelled = respelledField(b);
  if (respelled) return respelled;
  const field = b.model === undefined || b.model === null ? "name" : "model";
  const raw = b.model ?? (options.flavor === "ollama" ? b.name : undefined);
  if (raw === undefined || raw === null || raw === "") return MESSAGES.modelRequired;
  if (typeof raw !== "string") return "model must be a string";
  if (raw.length > 512) return "model name is too long";
  const model = raw.trim();
  if (!model) return MESSAGES.modelRequired;
  if ("stream" in b && b.stream !== null && typeof b.stream !== "boolean") {
    return "stream must be a boolean";
  }
  // Native streams unless told not to; /v1 (OpenAI's and Anthropic's) streams only when asked.
  const stream = options.streams &&
    (options.flavor === "ollama" ? b.stream !== false : b.stream === true);
  return { model, field, stream, affinity: affinityKey(model, b.messages) };
}

/** The members routing reads, as Ollama names them. */
const ROUTED_FIELDS = new Set(["model", "name", "stream"]);

/**
 * Refuses a routed member spelled another way (`MODEL`, `Stream`, `ſtream`). Ollama's JSON decoder
 * (Go's) matches member names case-insensitively, the last match winning, so
 * `{"model":"a","MODEL":"b"}` would be routed as `a` (its pins, its log row) while the agent runs
 * `b`. Such a body gets a 400 instead; the common case costs a length check per member.
 */
function respelledField(b: Record<string, unknown>): string | undefined {
  for (const key in b) {
    if (key.length < 4 || key.length > 6 || ROUTED_FIELDS.has(key)) continue;
    // Go's case folding also takes the long s (ſ) for an s.
    const folded = key.replaceAll("\u017f", "s").toLowerCase();
    if (ROUTED_FIELDS.has(folded)) {
      return `field ${JSON.stringify(key)} would be read as "${folded}": write it in lower case`;
    }
  }
  return undefined;
}

/**
 * A key that stays the same for every turn of one conversation: the model and the leading
 * messages up to and including the first user message.
 */
export function affinityKey(model: string, messages: unknown): string | undefined {
  if (!Array.isArray(messages)) return undefined;
  const firstUser = messages.findIndex((m) => (m as { role?: unknown })?.role === "user");
  if (firstUser === -1) return undefined;
  return fnv1a(model + "\u0000" + JSON.stringify(messages.slice(0, firstUser + 1)));
}

/** Two 32-bit FNV-1a-style hashes (different seeds and primes) in one pass, and the length. */
function fnv1a(s: string): string {
  let h = 0x811c9dc5;
  let h2 = 0x12345678;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    h = Math.imul(h ^ c, 0x01000193);
    h2 = Math.imul(h2 ^ c, 0x5bd1e995);
  }
  return (h >>> 0).toString(36) + (h2 >>> 0).toString(36) + s.length.toString(36);
}
