/** Error responses in the shape of the API the client called. */
import type { Context } from "hono";
import { anthropicError, ollamaError, openaiError } from "@oc/shared";
import type { AppEnv } from "./env.ts";

/**
 * Which API a route belongs to: Ollama's native one, the OpenAI-compatible `/v1`, or Anthropic's
 * Messages API (`/v1/messages`).
 */
export type Flavor = "ollama" | "openai" | "anthropic";

/** The API a path belongs to, for answers given before any route ran (404, 405, 401, 508…). */
export function flavorOfPath(path: string): Flavor {
  if (!path.startsWith("/v1/")) return "ollama";
  return path === "/v1/messages" || path.startsWith("/v1/messages/") ? "anthropic" : "openai";
}

/** An error response for `flavor`, carrying the request id. */
export function errorResponse(
  flavor: Flavor,
  status: number,
  message: string,
  requestId?: string,
  headers?: HeadersInit,
): Response {
  // Built once here and taken over by the shape's builder (converting headers costs more than
  // the rest of a refusal's answer).
  const h = new Headers(headers);
  if (requestId) h.set("x-request-id", requestId);
  if (flavor === "openai") return openaiError(status, message, h);
  if (flavor === "anthropic") return anthropicError(status, message, h);
  return ollamaError(status, message, h);
}

/** An error response in the shape of the API the request's path belongs to, with its id. */
export function errorFor(
  c: Context<AppEnv>,
  status: number,
  message: string,
  headers?: HeadersInit,
): Response {
  return errorResponse(flavorOfPath(c.req.path), status, message, c.get("requestId"), headers);
}
