/**
 * Request ids. Every request gets its own id, made here: it names the request's request-log row,
 * its events and its log line, and is sent back as `X-Request-Id`. A client's own id (from
 * `X-Client-Request-Id` or `X-Request-Id`) is never used in its place, because ten requests
 * sharing one id would share one request-log row and hide their usage; it is kept beside ours
 * (`client_request_id`) and echoed as `X-Client-Request-Id`.
 */

/** The response header echoing the client's own request id. */
export const CLIENT_REQUEST_ID_HEADER = "x-client-request-id";

/** A new request id. */
export function newRequestId(): string {
  return crypto.randomUUID();
}

/** The id a client gave its request, when it is sane (`[\w.:-]{1,128}`), else null. */
export function clientRequestId(req: Request): string | null {
  const given = req.headers.get(CLIENT_REQUEST_ID_HEADER) ?? req.headers.get("x-request-id");
  return given && /^[\w.:-]{1,128}$/.test(given) ? given : null;
}
