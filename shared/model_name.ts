/**
 * Model-name normalisation as Ollama does it: `llama3.2`, `llama3.2:latest` and
 * `registry.ollama.ai/library/llama3.2:latest` are the same model, compared case-insensitively.
 */

const DEFAULT_HOST = "registry.ollama.ai";
const DEFAULT_NAMESPACE = "library";
const DEFAULT_TAG = "latest";

/**
 * Returns the canonical form of a model name: `host/namespace/model:tag`, lower-cased.
 * A digest suffix (`@sha256:…`) is kept.
 */
export function normalizeModelName(raw: string): string {
  let full = cache.get(raw);
  if (full === undefined) {
    full = normalize(raw);
    // Routing asks for the same few names over and over; keep a bounded memo.
    if (cache.size >= CACHE_LIMIT) cache.delete(cache.keys().next().value!);
    cache.set(raw, full);
  }
  return full;
}

const CACHE_LIMIT = 4096;
const cache = new Map<string, string>();

function normalize(raw: string): string {
  let name = raw.trim().toLowerCase();
  let digest = "";
  const at = name.indexOf("@");
  if (at !== -1) {
    digest = name.slice(at);
    name = name.slice(0, at);
  }
  const slash = name.lastIndexOf("/");
  const colon = name.lastIndexOf(":");
  let tag = DEFAULT_TAG;
  if (colon > slash) {
    tag = name.slice(colon + 1) || DEFAULT_TAG;
    name = name.slice(0, colon);
  }
  const parts = name.split("/");
  let host = DEFAULT_HOST;
  let namespace = DEFAULT_NAMESPACE;
  let model: string;
  if (parts.length >= 3) {
    host = parts[0];
    namespace = parts.slice(1, -1).join("/");
    model = parts[parts.length - 1];
  } else if (parts.length === 2) {
    namespace = parts[0];
    model = parts[1];
  } else {
    model = parts[0];
  }
  return `${host}/${namespace}/${model}:${tag}${digest}`;
}

/** The short form Ollama shows in lists: `llama3.2:latest`, `user/model:tag`, `host/ns/model:tag`. */
export function displayModelName(raw: string): string {
  const full = normalizeModelName(raw);
  const prefix = `${DEFAULT_HOST}/${DEFAULT_NAMESPACE}/`;
  if (full.startsWith(prefix)) return full.slice(prefix.length);
  if (full.startsWith(`${DEFAULT_HOST}/`)) return full.slice(DEFAULT_HOST.length + 1);
  return full;
}
