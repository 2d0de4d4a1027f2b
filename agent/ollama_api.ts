/**
 * The few calls the agent makes to its local Ollama: liveness, version and the model lists.
 * Pulling and deleting models live in models.ts.
 */
import { InstalledModel, LoadedModel } from "@oc/shared";

/** Base URL of the local Ollama on `port`; IPv4 loopback so `localhost` resolving to ::1 never matters. */
export function ollamaUrl(port: number): string {
  return `http://127.0.0.1:${port}`;
}

/** Options shared by the calls in this module. */
export interface OllamaRequestOptions {
  signal?: AbortSignal;
  /** Per-request limit in milliseconds (default 5000). */
  timeoutMs?: number;
}

function requestSignal(options: OllamaRequestOptions): AbortSignal {
  const timeout = AbortSignal.timeout(options.timeoutMs ?? 5_000);
  return options.signal ? AbortSignal.any([options.signal, timeout]) : timeout;
}

/** True when something answers `HEAD /` at `baseUrl` with a 2xx status (Ollama's own probe). */
export async function isOllamaUp(
  baseUrl: string,
  options: OllamaRequestOptions = {},
): Promise<boolean> {
  try {
    const res = await fetch(`${baseUrl}/`, { method: "HEAD", signal: requestSignal(options) });
    await res.body?.cancel();
    return res.ok;
  } catch {
    return false;
  }
}

async function getJson(
  baseUrl: string,
  path: string,
  options: OllamaRequestOptions,
): Promise<unknown> {
  const res = await fetch(`${baseUrl}${path}`, { signal: requestSignal(options) });
  if (!res.ok) {
    await res.body?.cancel();
    throw new Error(`Cannot read Ollama ${path}: status ${res.status}`);
  }
  return await res.json();
}

/** Ollama's version from `GET /api/version`. */
export async function getOllamaVersion(
  baseUrl: string,
  options: OllamaRequestOptions = {},
): Promise<string> {
  const body = await getJson(baseUrl, "/api/version", options) as { version?: unknown };
  if (typeof body?.version !== "string" || body.version.trim() === "") {
    throw new Error("Cannot read Ollama /api/version: no version in the reply");
  }
  return body.version.trim();
}

function parseList<T>(
  body: unknown,
  schema: { safeParse(v: unknown): { success: true; data: T } | { success: false } },
): T[] {
  const models = (body as { models?: unknown })?.models;
  if (!Array.isArray(models)) return [];
  const out: T[] = [];
  for (const entry of models) {
    // Ollama's entries carry more fields (model, parent_model, …); zod drops what we do not send.
    const parsed = schema.safeParse(entry);
    if (parsed.success) out.push(parsed.data);
  }
  return out;
}

/** Pure: the models of an `/api/tags` reply, in the wire shape; malformed entries are skipped. */
export function parseTags(body: unknown): InstalledModel[] {
  return parseList(body, InstalledModel);
}

/** Pure: the models of an `/api/ps` reply, in the wire shape; malformed entries are skipped. */
export function parsePs(body: unknown): LoadedModel[] {
  return parseList(body, LoadedModel);
}

/** Models installed on disk (`GET /api/tags`). */
export async function listInstalledModels(
  baseUrl: string,
  options: OllamaRequestOptions = {},
): Promise<InstalledModel[]> {
  return parseTags(await getJson(baseUrl, "/api/tags", options));
}

/** Models loaded in memory (`GET /api/ps`). */
export async function listLoadedModels(
  baseUrl: string,
  options: OllamaRequestOptions = {},
): Promise<LoadedModel[]> {
  return parsePs(await getJson(baseUrl, "/api/ps", options));
}
