/**
 * The fleet's models for the dashboard: `GET /api/models` (which agents have what installed and
 * loaded), `POST /api/models/pull` (the coordinator streams each target agent's `/api/pull` and
 * publishes progress on the bus) and `DELETE /api/models/:agentId/:model` (one agent's copy).
 */
import { Hono } from "hono";
import { z } from "zod";
import { normalizeModelName, ollamaError } from "@oc/shared";
import type { AppContext } from "../../context.ts";
import type { Agent } from "../../fleet/registry.ts";
import { access } from "../../http/access.ts";
import { json, readJson } from "../../http/json.ts";
import { HOP_HEADER } from "../../http/loop.ts";
import { readLines } from "../../proxy/lines.ts";
import { refreshModels } from "../../proxy/local.ts";
import { fleetModelView } from "../../dashboard/lib/models.ts";
import type { PullProgress } from "../../dashboard/wire.ts";

const modelName = z.string().trim().min(1).max(253).regex(
  /^[\w][\w.\-:/@+]*$/,
  "expected a model name such as llama3.2 or library/llama3.2:latest",
);
const agentId = z.string().trim().min(1).max(128);

/** `POST /api/models/pull`: a model to pull onto chosen agents, or onto every reachable one. */
export const PullRequest = z.object({
  model: modelName,
  agents: z.union([z.literal("all"), z.array(agentId).min(1).max(1000)]),
}).strict();
export type PullRequest = z.infer<typeof PullRequest>;

/** `DELETE /api/models` with a body: one agent's copy of a model. */
export const DeleteModelRequest = z.object({ agent_id: agentId, model: modelName }).strict();

export type { PullProgress };

/** Progress messages per pull are published at most this often (the last one always is). */
const PUBLISH_EVERY_MS = 250;
/** Pulls remembered for a page opened late. */
const KEEP_PULLS = 100;

/** What pulls use of the coordinator. */
export type PullDeps = Pick<AppContext, "registry" | "bus" | "config" | "instanceId">;

/** The pulls the coordinator started, and their last progress. */
export class Pulls {
  readonly #last = new Map<string, PullProgress>();
  readonly #running = new Map<string, string>();
  readonly #ctx: PullDeps;

  constructor(ctx: PullDeps) {
    this.#ctx = ctx;
  }

