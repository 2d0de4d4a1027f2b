/** Error bodies in the shapes Ollama, OpenAI and Anthropic clients expect. */

/** Ollama's error body: `{"error": "message"}`. */
export function ollamaErrorBody(message: string): string {
  return JSON.stringify({ error: message });
}

/** The OpenAI `type` Ollama uses for a status. */
export function openaiErrorType(status: number): string {
  if (status === 400 || status === 413 || status === 422) return "invalid_request_error";
  if (status === 401) return "authentication_error";
  if (status === 404) return "not_found_error";
  return "api_error";
}

/** OpenAI's error body: `{"error": {"message", "type", "param", "code"}}`. */
export function openaiErrorBody(status: number, message: string): string {
  return JSON.stringify({
    error: { message, type: openaiErrorType(status), param: null, code: null },
  });
}

/**
 * The headers of an error answer with its content type. A `Headers` passed in is taken over (its
 * content type set), not copied: building headers is most of an error answer's cost, and the
 * callers build theirs for this answer only.
 */
function typed(headers: HeadersInit | undefined, type: string): Headers {
  const h = headers instanceof Headers ? headers : new Headers(headers);
  h.set("content-type", type);
  return h;
}

/** Builds an Ollama-shaped JSON error response (a `Headers` passed in is taken over). */
export function ollamaError(status: number, message: string, headers?: HeadersInit): Response {
  const h = typed(headers, "application/json; charset=utf-8");
  return new Response(ollamaErrorBody(message), { status, headers: h });
}

/** Builds an OpenAI-shaped JSON error response (a `Headers` passed in is taken over). */
export function openaiError(status: number, message: string, headers?: HeadersInit): Response {
  const h = typed(headers, "application/json");
  return new Response(openaiErrorBody(status, message), { status, headers: h });
}

/** The Anthropic error `type` for a status, as Anthropic's API and Ollama's `/v1/messages` use. */
export function anthropicErrorType(status: number): string {
  if (status === 400 || status === 422) return "invalid_request_error";
  if (status === 401) return "authentication_error";
  if (status === 403) return "permission_error";
  if (status === 404) return "not_found_error";
  if (status === 413) return "request_too_large";
  if (status === 429) return "rate_limit_error";
  if (status === 503 || status === 529) return "overloaded_error";
  // Anthropic: "we may also use this error type for other 4XX status codes".
  if (status >= 400 && status < 500) return "invalid_request_error";
  return "api_error";
}

/**
 * Anthropic's error body: `{"type":"error","error":{"type","message"}}`, with the request's id
 * as `request_id` when there is one (Anthropic's API and Ollama add it too).
 */
export function anthropicErrorBody(status: number, message: string, requestId?: string): string {
  const body: Record<string, unknown> = {
    type: "error",
    error: { type: anthropicErrorType(status), message },
  };
  if (requestId) body.request_id = requestId;
  return JSON.stringify(body);
}

/**
 * Builds an Anthropic-shaped JSON error response (the request id from `x-request-id`; a `Headers`
 * passed in is taken over).
 */
export function anthropicError(status: number, message: string, headers?: HeadersInit): Response {
  const h = typed(headers, "application/json");
  const body = anthropicErrorBody(status, message, h.get("x-request-id") ?? undefined);
  return new Response(body, { status, headers: h });
}

/** Describes the first problem of a failed zod parse in one sentence-case line. */
export function describeIssues(
  issues: ReadonlyArray<{ path: ReadonlyArray<PropertyKey>; message: string }>,
): string {
  const first = issues[0];
  if (!first) return "Invalid request body";
  const where = first.path.map(String).join(".");
  return where ? `Invalid field "${where}": ${first.message}` : first.message;
}
