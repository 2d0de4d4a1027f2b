/**
 * Placement rules (admins): `GET /api/admin/placements` lists them, `PUT` adds or replaces one
 * model's rule, `DELETE {"model"}` removes it (nothing is deleted from agents: the models stay
 * where they are), and `GET /api/admin/placements/status` shows each model's state on each agent
 * and the drift.
 */
import { Hono } from "hono";
import { displayModelName, ollamaError } from "@oc/shared";
import type { AppContext } from "../../context.ts";
import { access } from "../../http/access.ts";
import { json, readJson } from "../../http/json.ts";
import { MESSAGES } from "../../http/messages.ts";
import { PlacementDelete, PlacementError, PlacementRule } from "../../placement/rules.ts";
import { describeRule } from "../../dashboard/lib/placement.ts";

/** The placement routes (a management API, for admins). */
export function placementRoutes(ctx: AppContext): Hono {
  const app = new Hono();
  const { placement, registry } = ctx;

  app.get("/api/admin/placements", access.admin, () => json(placement.rules.list()));

  app.get("/api/admin/placements/status", access.admin, () => json(placement.status()));

  app.put("/api/admin/placements", access.admin, async (c) => {
    const body = await readJson(c.req.raw, PlacementRule);
    if (!body.ok) return body.response;
    try {
      await placement.rules.set(body.data);
    } catch (e) {
      if (e instanceof PlacementError) return ollamaError(400, e.message);
      throw e;
    }
    registry.recordEvent(
      "placement",
      null,
      `Placement of "${displayModelName(body.data.model)}" set: ${describeRule(body.data)}`,
    );
    placement.nudge();
    return json(placement.rules.list());
  });

  app.delete("/api/admin/placements", access.admin, async (c) => {
    const body = await readJson(c.req.raw, PlacementDelete);
    if (!body.ok) return body.response;
    if (!await placement.rules.remove(body.data.model)) {
      return ollamaError(404, MESSAGES.noPlacementRule(body.data.model));
    }
    const model = displayModelName(body.data.model);
    registry.recordEvent("placement", null, `Placement of "${model}" removed`);
    return json(placement.rules.list());
  });

  return app;
}
