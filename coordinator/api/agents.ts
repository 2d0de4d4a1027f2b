/**
 * The agent registry API: registration, heartbeats, command progress (agents) and the agents'
 * listing and management (admins).
 */
import { Hono } from "hono";
import {
  AgentPatch,
  CommandProgress,
  HealthRequest,
  ollamaError,
  RegisterRequest,
} from "@oc/shared";
import type { AppContext } from "../context.ts";
import { json, readJson } from "../http/json.ts";
import { addressProblem, mayBeThisMachine, ollamaBaseUrl } from "../fleet/address.ts";
import { isSelf } from "../http/loop.ts";
import { access } from "../http/access.ts";
import { inNetworks } from "../security/networks.ts";
import { z } from "zod";

/**
 * The heartbeat's schema compiled by zod into one generated function (the same schema, checked
 * about ten times faster; anything it does not accept goes through zod's ordinary parser, so the
 * error messages are the same): a thousand agents beating every 5 s send two hundred a second.
 */
export const HealthBody: typeof HealthRequest = z.compile(HealthRequest);

/** The reply to a heartbeat with no commands (nearly all of them), serialised once. */
const HEARTBEAT_OK = JSON.stringify({ ok: true });
const JSON_HEADERS = { "content-type": "application/json; charset=utf-8" };

const Pin = z.object({
  model: z.string().trim().min(1).max(256),
  label: z.string().trim().min(1).max(64).regex(/^[\w.:\/=-]+$/),
}).strict();

/** Routes under /api for agents and their management. */
export function agentRoutes(ctx: AppContext): Hono {
  const app = new Hono();
  const { registry } = ctx;

  app.post("/api/agents", access.agentRegister, async (c) => {
    const body = await readJson(c.req.raw, RegisterRequest);
    if (!body.ok) return body.response;
    const problem = addressProblem(body.data.ip_address);
    if (problem) {
      return ollamaError(
        400,
        `Cannot register agent "${body.data.machine_name}": ip_address ${problem}`,
      );
    }
    const networks = ctx.config.allowedNetworks;
    if (networks.length && !inNetworks(body.data.ip_address, networks)) {
      return ollamaError(
        403,
        `Cannot register agent "${body.data.machine_name}": ip_address is outside AGENT_ALLOWED_NETWORKS`,
      );
    }
    // An agent whose address leads back here would make every request it is given loop.
    const { ip_address: ip, ollama_port: port } = body.data;
    const timeoutMs = ctx.config.probeTimeout * 1000;
    if (
      mayBeThisMachine(ip) && await isSelf(ollamaBaseUrl(ip, port), ctx.instanceId, { timeoutMs })
    ) {
      return ollamaError(
        400,
        `Cannot register agent "${body.data.machine_name}": ${ip}:${port} is this coordinator itself, not an Ollama server`,
      );
    }
    // Each registration gets a fresh secret: one agent can never heartbeat for another. It is
    // stored with the registration; the old one stops working once the new one is stored.
    const secret = ctx.security.newAgentSecret();
    const { agent, created } = await registry.register(body.data, { secretHash: secret.hash });
    ctx.security.rememberAgentSecret(agent.id, secret.hash);
    ctx.scheduler.pump(); // requests waiting for this agent's models may go now
    return json(
      {
        agent_id: agent.id,
        status: created ? "registered" : "updated",
        agent_secret: secret.secret,
        heartbeat_interval: ctx.config.heartbeatInterval,
      },
      created ? 201 : 200,
    );
  });

  app.post("/api/health", access.agent, async (c) => {
    const body = await readJson(c.req.raw, HealthBody);
    if (!body.ok) return body.response;
    if (body.data.agent_id !== c.get("agentId")) {
      return ollamaError(403, "The agent secret belongs to another agent");
    }
    const agent = registry.heartbeat(body.data);
    if (!agent) {
      return ollamaError(404, `Agent "${body.data.agent_id}" is not registered`);
    }
    if (agent.status === "online") ctx.scheduler.pump();
    const commands = ctx.commands.take(agent.id);
    if (commands.length) return json({ ok: true, commands });
    return new Response(HEARTBEAT_OK, { headers: JSON_HEADERS });
  });

  app.post("/api/agents/:id/progress", access.agent, async (c) => {
    const id = c.req.param("id");
    const body = await readJson(c.req.raw, CommandProgress);
    if (!body.ok) return body.response;
    if (id !== c.get("agentId")) {
      return ollamaError(403, "The agent secret belongs to another agent");
    }
    if (!registry.get(id)) return ollamaError(404, `Agent "${id}" is not registered`);
    ctx.commands.progress(id, body.data);
    return json({ ok: true });
  });

  app.get("/api/agents", access.admin, (c) => {
    const status = c.req.query("status");
    const agents = registry.all().filter((a) => !status || a.status === status);
    return json(agents.map((a) => registry.view(a)));
  });

  app.get("/api/agents/:id", access.admin, (c) => {
    const agent = registry.get(c.req.param("id"));
    if (!agent) return ollamaError(404, `Agent "${c.req.param("id")}" not found`);
    return json(registry.view(agent));
  });

  app.patch("/api/agents/:id", access.admin, async (c) => {
    const id = c.req.param("id");
    const body = await readJson(c.req.raw, AgentPatch);
    if (!body.ok) return body.response;
    const agent = await registry.patch(id, body.data);
    if (!agent) return ollamaError(404, `Agent "${id}" not found`);
    return json(registry.view(agent));
  });

  app.delete("/api/agents/:id", access.admin, async (c) => {
    const id = c.req.param("id");
    if (!await registry.remove(id)) return ollamaError(404, `Agent "${id}" not found`);
    ctx.commands.forget(id);
    ctx.security.revokeAgentSecret(id);
    ctx.scheduler.forget(id);
    return c.body(null, 204);
  });

  app.get("/api/events", access.admin, async (c) => {
    const limit = Number(c.req.query("limit") ?? 100);
    const before = c.req.query("before");
    if (!Number.isInteger(limit) || limit < 1 || limit > 1000) {
      return ollamaError(400, "Query limit must be an integer from 1 to 1000");
    }
    if (before !== undefined && !/^\d{1,15}$/.test(before)) {
      return ollamaError(400, "Query before must be an event id");
    }
    return json(
      await registry.events({
        limit,
        agentId: c.req.query("agent_id") || undefined,
        beforeId: before === undefined ? undefined : Number(before),
      }),
    );
  });

  // Admin rules: a model pinned to a label is served only by agents with that label.
  app.get("/api/admin/pins", access.admin, () => json(ctx.scheduler.pins.list()));
  app.put("/api/admin/pins", access.admin, async (c) => {
    const body = await readJson(c.req.raw, Pin);
    if (!body.ok) return body.response;
    await ctx.scheduler.pins.set(body.data.model, body.data.label);
    registry.recordEvent(
      "pin",
      null,
      `Model "${body.data.model}" pinned to label "${body.data.label}"`,
    );
    return json(ctx.scheduler.pins.list());
  });
  app.delete("/api/admin/pins", access.admin, async (c) => {
    const body = await readJson(c.req.raw, Pin.pick({ model: true }));
    if (!body.ok) return body.response;
    if (!await ctx.scheduler.pins.remove(body.data.model)) {
      return ollamaError(404, `Model "${body.data.model}" is not pinned`);
    }
    registry.recordEvent("pin", null, `Model "${body.data.model}" unpinned`);
    return json(ctx.scheduler.pins.list());
  });

  return app;
}