  /** The most recent pulls, newest first. */
  list(): PullProgress[] {
    return [...this.#last.values()].reverse();
  }

  /**
   * Starts pulling `model` onto `agent` in the background; returns the pull's id (that of the
   * pull already running when there is one for the same agent and model).
   */
  start(agent: Agent, model: string): string {
    const key = `${agent.id} ${normalizeModelName(model)}`;
    const running = this.#running.get(key);
    if (running) return running;
    const id = crypto.randomUUID();
    this.#running.set(key, id);
    void this.#run(agent, model, id).finally(() => this.#running.delete(key));
    return id;
  }

  #remember(p: PullProgress): void {
    this.#last.delete(p.id);
    this.#last.set(p.id, p);
    if (this.#last.size > KEEP_PULLS) this.#last.delete(this.#last.keys().next().value!);
  }

  async #run(agent: Agent, model: string, id: string): Promise<void> {
    const { registry, bus, config } = this.#ctx;
    const name = registry.label(agent);
    let lastSent = 0;
    let trailing: ReturnType<typeof setTimeout> | undefined;
    const publish = (p: PullProgress) => {
      clearTimeout(trailing);
      trailing = undefined;
      lastSent = Date.now();
      bus.publish({ type: "progress", progress: { ...p } });
    };
    const report = (p: Omit<PullProgress, "id" | "agent_id" | "model">, force = false) => {
      const progress: PullProgress = { id, agent_id: agent.id, model, ...p };
      this.#remember(progress);
      const wait = lastSent + PUBLISH_EVERY_MS - Date.now();
      if (force || wait <= 0) publish(progress);
      else trailing ??= setTimeout(() => publish(this.#last.get(id)!), wait);
    };
    report({ status: "starting", done: false }, true);
    registry.recordEvent("pull", agent.id, `Pull of "${model}" onto agent "${name}" started`);
    let error: string | undefined;
    const idle = new AbortController();
    let idleTimer = setTimeout(() => idle.abort(), config.idleTimeout * 1000);
    try {
      const res = await fetch(agent.baseUrl + "/api/pull", {
        method: "POST",
        headers: { "content-type": "application/json", [HOP_HEADER]: this.#ctx.instanceId },
        body: JSON.stringify({ model, stream: true }),
        signal: idle.signal,
      });
      let success = false;
      const chunks = (async function* () {
        for await (const chunk of res.body ?? []) {
          clearTimeout(idleTimer);
          idleTimer = setTimeout(() => idle.abort(), config.idleTimeout * 1000);
          yield chunk;
        }
      })();
      for await (const raw of readLines(chunks)) {
        let msg: Record<string, unknown>;
        try {
          msg = JSON.parse(raw.trim());
        } catch {
          continue;
        }
        if (typeof msg.error === "string") error = msg.error.slice(0, 500);
        else if (msg.status === "success") success = true;
        else if (typeof msg.status === "string") {
          report({
            status: msg.status.slice(0, 200),
            completed: typeof msg.completed === "number" ? msg.completed : undefined,
            total: typeof msg.total === "number" ? msg.total : undefined,
            done: false,
          });
        }
      }
      if (!error && !res.ok) error = `HTTP ${res.status}`;
      if (!error && !success) error = "the agent stopped answering before the pull finished";
    } catch {
      error = idle.signal.aborted
        ? "the agent sent nothing for too long"
        : "the agent is unreachable or stopped answering";
    } finally {
      clearTimeout(idleTimer);
    }
    try {
      if (registry.get(agent.id)) await refreshModels(this.#ctx, agent);
      registry.recordEvent(
        error ? "pull_failed" : "pulled",
        agent.id,
        error
          ? `Pull of "${model}" onto agent "${name}" failed: ${error}`
          : `Pull of "${model}" onto agent "${name}" finished`,
      );
    } catch (e) {
      // The coordinator may be stopping (database closed); the progress still goes out.
      console.error(`Cannot record the end of a pull: ${(e as Error).message}`);
    }
    report(
      error ? { status: "error", done: true, error } : { status: "success", done: true },
      true,
    );
  }
}

const pullsByRegistry = new WeakMap<object, Pulls>();

/** The pulls of one coordinator (one per context, shared by the API and the pages). */
export function pullsOf(ctx: PullDeps): Pulls {
  let pulls = pullsByRegistry.get(ctx.registry);
  if (!pulls) pullsByRegistry.set(ctx.registry, pulls = new Pulls(ctx));
  return pulls;
}

/** The models routes (a management API, for admins). */
export function modelRoutes(ctx: AppContext): Hono {
  const pulls = pullsOf(ctx);
  const app = new Hono();
  const { registry } = ctx;

  app.get(
    "/api/models",
    access.admin,
    () => json(fleetModelView(registry.all().map((a) => registry.view(a)))),
  );

  app.get("/api/models/pulls", access.admin, () => json(pulls.list()));

  app.post("/api/models/pull", access.admin, async (c) => {
    const body = await readJson(c.req.raw, PullRequest);
    if (!body.ok) return body.response;
    const { model, agents } = body.data;
    let targets: Agent[];
    if (agents === "all") {
      targets = registry.all().filter((a) => a.status !== "offline");
      if (!targets.length) return ollamaError(503, "Cannot pull: no agent is reachable");
    } else {
      targets = [];
      for (const id of new Set(agents)) {
        const agent = registry.get(id);
        if (!agent) return ollamaError(404, `Cannot pull: agent "${id}" not found`);
        if (agent.status === "offline") {
          return ollamaError(409, `Cannot pull: agent "${registry.label(agent)}" is offline`);
        }
        targets.push(agent);
      }
    }
    return json({
      pulls: targets.map((a) => ({ id: pulls.start(a, model), agent_id: a.id })),
    }, 202);
  });

  const remove = async (id: string, model: string): Promise<Response> => {
    const agent = registry.get(id);
    if (!agent) return ollamaError(404, `Cannot delete "${model}": agent "${id}" not found`);
    const name = registry.label(agent);
    if (agent.status === "offline") {
      return ollamaError(409, `Cannot delete "${model}": agent "${name}" is offline`);
    }
    let res: Response;
    try {
      res = await fetch(agent.baseUrl + "/api/delete", {
        method: "DELETE",
        headers: { "content-type": "application/json", [HOP_HEADER]: ctx.instanceId },
        body: JSON.stringify({ model }),
        signal: AbortSignal.timeout(30_000),
      });
      await res.body?.cancel();
    } catch {
      return ollamaError(502, `Cannot delete "${model}": agent "${name}" is unreachable`);
    }
    if (res.status === 404) {
      return ollamaError(404, `Cannot delete "${model}": agent "${name}" does not have it`);
    }
    if (!res.ok) {
      return ollamaError(502, `Cannot delete "${model}": agent "${name}" answered ${res.status}`);
    }
    await refreshModels(ctx, agent);
    registry.recordEvent("model_deleted", agent.id, `Model "${model}" deleted from "${name}"`);
    return json({ ok: true });
  };

  app.delete("/api/models/:agentId/:model{.+}", access.admin, (c) => {
    const parsed = DeleteModelRequest.safeParse({
      agent_id: c.req.param("agentId"),
      model: c.req.param("model"),
    });
    if (!parsed.success) return ollamaError(400, "Invalid agent id or model name");
    return remove(parsed.data.agent_id, parsed.data.model);
  });

  app.delete("/api/models", access.admin, async (c) => {
    const body = await readJson(c.req.raw, DeleteModelRequest);
    if (!body.ok) return body.response;
    return remove(body.data.agent_id, body.data.model);
  });

  return app;
}
