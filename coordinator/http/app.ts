/**
 * Every URL of the coordinator, mounted in one place. Find any handler from here in one hop.
 */
import { Hono } from "hono";
import { ollamaError, openaiError } from "@oc/shared";
import type { AppContext } from "../context.ts";
import { STORE_UNAVAILABLE, StoreError } from "../store/mod.ts";
import { agentRoutes } from "../api/agents.ts";
import { OLLAMA_PATHS, ollamaRoutes } from "../api/ollama.ts";
import { OPENAI_PATHS, openaiRoutes } from "../api/openai.ts";
import { liveRoutes } from "../api/admin/live.ts";
import { requestRoutes } from "../api/admin/requests.ts";
import { modelRoutes } from "../api/admin/models.ts";
import { dashboardRoutes, favicon, staticRoutes } from "../dashboard/pages.tsx";
import { authRoutes } from "../api/admin/auth.tsx";
import { accessControl } from "./access.ts";
import { apiCors, pageHeaders } from "./headers.ts";
import { loopGuard } from "./loop.ts";
import { MESSAGES } from "./messages.ts";
import { CLIENT_REQUEST_ID_HEADER, clientRequestId, newRequestId } from "./request_id.ts";

/** Builds the coordinator's HTTP application. */
export function createApp(ctx: AppContext): Hono {
  const app = new Hono();
  const deps = ctx;

  app.onError((err, c) => {
    // A change the database could not take: nothing changed, the client may try again.
    if (err instanceof StoreError && err.unavailable) {
      console.error(`${c.req.method} ${c.req.path}: ${err.message}`);
      const headers = { "retry-after": "5" };
      return c.req.path.startsWith("/v1/")
        ? openaiError(503, STORE_UNAVAILABLE, headers)
        : ollamaError(503, STORE_UNAVAILABLE, headers);
    }
    console.error(`Unhandled error on ${c.req.method} ${c.req.path}:`, err);
    return c.req.path.startsWith("/v1/")
      ? openaiError(500, MESSAGES.internal)
      : ollamaError(500, MESSAGES.internal);
  });

  // Cross-cutting, in order: request ids, loops, browser protections, then who may call what.
  // Every answer carries a request id of ours (the proxy sets it on proxied ones, and logs under
  // it) and echoes the client's own, if it sent one.
  app.use(async (c, next) => {
    const clientId = clientRequestId(c.req.raw);
    await next();
    if (!c.res.headers.has("x-request-id")) c.res.headers.set("x-request-id", newRequestId());
    if (clientId) c.res.headers.set(CLIENT_REQUEST_ID_HEADER, clientId);
  });
  // Before access control: a request that came back to this coordinator carries no credentials.
  app.use(loopGuard(ctx.instanceId));
  app.use(pageHeaders());
  app.use(apiCors(ctx.config.corsOrigins));
  app.use(accessControl(ctx));

  app.route("/", authRoutes(ctx));
  app.get(
    "/metrics",
    (c) =>
      c.body(ctx.metrics.render(), 200, {
        "content-type": "text/plain; version=0.0.4; charset=utf-8",
      }),
  );
  app.route("/", agentRoutes(ctx));
  app.route("/", ollamaRoutes(ctx, deps));
  app.route("/", openaiRoutes(ctx, deps));
  // The dashboard: its pages, their static files, and the management APIs behind them.
  app.route("/dashboard", dashboardRoutes(deps));
  app.route("/static", staticRoutes());
  app.get("/favicon.ico", favicon);
  app.route("/", liveRoutes(ctx));
  app.route("/", requestRoutes(deps));
  app.route("/", modelRoutes(ctx));

  // A known path with the wrong method is 405, as Ollama answers.
  for (const [path, methods] of Object.entries({ ...OLLAMA_PATHS, ...OPENAI_PATHS })) {
    app.all(path, (c) => {
      const allow = methods.join(", ");
      const message = MESSAGES.methodNotAllowed(c.req.method, path);
      return path.startsWith("/v1/")
        ? openaiError(405, message, { allow })
        : ollamaError(405, message, { allow });
    });
  }

  app.notFound((c) =>
    c.req.path.startsWith("/v1/")
      ? openaiError(404, MESSAGES.unknownV1Path(c.req.path))
      : ollamaError(404, MESSAGES.pathNotFound)
  );
  return app;
}
