/**
 * The placement reconciler: every few seconds (and after each pull, load or delete ends) it
 * compares the rules with what the agents report (`plan.ts`) and starts what the plan says:
 * - pulls: through the agent's own pull command (it pulls with progress and reports back, and
 *   every coordinator sharing the fleet sees that progress) for agents that run our agent; through
 *   the coordinator's pull (`deps.pull`: the admin API's, `api/admin/models.ts`) for an Ollama
 *   registered without one, such as the local Ollama;
 * - warm loads: `POST /api/generate {"model", "keep_alive"}` with no prompt, Ollama's documented
 *   way to load a model, renewed before it expires;
 * - deletes: only where a rule's `never_on` label forbids the model.
 * Failed loads and deletes wait with exponential back-off, as failed pulls do (`tracker.ts`).
 *
 * Every coordinator has one, for the status view; only the one leading the fleet-wide chores acts.
 */
import type { Config } from "../config.ts";
import type { CommandQueue } from "../fleet/commands.ts";
import type { Agent, Registry } from "../fleet/registry.ts";
import type { SecurityStore } from "../security/store.ts";
import type { Bus } from "../telemetry/bus.ts";
import type { PlacementStatus } from "./status.ts";
import { HOP_HEADER } from "../http/loop.ts";
import { refreshModels } from "../proxy/local.ts";
import { type Action, type ChoreState, plan, SUCCESS_GRACE_MS } from "./plan.ts";
import { keepAliveMs, PlacementRules } from "./rules.ts";
import { type PullState, PullTracker, retryDelay } from "./tracker.ts";

/** What the reconciler uses of the coordinator. */
export interface PlacementDeps {
  registry: Registry;
  bus: Bus;
  commands: CommandQueue;
  security: SecurityStore;
  config: Config;
  instanceId: string;
  now: () => number;
  /**
   * Starts the coordinator's own pull of a model onto an agent that runs no agent program (the
   * admin API's pulls, `api/admin/models.ts`); its progress goes on the bus.
   */
  pull(agent: Agent, model: string): void;
}

/** Whether an agent runs our agent program, which carries out pull commands itself. */
export function runsAgent(agent: Agent): boolean {
  return agent.agentVersion !== null && agent.agentVersion !== "built-in";
}

/** See the module documentation. */
export class Placement {
  /** The rules, kept in the settings. */
  readonly rules: PlacementRules;
  /** The fleet's pulls, as their progress tells. */
  readonly pulls: PullTracker;
  readonly #deps: PlacementDeps;
  readonly #chores = new Map<string, ChoreState>();
  readonly #tasks = new Set<Promise<void>>();
  /** Pull commands queued here, to record how they end. */
  readonly #commands = new Set<string>();
  #active = false;
  #abort = new AbortController();
  /** A round asked for soon (something ended); set only while the runner runs. */
  #soon: (() => void) | undefined;

  constructor(deps: PlacementDeps) {
    this.#deps = deps;
    this.rules = new PlacementRules(deps.security);
    this.pulls = new PullTracker(deps.bus, { now: deps.now });
    this.pulls.onEnd = (state, progress) => this.#pullEnded(state, progress);
  }

  /** Whether this coordinator acts on the rules (it leads the fleet-wide chores). */
  get active(): boolean {
    return this.#active;
  }

  /** Starts (true) or stops (false) acting; stopping cancels the loads and deletes under way. */
  activate(on: boolean): void {
    if (on === this.#active) return;
    this.#active = on;
    if (!on) {
      this.#abort.abort();
      this.#abort = new AbortController();
    }
  }

  #plan() {
    const { registry, config, now } = this.#deps;
    this.pulls.sweep();
    return plan({
      rules: this.rules.list(),
      agents: registry.all(),
      now: now(),
      pulls: this.pulls,
      chore: (kind, agentId, key) => this.#chores.get(`${kind}\0${agentId}\0${key}`),
      limits: {
        maxPulls: config.placementMaxPulls,
        maxPullsPerAgent: config.placementMaxPullsPerAgent,
      },
      name: (a) => registry.label(a),
    });
  }

