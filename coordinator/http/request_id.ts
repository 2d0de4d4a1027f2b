/**
 * Request ids. Every request gets its own id, made here once by middleware and read as
 * `c.var.requestId`: it names the request's request-log row, its events and its log line, and is
 * sent back as `X-Request-Id`. A client's own id (from `X-Client-Request-Id` or `X-Request-Id`)
 * is never used in its place, because ten requests sharing one id would share one request-log row
 * and hide their usage; it is kept beside ours (`client_request_id`) and echoed as
 * `X-Client-Request-Id`.
 */
import type { MiddlewareHandler } from "hono";
import type { AppEnv } from "./env.ts";

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

/** Sets `c.var.requestId` and puts it on every answer that does not carry one yet. */
export function requestId(): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    c.set("requestId", newRequestId());
    await next();
    // Proxied answers already carry the id the proxy logged them under.
    if (!c.res.headers.has("x-request-id")) c.res.headers.set("x-request-id", c.var.requestId);
  };
}
