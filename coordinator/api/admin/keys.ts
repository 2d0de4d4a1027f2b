/**
 * Client and admin API keys: create (with limits), list, change limits, revoke, and usage per
 * key over time from the request log. Admin only, like every management API.
 */
import { Hono } from "hono";
import { z } from "zod";
import { ollamaError } from "@oc/shared";
import type { AppContext } from "../../context.ts";
import { access } from "../../http/access.ts";
import type { AppEnv } from "../../http/env.ts";
import { json, readJson } from "../../http/json.ts";
import { LimitsInput, mergeLimits } from "../../quotas/limits.ts";
import type { KeyRow, KeyUsage, UsageRange } from "../../dashboard/wire.ts";

export type { KeyRow, KeyUsage, UsageRange };

const KeyRequest = z.object({
  name: z.string().trim().min(1).max(64),
  scope: z.enum(["client", "admin"]).default("client"),
  limits: LimitsInput.optional(),
}).strict();

const KeyPatch = z.object({
  name: z.string().trim().min(1).max(64).optional(),
  limits: LimitsInput.optional(),
}).strict();

/** The ranges usage is shown over, and the width of one bucket in each. */
export const USAGE_RANGES: Record<UsageRange, { ms: number; bucketMs: number }> = {
  "1h": { ms: 3_600_000, bucketMs: 60_000 },
  "24h": { ms: 86_400_000, bucketMs: 1_800_000 },
  "7d": { ms: 7 * 86_400_000, bucketMs: 6 * 3_600_000 },
};

/** Every key, newest first, with its requests in flight here. */
export async function keyRows(ctx: AppContext): Promise<KeyRow[]> {
  return (await ctx.security.listKeys()).map((k) => ({
    ...k,
    in_flight: ctx.quotas.inFlight(k.id),
  }));
}

/** Requests, tokens and 429s per key and bucket over `range`, read from the request log. */
export async function keyUsage(ctx: AppContext, range: UsageRange): Promise<KeyUsage> {
  const { ms, bucketMs } = USAGE_RANGES[range];
  const since = Math.floor(ctx.now() / bucketMs) * bucketMs - (ms - bucketMs);
  await ctx.log.flush();
  const rows = await ctx.store.keyUsage({ since: new Date(since).toISOString(), bucketMs });
  return { range, bucket_ms: bucketMs, buckets: Math.round(ms / bucketMs), since, rows };
}

/** The key routes. */
export function keyRoutes(ctx: AppContext): Hono<AppEnv> {
  const app = new Hono<AppEnv>();

  app.get("/api/keys", access.admin, async () => json(await keyRows(ctx)));

  app.get("/api/keys/usage", access.admin, async (c) => {
    const range = c.req.query("range") ?? "1h";
    if (!(range in USAGE_RANGES)) {
      return ollamaError(400, `Invalid range "${range.slice(0, 20)}": expected 1h, 24h or 7d`);
    }
    return json(await keyUsage(ctx, range as UsageRange));
  });

  app.post("/api/keys", access.admin, async (c) => {
    const body = await readJson(c.req.raw, KeyRequest);
    if (!body.ok) return body.response;
    const { name, scope, limits } = body.data;
    const { key, view } = await ctx.security.createKey(name, scope, {
      limits: mergeLimits(undefined, limits),
    });
    ctx.registry.recordEvent("key_created", null, `API key "${view.name}" (${view.scope}) created`);
    return json({ ...view, key }, 201);
  });

  app.patch("/api/keys/:id", access.admin, async (c) => {
    const id = c.req.param("id");
    const body = await readJson(c.req.raw, KeyPatch);
    if (!body.ok) return body.response;
    const current = ctx.security.keyById(id);
    if (!current) return ollamaError(404, `API key "${id.slice(0, 64)}" not found`);
    const { name, limits } = body.data;
    const view = await ctx.security.updateKey(id, {
      name,
      limits: limits === undefined ? undefined : mergeLimits(current.limits, limits),
    });
    if (!view) return ollamaError(404, `API key "${id.slice(0, 64)}" not found`);
    ctx.registry.recordEvent("key_changed", null, `API key "${view.name}" changed`);
    return json({ ...view, in_flight: ctx.quotas.inFlight(id) });
  });

  app.delete("/api/keys/:id", access.admin, async (c) => {
    const id = c.req.param("id");
    if (!await ctx.security.revokeKey(id)) return ollamaError(404, `API key "${id}" not found`);
    ctx.registry.recordEvent("key_revoked", null, `API key ${id} revoked`);
    return c.body(null, 204);
  });
  return app;
}
