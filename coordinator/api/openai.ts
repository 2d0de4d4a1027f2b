/**
 * The OpenAI-compatible API Ollama serves under /v1: inference routed by model, and the model
 * list as the union over online agents. Errors use OpenAI's shape.
 */
import { Hono } from "hono";
import { openaiError } from "@oc/shared";
import type { AppContext } from "../context.ts";
import type { ProxyDeps } from "../proxy/mod.ts";
import { MESSAGES } from "../http/messages.ts";
import { access } from "../http/access.ts";
import { fleetModels, inferenceHandler } from "./ollama.ts";
import { withListedAliases } from "../aliases/mod.ts";

/** `{id, object, created, owned_by}` as Ollama's /v1/models shows a model. */
function modelEntry(m: { name: string; modified_at?: string }) {
  const created = m.modified_at ? Math.floor(Date.parse(m.modified_at) / 1000) : 0;
  const parts = m.name.split("/");
  return {
    id: m.name,
    object: "model",
    created: Number.isFinite(created) ? created : 0,
    owned_by: parts.length > 1 ? parts[parts.length - 2] : "library",
  };
}

/** The /v1 inference routes (routed by model, in the request log), and whether they stream. */
export const OPENAI_INFERENCE: Record<string, boolean> = {
  "/v1/chat/completions": true,
  "/v1/completions": true,
  "/v1/embeddings": false,
  "/v1/responses": true,
};

/** The /v1 routes. */
export function openaiRoutes(ctx: AppContext, deps: ProxyDeps): Hono {
  const app = new Hono();
  const infer = (route: string, streams: boolean) =>
    inferenceHandler(deps, { flavor: "openai", route, streams, aliases: ctx.aliases });

  for (const [route, streams] of Object.entries(OPENAI_INFERENCE)) {
    app.post(route, access.client, infer(route, streams));
  }
  app.get("/v1/models", access.client, (c) => {
    const seen = new Set<string>();
    const data = [];
    for (const m of withListedAliases(fleetModels(ctx), ctx.aliases)) {
      if (seen.has(m.name)) continue;
      seen.add(m.name);
      data.push(modelEntry(m));
    }
    return c.json({ object: "list", data });
  });
  app.get("/v1/models/:model{.+}", access.client, (c) => {
    const name = c.req.param("model");
    // An alias (listed or not) answers as its model would, under the alias's name.
    const wanted = ctx.aliases.resolve(name)?.model ?? name;
    const m = fleetModels(ctx).find((x) => x.name === wanted) ??
      fleetModels(ctx).find((x) => x.name === `${wanted}:latest`);
    if (!m) return openaiError(404, MESSAGES.modelNotInstalled(name));
    return c.json({ ...modelEntry(m), id: name });
  });
  return app;
}
