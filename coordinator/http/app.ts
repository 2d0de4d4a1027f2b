/**
 * Every URL of the coordinator, mounted in one place. Find any handler from here in one hop; each
 * route declares who may call it (http/access.ts) right after its path.
 */
import { Hono } from "hono";
import { methodNotAllowed } from "hono/method-not-allowed";
import type { AppContext } from "../context.ts";
import { STORE_UNAVAILABLE, StoreError } from "../store/mod.ts";
import { agentRoutes } from "../api/agents.ts";
import { ollamaRoutes } from "../api/ollama.ts";
import { openaiRoutes } from "../api/openai.ts";
import { anthropicRoutes } from "../api/anthropic.ts";
import { aliasRoutes } from "../api/admin/aliases.ts";
import { liveRoutes } from "../api/admin/live.ts";
import { requestRoutes } from "../api/admin/requests.ts";
import { modelRoutes } from "../api/admin/models.ts";
import { placementRoutes } from "../api/admin/placements.ts";
import { dashboardRoutes, favicon, staticRoutes } from "../dashboard/pages.tsx";
import { authRoutes } from "../api/admin/auth.tsx";
import { keyRoutes } from "../api/admin/keys.ts";
import { access, accessControl, clientAccess } from "./access.ts";
import { errorFor, errorResponse, flavorOfPath } from "./errors.ts";
import { installFastLane } from "./fast_lane.ts";
import type { AppEnv } from "./env.ts";
import { apiCors, pageHeaders } from "./headers.ts";
import { hostCheck, hostPolicy } from "./hosts.ts";
import { loopGuard } from "./loop.ts";
import { MESSAGES } from "./messages.ts";
import { CLIENT_REQUEST_ID_HEADER, clientRequestId, requestId } from "./request_id.ts";

/**
 * Builds the coordinator's HTTP application; `fastLane: false` leaves out the inference fast lane
 * (`fast_lane.ts`), for tests that hold the two paths side by side.
 */
export function createApp(
  ctx: AppContext,
  options: { fastLane?: boolean } = {},
): Hono<AppEnv> {
  const app = new Hono<AppEnv>();
  const deps = ctx;
  const hosts = hostPolicy(ctx.config);

  app.onError((err, c) => failure(err, c.req.raw, c.get("requestId")));

  // Cross-cutting, in order: the request id (ours on every answer; the client's own echoed),
  // loops (before access control: a request that came back here carries no credentials), the host
  // allow-list against DNS rebinding, browser protections, 405 for a known path with another
  // method, then who may call what (declared by each route; a request no route declares ends
  // there with 404).
  app.use(requestId());
  app.use(async (c, next) => {
    const clientId = clientRequestId(c.req.raw);
    await next();
    if (clientId) c.res.headers.set(CLIENT_REQUEST_ID_HEADER, clientId);
  });
  app.use(loopGuard(ctx.instanceId));
  app.use(hostCheck(hosts));
  app.use(pageHeaders());
  app.use(apiCors({ origins: ctx.config.corsOrigins, hosts }));
  app.use(methodNotAllowed({
    app,
    onMethodNotAllowed: (c, methods) => {
      const path = c.req.path.slice(0, 200);
      const message = MESSAGES.methodNotAllowed(c.req.method, path);
      const headers = { allow: [...methods].sort().join(", ") };
      return errorFor(c, 405, message, headers);
    },
  }));
  app.use(accessControl(ctx));

  app.route("/", authRoutes(ctx, { hosts }));
  app.route("/", keyRoutes(ctx));
  app.get(
    "/metrics",
    access.metrics,
    (c) =>
      c.body(ctx.metrics.render(), 200, {
        "content-type": "text/plain; version=0.0.4; charset=utf-8",
      }),
  );
  app.route("/", agentRoutes(ctx));
  app.route("/", ollamaRoutes(ctx, deps));
  app.route("/", openaiRoutes(ctx, deps));
  app.route("/", anthropicRoutes(deps, { aliases: ctx.aliases }));
  // The dashboard: its pages, their static files, and the management APIs behind them.
  app.route("/dashboard", dashboardRoutes(deps));
  app.route("/static", staticRoutes());
  app.get("/favicon.ico", access.public, favicon);
  app.route("/", liveRoutes(ctx));
  app.route("/", requestRoutes(deps));
  app.route("/", modelRoutes(ctx));
  app.route("/", aliasRoutes(ctx));
  app.route("/", placementRoutes(ctx));

  // Ollama (gin) answers an unknown path in plain text, not JSON. Under /v1 the path is unknown in
  // the API's own shape (OpenAI's, Anthropic's for /v1/messages…: Ollama serves no
  // `/v1/messages/count_tokens`, and Anthropic clients read this 404 as "not found").
  app.notFound((c) =>
    c.req.path.startsWith("/v1/")
      ? errorFor(c, 404, MESSAGES.unknownV1Path(c.req.path.slice(0, 200)))
      : new Response(MESSAGES.pathNotFound, {
        status: 404,
        headers: { "content-type": "text/plain" },
      })
  );
  // Last, once every route is mounted: plain API clients' inference skips the chain above.
  if (options.fastLane !== false) {
    installFastLane(app, { hosts, tenantOf: clientAccess(ctx), onError: failure });
  }
  return app;
}

/** The answer to a handler that threw. */
function failure(err: unknown, req: Request, requestId?: string): Response {
  const path = new URL(req.url).pathname;
  const flavor = flavorOfPath(path);
  // A change the database could not take: nothing changed, the client may try again.
  if (err instanceof StoreError && err.unavailable) {
    console.error(`${req.method} ${path}: ${err.message}`);
    const headers = { "retry-after": "5" };
    return errorResponse(flavor, 503, STORE_UNAVAILABLE, requestId, headers);
  }
  console.error(`Unhandled error on ${req.method} ${path}:`, err);
  return errorResponse(flavor, 500, MESSAGES.internal, requestId);
}
