/**
 * Anthropic's Messages API as Ollama (0.14+) serves it: `POST /v1/messages`, routed by model like
 * the OpenAI routes, its named SSE events passed through as they come, errors in Anthropic's shape
 * (`{"type":"error","error":{"type","message"}}`). Ollama serves no `/v1/messages/count_tokens`;
 * the coordinator answers it as Ollama does, 404 (see http/app.ts).
 */
import { Hono } from "hono";
import type { ProxyDeps } from "../proxy/mod.ts";
import { access } from "../http/access.ts";
import type { ModelAliases } from "../aliases/mod.ts";
import { inferenceHandler } from "./ollama.ts";

/** The Anthropic inference routes (routed by model, in the request log), and whether they stream. */
export const ANTHROPIC_INFERENCE: Record<string, boolean> = {
  "/v1/messages": true,
};

/** The Anthropic routes. */
export function anthropicRoutes(deps: ProxyDeps, options: { aliases?: ModelAliases } = {}): Hono {
  const app = new Hono();
  for (const [route, streams] of Object.entries(ANTHROPIC_INFERENCE)) {
    app.post(
      route,
      access.client,
      inferenceHandler(deps, { flavor: "anthropic", route, streams, aliases: options.aliases }),
    );
  }
  return app;
}
