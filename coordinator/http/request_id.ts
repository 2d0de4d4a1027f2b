/** One request id per request, set once by middleware and read as `c.var.requestId`. */
import type { MiddlewareHandler } from "hono";
import type { AppEnv } from "./env.ts";

/** A request id: the client's `x-request-id` when it is sane, else a new one. */
export function requestIdOf(req: Request): string {
  const given = req.headers.get("x-request-id");
  return given && /^[\w.:-]{1,128}$/.test(given) ? given : crypto.randomUUID();
}

/** Sets `c.var.requestId` and puts it on every answer that does not carry one yet. */
export function requestId(): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    c.set("requestId", requestIdOf(c.req.raw));
    await next();
    // Proxied answers already carry the id the proxy logged them under.
    if (!c.res.headers.has("x-request-id")) c.res.headers.set("x-request-id", c.var.requestId);
  };
}
