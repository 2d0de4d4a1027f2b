/**
 * Access control, in one place. Every request is classified by method and path; one middleware
 * applies the matching check, failing closed:
 * - agent registration needs the agent token; heartbeats and progress need that agent's own secret;
 * - the dashboard and every management API need an admin session (plus a CSRF token on changes)
 *   or an admin API key;
 * - the Ollama and OpenAI routes need a client API key once keys are enabled.
 */
import { timingSafeEqual } from "node:crypto";
import type { Context, MiddlewareHandler } from "hono";
import { getCookie } from "hono/cookie";
import { ollamaError, openaiError } from "@oc/shared";
import type { AppContext } from "../context.ts";
import { sha256 } from "../security/crypto.ts";

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

/** Who may call a route. */
export type Access = "public" | "agent_register" | "agent" | "admin" | "client";

const ADMIN_PREFIXES = [
  "/dashboard",
  "/api/agents",
  "/api/events",
  "/api/keys",
  "/api/stats",
  "/api/fleet",
  "/api/stream",
  "/api/requests",
  "/api/models",
  "/api/admin",
];

function under(path: string, prefix: string): boolean {
  return path === prefix || path.startsWith(prefix + "/");
}

const MODEL_MANAGEMENT = [
  "/api/pull",
  "/api/push",
  "/api/create",
  "/api/copy",
  "/api/delete",
  "/api/blobs",
];

/** Classifies a request by method and path. */
export function accessOf(
  method: string,
  path: string,
  options: { metricsPublic?: boolean; clientModelManagement?: boolean } = {},
): Access {
  const metricsPublic = options.metricsPublic ?? false;
  if (options.clientModelManagement === false && MODEL_MANAGEMENT.some((p) => under(path, p))) {
    return "admin";
  }
  if (method === "POST" && path === "/api/agents") return "agent_register";
  if (
    method === "POST" && (path === "/api/health" || /^\/api\/agents\/[^/]+\/progress$/.test(path))
  ) {
    return "agent";
  }
  if (path === "/metrics") return metricsPublic ? "public" : "admin";
  if (ADMIN_PREFIXES.some((p) => under(path, p))) return "admin";
  if (path.startsWith("/api/") || path.startsWith("/v1/")) return "client";
  return "public";
}

/** The name of the admin session cookie. */
export const SESSION_COOKIE = "oc_session";

function unauthorized(flavor: "ollama" | "openai", message: string): Response {
  const headers = { "www-authenticate": "Bearer" };
  return flavor === "openai"
    ? openaiError(401, message, headers)
    : ollamaError(401, message, headers);
}

/** The admin behind a request: a live session (with its CSRF token) or an admin API key. */
export function adminOf(
  ctx: AppContext,
  c: Context,
): { kind: "session"; csrf: string } | { kind: "key" } | null {
  const token = bearer(c.req.raw);
  if (token) {
    const key = ctx.security.useKey(token);
    return key?.scope === "admin" ? { kind: "key" } : null;
  }
  const cookie = getCookie(c, SESSION_COOKIE);
  const session = cookie ? ctx.security.session(cookie) : undefined;
  return session ? { kind: "session", csrf: session.csrf } : null;
}

const SAFE = new Set(["GET", "HEAD", "OPTIONS"]);

/** The middleware that applies the check each route's class calls for. */
export function accessControl(ctx: AppContext): MiddlewareHandler {
  const envKeys = new Set(ctx.config.apiKeys.map(sha256));
  return async (c, next) => {
    const { method } = c.req;
    const path = c.req.path;
    const access = accessOf(method, path, ctx.config);
    switch (access) {
      case "public":
        break;
      case "agent_register": {
        const token = bearer(c.req.raw);
        if (!token || !ctx.security.checkAgentToken(token, ctx.config.agentToken)) {
          return unauthorized(
            "ollama",
            "Cannot register agent: the agent token is missing or wrong (set AGENT_TOKEN)",
          );
        }
        break;
      }
      case "agent": {
        const token = bearer(c.req.raw);
        const agentId = token ? ctx.security.agentForSecret(token) : undefined;
        if (!agentId) {
          return unauthorized("ollama", "Agent secret is missing or wrong; register again");
        }
        c.set("agentId" as never, agentId as never);
        break;
      }
      case "admin": {
        const admin = adminOf(ctx, c);
        if (!admin) {
          if (method === "GET" && under(path, "/dashboard")) {
            return c.redirect(
              `/login?next=${
                encodeURIComponent(c.req.url.slice(new URL(c.req.url).origin.length))
              }`,
              302,
            );
          }
          return unauthorized("ollama", "Admin login required");
        }
        // A session changes state only with its CSRF token; SameSite=Strict already keeps
        // other sites' requests from carrying the cookie at all.
        if (admin.kind === "session" && !SAFE.has(method)) {
          const sent = c.req.header("x-csrf-token") ?? "";
          if (!safeEqual(sent, admin.csrf)) return ollamaError(403, "Missing or wrong CSRF token");
        }
        break;
      }
      case "client": {
        if (envKeys.size === 0 && !ctx.security.hasClientKeys()) break;
        const token = bearer(c.req.raw);
        const hash = token === null ? "" : sha256(token);
        const tenant = token === null
          ? undefined
          : envKeys.has(hash)
          ? `env:${hash.slice(0, 12)}`
          : ctx.security.useKey(token)?.id;
        const ok = tenant !== undefined;
        if (ok) c.set("tenant" as never, tenant as never);
        if (!ok) {
          return unauthorized(
            path.startsWith("/v1/") ? "openai" : "ollama",
            "A valid API key is required (Authorization: Bearer <key>)",
          );
        }
        break;
      }
    }
    await next();
  };
}

/** The API key a client request came with (set by {@linkcode accessControl} when keys are on). */
export function clientTenant(c: Context): string | undefined {
  return c.get("tenant" as never) as string | undefined;
}

/** The agent id a heartbeat's secret belongs to (set by {@linkcode accessControl}). */
export function authenticatedAgent(c: Context): string | undefined {
  return c.get("agentId" as never) as string | undefined;
}