  /** Each rule's state on each agent, and the drift (`GET /api/admin/placements/status`). */
  status(): PlacementStatus {
    const p = this.#plan();
    return {
      active: this.#active,
      at: new Date(this.#deps.now()).toISOString(),
      pulls: {
        running: p.running,
        max: this.#deps.config.placementMaxPulls,
        max_per_agent: this.#deps.config.placementMaxPullsPerAgent,
      },
      rules: p.rules,
    };
  }

  /** One round: compares and starts what the plan says (nothing unless active). */
  tick(): Action[] {
    if (!this.#active) return [];
    const p = this.#plan();
    for (const action of p.actions) this.#start(action);
    this.#prune();
    return p.actions;
  }

  /**
   * Acts on the rules: a round now, every `intervalMs`, and soon after a pull, load or delete
   * ends. The returned function stops it and resolves once the loads and deletes under way ended.
   */
  start(options: { intervalMs: number }): () => Promise<void> {
    this.activate(true);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const round = () => {
      timer = undefined;
      try {
        this.tick();
      } catch (e) {
        console.error("Placement round failed:", e);
      }
    };
    this.#soon = () => timer ??= setTimeout(round, 0);
    const interval = setInterval(round, options.intervalMs);
    round();
    return async () => {
      clearInterval(interval);
      clearTimeout(timer);
      this.#soon = undefined;
      this.activate(false);
      await this.settled();
    };
  }

  /** Asks for a round soon (the rules changed). */
  nudge(): void {
    this.#soon?.();
  }

  /** Resolves once the loads and deletes started so far have ended. */
  async settled(): Promise<void> {
    while (this.#tasks.size) await Promise.allSettled([...this.#tasks]);
  }

  /** Stops listening to the bus. */
  close(): void {
    this.activate(false);
    this.pulls.close();
  }

  #start(action: Action): void {
    const { registry, commands } = this.#deps;
    const name = registry.label(action.agent);
    if (action.type === "pull") {
      if (runsAgent(action.agent)) {
        const cmd = commands.add(action.agent.id, "pull", action.model);
        this.#commands.add(cmd.id);
        registry.recordEvent(
          "pull",
          action.agent.id,
          `Pull of "${action.model}" onto agent "${name}" started (placement rule)`,
        );
      } else {
        this.#deps.pull(action.agent, action.model);
      }
      return;
    }
    const id = `${action.type}\0${action.agent.id}\0${action.key}`;
    const chore = this.#chores.get(id) ?? { running: false, failures: 0 };
    chore.running = true;
    this.#chores.set(id, chore);
    const task = (action.type === "load" ? this.#load(action, name) : this.#delete(action, name))
      .then(
        () => {
          chore.failures = 0;
          chore.error = chore.retryAt = undefined;
        },
        (e: Error) => {
          chore.failures++;
          chore.error = e.message;
          chore.retryAt = this.#deps.now() + retryDelay(chore.failures);
          const what = action.type === "load" ? "Warm load" : "Delete";
          this.#event(
            action.type === "load" ? "warm_failed" : "delete_failed",
            action.agent.id,
            `${what} of "${action.model}" on agent "${name}" failed: ${e.message}`,
          );
        },
      )
      .finally(() => {
        chore.running = false;
        this.#tasks.delete(task);
        this.#soon?.();
      });
    this.#tasks.add(task);
  }

  async #call(agent: Agent, path: string, init: RequestInit, timeoutMs: number): Promise<Response> {
    const signal = AbortSignal.any([this.#abort.signal, AbortSignal.timeout(timeoutMs)]);
    try {
      return await fetch(agent.baseUrl + path, {
        ...init,
        headers: { "content-type": "application/json", [HOP_HEADER]: this.#deps.instanceId },
        signal,
      });
    } catch {
      throw new Error(
        this.#abort.signal.aborted
          ? "this coordinator stopped leading"
          : signal.aborted
          ? `no answer within ${Math.round(timeoutMs / 1000)} s`
          : "the agent is unreachable",
      );
    }
  }

  async #answer(res: Response): Promise<string> {
    const text = await res.text().catch(() => "");
    try {
      const error = JSON.parse(text)?.error;
      if (typeof error === "string") return error.slice(0, 300);
    } catch {
      // not JSON
    }
    return `HTTP ${res.status}`;
  }

  async #load(action: Extract<Action, { type: "load" }>, name: string): Promise<void> {
    const { config, now } = this.#deps;
    const res = await this.#call(action.agent, "/api/generate", {
      method: "POST",
      body: JSON.stringify({ model: action.model, keep_alive: action.keepAlive, stream: false }),
    }, config.firstByteTimeout * 1000);
    if (!res.ok) throw new Error(await this.#answer(res));
    await res.body?.cancel();
    const chore = this.#chores.get(`load\0${action.agent.id}\0${action.key}`)!;
    chore.doneAt = now();
    chore.until = chore.doneAt + keepAliveMs(action.keepAlive);
    await this.#refresh(action.agent);
    if (!action.renew) {
      this.#event(
        "warm",
        action.agent.id,
        `Model "${action.model}" loaded on agent "${name}" to keep it warm (keep_alive ${action.keepAlive})`,
      );
    }
  }

