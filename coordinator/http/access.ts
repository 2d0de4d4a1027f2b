/**
 * Access control, declared with each route and applied in one place, denying by default.
 *
 * Every route names who may call it right after its path: `app.get("/api/tags", access.client,
 * handler)`. The declaration is a marker the router matches together with the handler;
 * {@linkcode accessControl} runs before any handler, finds the marker of the route the request
 * reaches and applies that class's check. A request that reaches no declared route is answered 404
 * before any handler runs, so a route someone forgets to declare is closed, not open, and
 * `access_test.ts` walks every registered route to catch it. The classes:
 * - public: anyone (`/`, `/login`, static files);
 * - agent_register: the agent token (rate limited like passwords);
 * - agent: that agent's own secret (heartbeats, progress);
 * - admin: an admin session (plus its CSRF token on changes) or an admin API key;
 * - client: a client API key once keys are enabled;
 * - model_management: client, unless `CLIENT_MODEL_MANAGEMENT=false`, then admin;
 * - metrics: admin, unless `METRICS_PUBLIC=true`, then public.
 */
import { timingSafeEqual } from "node:crypto";
import type { Context, Hono, MiddlewareHandler } from "hono";
import { getCookie } from "hono/cookie";
import { matchedRoutes } from "hono/route";
import { ollamaError } from "@oc/shared";
import type { AppContext } from "../context.ts";
import { sha256 } from "../security/crypto.ts";
import { FailureLimit } from "../security/failure_limit.ts";
import { clientAddress, type Network } from "../security/networks.ts";
import type { AppEnv } from "./env.ts";
import { errorResponse, type Flavor, flavorOfPath } from "./errors.ts";
import { MESSAGES } from "./messages.ts";

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

/**
 * The API key a client request carries: `Authorization: Bearer <key>`, or else `x-api-key: <key>`
 * (what Anthropic's clients send). The bearer wins when both are there.
 */
export function clientKey(req: Request): string | null {
  const token = bearer(req);
  if (token !== null) return token;
  const key = req.headers.get("x-api-key")?.trim();
  return key ? key : null;
}

/** Who may call a route. */
export type Access =
  | "public"
  | "agent_register"
  | "agent"
  | "admin"
  | "client"
  | "model_management"
  | "metrics";

const declared = new Map<unknown, Access>();

function marker(access: Access): MiddlewareHandler<AppEnv> {
  // A named function per class, so a route listing shows which class a route declared.
  const fn = { [access]: (_c: Context, next: () => Promise<void>) => next() }[access];
  declared.set(fn, access);
  return fn;
}

/** The access class declarations, one to put right after each route's path. */
export const access: {
  readonly public: MiddlewareHandler<AppEnv>;
  readonly agentRegister: MiddlewareHandler<AppEnv>;
  readonly agent: MiddlewareHandler<AppEnv>;
  readonly admin: MiddlewareHandler<AppEnv>;
  readonly client: MiddlewareHandler<AppEnv>;
  readonly modelManagement: MiddlewareHandler<AppEnv>;
  readonly metrics: MiddlewareHandler<AppEnv>;
} = {
  public: marker("public"),
  agentRegister: marker("agent_register"),
  agent: marker("agent"),
  admin: marker("admin"),
  client: marker("client"),
  modelManagement: marker("model_management"),
  metrics: marker("metrics"),
};

/** The access class a route handler declares, if it is a declaration. */
export function declaredAccess(handler: unknown): Access | undefined {
  return declared.get(handler);
}

/**
 * Routes of `app` (as `METHOD path`) whose handlers are not preceded by an access declaration
 * for the same method and path. App-wide middleware (`ALL /*`) needs none.
 */
export function undeclaredRoutes(app: Hono<AppEnv>): string[] {
  const seen = new Set<string>();
  const missing: string[] = [];
  for (const r of app.routes) {
    const key = `${r.method} ${r.path}`;
    if (r.method === "ALL" && r.path === "/*") continue;
    if (declaredAccess(r.handler)) seen.add(key);
    else if (!seen.has(key) && !missing.includes(key)) missing.push(key);
  }
  return missing;
}

/** The name of the admin session cookie. */
export const SESSION_COOKIE = "oc_session";

