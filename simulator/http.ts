/**
 * HTTP plumbing of the simulator: per-request state, errors in Ollama's, OpenAI's or Anthropic's
 * shape, body parsing, abortable sleeps and Ollama's Host-header check.
 *
 * @module
 */
import { anthropicErrorBody, ollamaErrorBody, openaiErrorBody } from "../shared/errors.ts";

/** Which API a path belongs to, and so which error shape it answers with. */
export type Api = "ollama" | "openai" | "anthropic";

/** The API of a path: `/v1/messages…` is Anthropic's, the rest of `/v1/` OpenAI's. */
export function apiOf(path: string): Api {
  if (!path.startsWith("/v1/")) return "ollama";
  return path === "/v1/messages" || path.startsWith("/v1/messages/") ? "anthropic" : "openai";
}

/** An id like Ollama's Anthropic ids: the prefix, `_`, 24 hex digits. */
export function randomId(prefix: string): string {
  const bytes = crypto.getRandomValues(new Uint8Array(12));
  return `${prefix}_${Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("")}`;
}

/** Per-request state: which error shape to use, the abort signal, how the response ended. */
export interface Ctx {
  api: Api;
  signal: AbortSignal;
  /** The body was produced to its end. */
  done: boolean;
  /** The response will not complete (client gone, fault, close). */
  failed: boolean;
  /** The route returns a body that marks `done` itself. */
  streaming: boolean;
}

/** A route's handler. */
export type Handler = (req: Request, ctx: Ctx) => Promise<Response> | Response;

/** Handlers of one path by method. */
export type Methods = Partial<Record<string, Handler>>;

/** Thrown by handlers; answered with the status and the message in the API's error shape. */
export class HttpError extends Error {
  constructor(readonly status: number, message: string) {
    super(message);
  }
}

/** Content type of every JSON answer. */
export const JSON_TYPE = "application/json; charset=utf-8";

/** A JSON response. */
export function json(body: unknown, status = 200): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": JSON_TYPE },
  });
}

/** An error response in the shape of the API. */
export function errorResponse(
  api: Api,
  status: number,
  message: string,
): Response {
  const body = api === "openai"
    ? openaiErrorBody(status, message)
    : api === "anthropic"
    ? anthropicErrorBody(status, message, randomId("req"))
    : ollamaErrorBody(message);
  return new Response(body, { status, headers: { "content-type": JSON_TYPE } });
}

/** The request's JSON object; HttpError 400 for an empty body, bad JSON or a non-object. */
export async function readJson(req: Request): Promise<Record<string, unknown>> {
  const text = await req.text();
  if (text.trim() === "") throw new HttpError(400, "missing request body");
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch (e) {
    throw new HttpError(400, `invalid JSON: ${(e as Error).message}`);
  }
  if (body === null || typeof body !== "object" || Array.isArray(body)) {
    throw new HttpError(400, "request body must be a JSON object");
  }
  return body as Record<string, unknown>;
}

/** The value if it is a string, else "". */
export function str(value: unknown): string {
  return typeof value === "string" ? value : "";
}

/** The value if it is a finite number. */
export function num(value: unknown): number | undefined {
  return typeof value === "number" && Number.isFinite(value) ? value : undefined;
}

/** Now as Ollama writes `created_at`. */
export function isoNow(): string {
  return new Date().toISOString();
}

/** Shared by every module that writes bodies. */
export const encoder = new TextEncoder();

/** Sleeps; rejects with the signal's reason on abort and clears its timer. */
export function sleep(ms: number, signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.reject(signal.reason);
  if (ms <= 0) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal.reason);
    };
    const timer = setTimeout(() => {
      signal.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal.addEventListener("abort", onAbort, { once: true });
  });
}

/** Resolves when the signal aborts. */
export function waitForAbort(signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) resolve();
    else signal.addEventListener("abort", () => resolve(), { once: true });
  });
}

// Loopback servers accept only local Host headers, like Ollama (which answers 403 otherwise).

/** Whether the listen address is a loopback one (then the Host header is checked). */
export function isLoopbackHost(hostname: string): boolean {
  return hostname === "localhost" || hostname === "::1" ||
    hostname.startsWith("127.");
}

/** Whether Ollama on loopback would accept this Host header. */
export function allowedHostHeader(host: string | null): boolean {
  if (!host) return true;
  let h = host.toLowerCase();
  if (h.startsWith("[")) h = h.slice(1, h.indexOf("]"));
  else if (h.split(":").length === 2) h = h.split(":")[0];
  if (
    h === "" || h === "localhost" || h === "::1" || h === "::" ||
    h.startsWith("fe80:")
  ) {
    return true;
  }
  if (/^(fc|fd)[0-9a-f]{2}:/.test(h)) return true;
  const v4 = h.match(/^(\d+)\.(\d+)\.(\d+)\.(\d+)$/);
  if (v4) {
    const [a, b] = [Number(v4[1]), Number(v4[2])];
    return a === 127 || a === 10 || a === 0 ||
      (a === 172 && b >= 16 && b < 32) ||
      (a === 192 && b === 168) || (a === 169 && b === 254);
  }
  if (/\.(localhost|local|internal)$/.test(h)) return true;
  try {
    const granted = Deno.permissions.querySync({ name: "sys", kind: "hostname" }).state;
    if (granted === "granted" && h === Deno.hostname().toLowerCase()) {
      return true;
    }
  } catch {
    // No way to learn the machine's name: treat it as not local.
  }
  return false;
}
