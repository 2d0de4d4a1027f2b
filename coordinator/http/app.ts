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
import { access, accessControl } from "./access.ts";
import { errorFor } from "./errors.ts";
import type { AppEnv } from "./env.ts";
import { apiCors, pageHeaders } from "./headers.ts";
import { hostCheck, hostPolicy } from "./hosts.ts";
import { loopGuard } from "./loop.ts";
import { MESSAGES } from "./messages.ts";
import { CLIENT_REQUEST_ID_HEADER, clientRequestId, requestId } from "./request_id.ts";

/** Builds the coordinator's HTTP application. */
export function createApp(ctx: AppContext): Hono<AppEnv> {
  const app = new Hono<AppEnv>();
  const deps = ctx;
  const hosts = hostPolicy(ctx.config);

  app.onError((err, c) => {
    // A change the database could not take: nothing changed, the client may try again.
    if (err instanceof StoreError && err.unavailable) {
      console.error(`${c.req.method} ${c.req.path}: ${err.message}`);
      const headers = { "retry-after": "5" };
      return errorFor(c, 503, STORE_UNAVAILABLE, headers);
    }
    console.error(`Unhandled error on ${c.req.method} ${c.req.path}:`, err);
    return errorFor(c, 500, MESSAGES.internal);
  });

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
  return app;
}
