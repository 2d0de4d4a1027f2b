/** Error responses in the shape of the API the client called. */
import { ollamaError, openaiError } from "@oc/shared";

/** Which API a route belongs to: Ollama's native one or the OpenAI-compatible `/v1`. */
export type Flavor = "ollama" | "openai";

/** An error response for `flavor`, carrying the request id. */
export function errorResponse(
  flavor: Flavor,
  status: number,
  message: string,
  requestId?: string,
  headers?: HeadersInit,
): Response {
  const h = new Headers(headers);
  if (requestId) h.set("x-request-id", requestId);
  return flavor === "openai" ? openaiError(status, message, h) : ollamaError(status, message, h);
}