function unauthorized(flavor: Flavor, message: string, requestId?: string): Response {
  return errorResponse(flavor, 401, message, requestId, { "www-authenticate": "Bearer" });
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

/** The calling client's address: the peer, or the client a trusted proxy forwards for. */
export function clientAddressOf(c: Context<AppEnv>, trusted: Network[]): string {
  const peer = c.env?.remoteAddr?.hostname;
  if (!peer) return "unknown";
  return clientAddress(peer, c.req.header("x-forwarded-for") ?? null, trusted);
}

/**
 * Wrong agent tokens per client (IPv6 per /64) and in all: a misconfigured agent retrying every
 * 30 s stays under the first, a guesser meets both. Registered agents are not affected: their
 * heartbeats carry their own secret.
 */
const AGENT_TOKEN_LIMITS = {
  perClient: 10,
  clientWindowMs: 60_000,
  global: 60,
  globalWindowMs: 60_000,
};

const SAFE = new Set(["GET", "HEAD", "OPTIONS"]);

function under(path: string, prefix: string): boolean {
  return path === prefix || path.startsWith(prefix + "/");
}

/**
 * The check of the `client` class: the id of the client key a request carries (`env:…` for a key
 * from API_KEYS), undefined while no key exists (the API is open), null when the key is missing
 * or wrong. A key's use is noted as it is checked.
 */
export function clientAccess(ctx: AppContext): (req: Request) => string | undefined | null {
  const envKeys = new Set(ctx.config.apiKeys.map(sha256));
  return (req) => {
    if (envKeys.size === 0 && !ctx.security.hasClientKeys()) return undefined;
    const token = clientKey(req);
    if (token === null) return null;
    const hash = sha256(token);
    if (envKeys.has(hash)) return `env:${hash.slice(0, 12)}`;
    return ctx.security.useKey(token)?.id ?? null;
  };
}

/**
 * The middleware that applies the check the reached route declares, and answers 404 for a
 * request that reaches no declared route. Mount it last among the app-wide middleware.
 */
export function accessControl(ctx: AppContext): MiddlewareHandler<AppEnv> {
  const tenantOf = clientAccess(ctx);
  const tokenFailures = new FailureLimit({ ...AGENT_TOKEN_LIMITS, now: ctx.now });
  const resolve = (declared: Access): Access => {
    if (declared === "model_management") {
      return ctx.config.clientModelManagement ? "client" : "admin";
    }
    if (declared === "metrics") return ctx.config.metricsPublic ? "public" : "admin";
    return declared;
  };
  return async (c, next) => {
    let declaredClass: Access | undefined;
    for (const r of matchedRoutes(c)) {
      declaredClass = declaredAccess(r.handler);
      if (declaredClass) break;
    }
    if (!declaredClass) return c.notFound();
    const { method } = c.req;
    const path = c.req.path;
    switch (resolve(declaredClass)) {
      case "public":
        break;
      case "agent_register": {
        const admission = tokenFailures.begin(clientAddressOf(c, ctx.config.trustedProxies));
        if (!admission.ok) {
          return ollamaError(
            429,
            `Cannot register agent: too many wrong agent tokens; try again in ${admission.retryAfter} s`,
            { "retry-after": String(admission.retryAfter) },
          );
        }
        const token = bearer(c.req.raw);
        if (!token || !ctx.security.checkAgentToken(token, ctx.config.agentToken)) {
          admission.attempt.fail();
          return unauthorized(
            "ollama",
            "Cannot register agent: the agent token is missing or wrong (set AGENT_TOKEN)",
          );
        }
        admission.attempt.pass();
        break;
      }
      case "agent": {
        const token = bearer(c.req.raw);
        const agentId = token ? ctx.security.agentForSecret(token) : undefined;
        if (!agentId) {
          return unauthorized("ollama", "Agent secret is missing or wrong; register again");
        }
        c.set("agentId", agentId);
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
        const tenant = tenantOf(c.req.raw);
        if (tenant === null) {
          return unauthorized(flavorOfPath(path), MESSAGES.apiKeyRequired, c.get("requestId"));
        }
        if (tenant !== undefined) c.set("tenant", tenant);
        break;
      }
    }
    await next();
  };
}
