/**
 * Model aliases for admins: `GET /api/admin/aliases` lists them, `PUT` adds or changes one
 * (`{"alias":"gpt-4o-mini","model":"llama3.2:3b","listed":false}`), `DELETE` (`{"alias"}`) removes
 * one. Each change is stored first (shared by coordinators on one store) and recorded as an event.
 */
import { Hono } from "hono";
import { z } from "zod";
import { ollamaError } from "@oc/shared";
import type { AppContext } from "../../context.ts";
import { access } from "../../http/access.ts";
import { json, readJson } from "../../http/json.ts";
import { AliasError } from "../../aliases/mod.ts";

const name = z.string().trim().min(1).max(253).regex(
  /^[\w][\w.\-:/@+]*$/,
  "expected a model name such as gpt-4o-mini or llama3.2:3b",
);

/** `PUT /api/admin/aliases`: the name clients use, the model that serves it, whether it is listed. */
export const AliasRequest = z.object({
  alias: name,
  model: name,
  listed: z.boolean().optional(),
}).strict();

/** The alias routes (admin only). */
export function aliasRoutes(ctx: AppContext): Hono {
  const app = new Hono();
  const { aliases, registry } = ctx;

  app.get("/api/admin/aliases", access.admin, () => json(aliases.list()));
  app.put("/api/admin/aliases", access.admin, async (c) => {
    const body = await readJson(c.req.raw, AliasRequest);
    if (!body.ok) return body.response;
    const { alias, model, listed } = body.data;
    try {
      await aliases.set(alias, model, { listed });
    } catch (e) {
      if (e instanceof AliasError) return ollamaError(400, e.message);
      throw e;
    }
    registry.recordEvent(
      "alias",
      null,
      `Alias "${alias}" now served by model "${model}"${listed ? " (listed)" : ""}`,
    );
    return json(aliases.list());
  });
  app.delete("/api/admin/aliases", access.admin, async (c) => {
    const body = await readJson(c.req.raw, AliasRequest.pick({ alias: true }));
    if (!body.ok) return body.response;
    const { alias } = body.data;
    if (!await aliases.remove(alias)) return ollamaError(404, `Alias "${alias}" does not exist`);
    registry.recordEvent("alias", null, `Alias "${alias}" removed`);
    return json(aliases.list());
  });
  return app;
}
