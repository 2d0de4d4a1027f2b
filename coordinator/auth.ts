/**
 * Authentication middleware. Every check lives here so routes only say which one applies.
 */
import { timingSafeEqual } from "node:crypto";
import type { MiddlewareHandler } from "hono";
import { ollamaError } from "@oc/shared";
import type { AppContext } from "./context.ts";

const encoder = new TextEncoder();

/** Compares two strings in time that does not depend on where they differ. */
export function safeEqual(a: string, b: string): boolean {
  const x = encoder.encode(a);
  const y = encoder.encode(b);
  if (x.byteLength !== y.byteLength) {
    timingSafeEqual(x, x);
    return false;
  }
  return timingSafeEqual(x, y);
}

/** The bearer token of a request, or null. */
export function bearer(req: Request): string | null {
  const h = req.headers.get("authorization");
  const m = h ? /^Bearer\s+(\S+)\s*$/i.exec(h) : null;
  return m ? m[1] : null;
}

/** Requires the agent token on registration, heartbeats and progress when one is configured. */
export function agentAuth(ctx: AppContext): MiddlewareHandler {
  return async (c, next) => {
    const expected = ctx.config.agentToken;
    if (expected) {
      const got = bearer(c.req.raw);
      if (!got || !safeEqual(got, expected)) {
        return ollamaError(401, "Agent token is missing or wrong", {
          "www-authenticate": "Bearer",
        });
      }
    }
    await next();
  };
}