  async #delete(action: Extract<Action, { type: "delete" }>, name: string): Promise<void> {
    const res = await this.#call(action.agent, "/api/delete", {
      method: "DELETE",
      body: JSON.stringify({ model: action.model }),
    }, 30_000);
    // Gone already: what the rule wants.
    if (!res.ok && res.status !== 404) throw new Error(await this.#answer(res));
    await res.body?.cancel();
    await this.#refresh(action.agent);
    this.#event(
      "model_deleted",
      action.agent.id,
      `Model "${action.model}" deleted from agent "${name}": its placement rule says never on "${action.label}"`,
    );
  }

  async #refresh(agent: Agent): Promise<void> {
    if (this.#deps.registry.get(agent.id)) await refreshModels(this.#deps, agent);
  }

  #event(kind: string, agentId: string, message: string): void {
    try {
      this.#deps.registry.recordEvent(kind, agentId, message);
    } catch (e) {
      // The coordinator may be stopping (database closed).
      console.error(`Cannot record a placement event: ${(e as Error).message}`);
    }
  }

  #pullEnded(state: PullState, progress: Record<string, unknown>): void {
    const id = progress.command_id;
    if (typeof id === "string" && this.#commands.delete(id)) {
      const agent = this.#deps.registry.get(state.agentId);
      const name = agent ? this.#deps.registry.label(agent) : state.agentId;
      this.#event(
        state.error ? "pull_failed" : "pulled",
        state.agentId,
        state.error
          ? `Pull of "${state.model}" onto agent "${name}" failed: ${state.error}`
          : `Pull of "${state.model}" onto agent "${name}" finished`,
      );
    }
    // Every coordinator tracks every pull, and only the leader's rounds prune: the others
    // forget here what no rule needs, or their trackers would keep every pull ever made.
    this.#prune();
    this.#soon?.();
  }

  /** Forgets what no rule or agent needs any more, so the maps stay as small as the fleet. */
  #prune(): void {
    const { registry, now } = this.#deps;
    const t = now();
    this.pulls.prune((s) =>
      !!registry.get(s.agentId) && this.rules.get(s.key) !== undefined &&
      (s.failures > 0 || t - (s.succeededAt ?? -Infinity) < SUCCESS_GRACE_MS)
    );
    for (const [id, c] of this.#chores) {
      const [, agentId, key] = id.split("\0");
      const useful = c.running ||
        (registry.get(agentId) && this.rules.get(key) &&
          (c.failures > 0 || (c.until ?? -Infinity) > t));
      if (!useful) this.#chores.delete(id);
    }
    if (this.#commands.size > 10_000) this.#commands.clear();
  }
}
