/**
 * The fast lane for inference. Most requests a coordinator serves are inference calls from API
 * clients: a POST to an inference route with no `Origin` (not a browser page), no loop header, an
 * allowed `Host` and, once keys are on, a valid key. Such a request passes every app-wide check
 * of `app.ts` with nothing to add but its request id, so it goes straight to its route's handler,
 * past Hono's middleware chain and router: 10–20% of the coordinator's CPU per proxied request
 * (see specs/proxy). Everything else takes the full path, refusals included (403, 401,
 * 405, 508, CORS), so each check keeps one implementation and one answer.
 *
 * The lane learns its routes from the app itself: a POST route whose handler was made by
 * {@linkcode laneHandler} and whose declared access class is `client`. Nothing else can join it.
 */
import type { Context, Hono } from "hono";
import { declaredAccess } from "./access.ts";
import type { AppEnv } from "./env.ts";
import { hostAllowed, type HostPolicy } from "./hosts.ts";
import { HOP_HEADER } from "./loop.ts";
import { CLIENT_REQUEST_ID_HEADER, clientRequestId, newRequestId } from "./request_id.ts";

/** What a lane handler learns from the app-wide checks. */
export interface LaneVars {
  /** The request's id (see request_id.ts). */
  requestId: string;
  /** The client API key the request came with, once keys are on. */
  tenant?: string;
}

/** A route handler that needs nothing from Hono: the request and what the checks found. */
export type LaneCall = (req: Request, vars: LaneVars) => Promise<Response>;

const calls = new WeakMap<object, LaneCall>();

/** The Hono handler for `call`, marked so that {@linkcode installFastLane} may take its route. */
export function laneHandler(call: LaneCall): (c: Context<AppEnv>) => Promise<Response> {
  const handler = (c: Context<AppEnv>) =>
    call(c.req.raw, { requestId: c.get("requestId"), tenant: c.get("tenant") });
  calls.set(handler, call);
  return handler;
}

/** What the lane needs from the app's checks. */
export interface LaneOptions {
  /** The host allow-list (`hosts.ts`). */
  hosts: HostPolicy;
  /**
   * The client key check (`access.ts`): the key's id, undefined when keys are off, null when the
   * request is refused (it then takes the full path, which answers 401).
   */
  tenantOf: (req: Request) => string | undefined | null;
  /** The answer to a handler that threw, as the app's `onError` gives it. */
  onError: (err: unknown, req: Request, requestId: string) => Response;
}

/**
 * Routes `app.fetch` through the lane: a request the lane can take goes to its handler, any other
 * to the app as before. Call it once every route is mounted.
 */
export function installFastLane(app: Hono<AppEnv>, options: LaneOptions): void {
  const lane = laneRoutes(app);
  if (lane.size === 0) return;
  const full = app.fetch;
  const { hosts, tenantOf } = options;
  app.fetch = (req, env, executionCtx) => {
    const call = req.method === "POST" ? lane.get(pathOf(req.url)) : undefined;
    if (call === undefined) return full(req, env, executionCtx);
    const h = req.headers;
    if (h.has("origin") || h.has(HOP_HEADER) || !hostAllowed(h.get("host") ?? undefined, hosts)) {
      return full(req, env, executionCtx);
    }
    const tenant = tenantOf(req);
    if (tenant === null) return full(req, env, executionCtx);
    return answer(call, req, tenant, options);
  };
}

async function answer(
  call: LaneCall,
  req: Request,
  tenant: string | undefined,
  options: LaneOptions,
): Promise<Response> {
  const requestId = newRequestId();
  let res: Response;
  try {
    res = await call(req, { requestId, tenant });
  } catch (err) {
    res = options.onError(err, req, requestId);
  }
  // What request_id.ts's middleware adds on the full path.
  if (!res.headers.has("x-request-id")) res.headers.set("x-request-id", requestId);
  const clientId = clientRequestId(req);
  if (clientId) res.headers.set(CLIENT_REQUEST_ID_HEADER, clientId);
  return res;
}

/** POST path → call, for the lane handlers of routes declared `client`. */
export function laneRoutes(app: Hono<AppEnv>): Map<string, LaneCall> {
  const lane = new Map<string, LaneCall>();
  const access = new Map<string, string>();
  for (const r of app.routes) {
    const key = `${r.method} ${r.path}`;
    const declared = declaredAccess(r.handler);
    if (declared) access.set(key, declared);
    const call = calls.get(r.handler);
    // Only literal paths: a pattern (`:param`, `*`) would need the router.
    if (!call || r.method !== "POST" || /[:*{]/.test(r.path)) continue;
    if (access.get(key) === "client") lane.set(r.path, call);
  }
  return lane;
}

/** Where a request URL's path begins: the first `/` after the scheme's `//`, or -1. */
function pathStart(url: string): number {
  return url.indexOf("/", url.indexOf("://") + 3);
}

/**
 * The path of a request URL as the router would match it; a path the router would decode
 * (`%`) or one with a fragment is returned as `""`, which no lane route has.
 */
export function pathOf(url: string): string {
  const start = pathStart(url);
  if (start === -1) return "/";
  let end = url.indexOf("?", start);
  if (end === -1) end = url.length;
  const path = url.slice(start, end);
  return path.includes("%") || path.includes("#") ? "" : path;
}

/** The path and query of a request URL as sent (what goes upstream), without parsing it. */
export function pathAndQuery(url: string): string {
  const start = pathStart(url);
  return start === -1 ? "/" : url.slice(start);
}
