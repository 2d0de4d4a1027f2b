/**
 * The scheduler: which agent serves a request, and the central queue when every candidate is
 * busy. Every routing decision of the coordinator is made here: inference in this file,
 * server-local requests (pull, push, blobs, create, copy, delete) in `placement.ts`. Only the
 * scheduler changes an agent's in-flight counters: `acquire`/`release` for inference, `hold` for
 * server-local requests.
 *
 * Smart policy, in order: agents with the model loaded and a free slot; then those that must
 * load it, cheapest load first (the model fits in free VRAM, then in free memory); within a
 * tier the lowest in-flight load relative to capacity (the coordinator's own live count), then
 * the best measured speed; remaining ties are broken at random so bursts do not herd.
 */
import { normalizeModelName } from "@oc/shared";
import type { Agent, Registry } from "../fleet/registry.ts";
import { Breakers } from "./breaker.ts";
import { SpeedTable } from "./speeds.ts";
import { ModelPins } from "./pins.ts";
import { NoAgentError } from "./no_agent.ts";
import { Placement } from "./placement.ts";
import { FairShare } from "./fair.ts";
import { MESSAGES } from "../http/messages.ts";

/** How agents are chosen. */
export type Policy = "smart" | "least_connections" | "round_robin";

/** Scheduler settings. */
export interface SchedulerOptions {
  policy?: Policy;
  /** Requests per model that may wait for a slot (0 disables queueing). */
  queueMaxLength?: number;
  /** Milliseconds a request may wait in the queue. */
  queueTimeoutMs?: number;
  failureThreshold?: number;
  cooldownMs?: number;
  now?: () => number;
  random?: () => number;
  /** Admin rules pinning models to agent labels. */
  pins?: ModelPins;
  /** An API key's weight: its share of turns and queue places against other keys (`fair.ts`). */
  weightOf?: (tenant: string) => number;
}

export { NoAgentError };

/** An agent handed out for one attempt; release it exactly once. */
export interface Lease {
  agent: Agent;
  model: string;
  /** Milliseconds the request waited in the queue. */
  queuedMs: number;
}

/** How an attempt ended, for the breaker and the speed table. */
export interface Outcome {
  /** "ok", "busy" (503/429: alive but full) or "failed" (unreachable, reset, timeout, 5xx). */
  result: "ok" | "busy" | "failed";
  tokensPerSecond?: number;
  /** Tokens generated, for the expected answer length per model. */
  tokens?: number;
  ttftMs?: number;
}

/** What a caller may ask of {@linkcode Scheduler.acquire}. */
export interface AcquireOptions {
  /** Agents already tried for this request. */
  exclude?: ReadonlySet<string>;
  /** Aborts waiting in the queue. */
  signal?: AbortSignal;
  /** Conversation key: a chat continuing an earlier one prefers the agent that served it. */
  affinity?: string;
  /** A specific agent (X-Coordinator-Agent). */
  agentId?: string;
  /** Who is asking (the API key's id): turns and queue places are shared fairly between keys. */
  tenant?: string;
}

interface Waiter {
  model: string;
  opts: AcquireOptions;
  enqueuedAt: number;
  resolve: (l: Lease) => void;
  reject: (e: Error) => void;
  cleanup: () => void;
}

const AFFINITY_LIMIT = 10_000;
/** Answer length assumed for a model before any was measured. */
const DEFAULT_ANSWER_TOKENS = 100;
/** Speed assumed before any agent was measured for a model. */
const DEFAULT_TOKENS_PER_SECOND = 50;
/** What loading a model that is not in memory is taken to cost. */
const LOAD_PENALTY_SECONDS = 1;
/** Completion estimates within this factor of the best count as a tie. */
const NEAR_TIE = 1.05;
const BUSY_BACKOFF_MS = 1_000;
/** Seconds a request refused for its key's share of the queue is told to wait. */
const SHARE_RETRY_S = 2;
/** Flags per candidate in {@linkcode Scheduler.choose}. */
const FREE = 1;
const LOADED = 2;

/** Per-candidate working arrays of one decision. */
interface Scratch {
  /** Each candidate's measured speed, then its estimated completion cost. */
  costs: Float64Array;
  flags: Uint8Array;
  /** Indexes of the candidates still in the running. */
  pool: Int32Array;
}

/** Picks agents for requests and queues requests while every candidate is full. */
export class Scheduler {
  readonly registry: Registry;
  readonly speeds = new SpeedTable();
  readonly breakers: Breakers;
  readonly policy: Policy;
  readonly pins: ModelPins;
  /** Where server-local requests (pull, push, blobs, create, copy, delete) go. */
  readonly placement: Placement;
  readonly #queueMax: number;
  readonly #queueTimeoutMs: number;
  readonly #now: () => number;
  readonly #random: () => number;
  readonly #queues = new Map<string, Waiter[]>();
  readonly #affinity = new Map<string, string>();
  readonly #busyUntil = new Map<string, number>();
  #rr = 0;
  /** Turns and queue places between API keys. */
  readonly #fair: FairShare;
  #scratch: Scratch = {
    costs: new Float64Array(0),
    flags: new Uint8Array(0),
    pool: new Int32Array(0),
  };
  /** Called when a breaker trips: (agent, opened). */
  onTrip?: (agent: Agent) => void;

  constructor(registry: Registry, options: SchedulerOptions = {}) {
    this.registry = registry;
    this.policy = options.policy ?? "smart";
    this.pins = options.pins ?? new ModelPins();
    this.placement = new Placement(registry);
    this.#queueMax = options.queueMaxLength ?? 256;
    this.#queueTimeoutMs = options.queueTimeoutMs ?? 60_000;
    this.#now = options.now ?? Date.now;
    this.#random = options.random ?? Math.random;
    this.#fair = new FairShare({ weightOf: options.weightOf });
    this.breakers = new Breakers({
      failureThreshold: options.failureThreshold ?? 3,
      cooldownMs: options.cooldownMs ?? 10_000,
      maxCooldownMs: 300_000,
    }, this.#now);
  }

  /** Capacity of an agent: its parallel slots, scaled by the admin's weight. */
  capacity(agent: Agent): number {
    return Math.max(1, Math.round(agent.parallel * Math.max(agent.weight, 0.01)));
  }

  /** Agents that could serve `model` at all (ignoring how busy they are). */
  candidates(model: string, opts: AcquireOptions = {}): Agent[] {
    const key = normalizeModelName(model);
    const pin = this.pins.labelFor(key);
    const { agentId } = opts;
    const exclude = opts.exclude?.size ? opts.exclude : undefined;
    // With no failures anywhere every circuit is closed: no lookup per agent.
    const breakers = this.breakers.allClosed ? undefined : this.breakers;
    const out: Agent[] = [];
    for (const a of this.registry.withModel(key)) {
      if (a.status !== "online" || a.weight <= 0) continue;
      if (pin !== undefined && !a.labels.includes(pin)) continue;
      if (agentId && a.id !== agentId) continue;
      if (exclude?.has(a.id)) continue;
      if (breakers && !breakers.allows(a.id)) continue;
      out.push(a);
    }
    return out;
  }

  /**
   * Requests in flight on an agent for one model (normalised name): this coordinator's, and
   * those the other coordinators sharing the fleet reported.
   */
  #busy(a: Agent, key: string): number {
    const local = this.#localBusy(a, key);
    return a.remoteInFlight === 0 ? local : local + (a.remoteInFlightByModel.get(key) ?? 0);
  }

  /** Requests this coordinator has in flight on an agent for one model. */
  #localBusy(a: Agent, key: string): number {
    return a.inFlightByModel.size === 0 ? 0 : a.inFlightByModel.get(key) ?? 0;
  }

  #hasFreeSlot(a: Agent, key: string, now: number): boolean {
    if (this.#busy(a, key) >= this.capacity(a)) return false;
    return this.#busyUntil.size === 0 || (this.#busyUntil.get(a.id) ?? 0) <= now;
  }

  /**
   * Chooses an agent for one request, or undefined when the request should wait in the queue.
   *
   * `smart` estimates each candidate's completion time: the answer's expected length over the
   * agent's measured speed for the model, plus a load penalty when the model is not in memory,
   * plus, for an agent whose slots are all taken, the wait for one of them (`ahead` requests are
   * queued before this one). The quickest wins; when that agent is full, the request waits for
   * it rather than going to a much slower free one. Near-ties go to a free agent, then one with
   * the model loaded, then the lowest load for its capacity, then the cheapest cold start, then
   * at random. `least_connections` and `round_robin` are the classic baselines: they ignore
   * slots and speed, and never queue.
   */
  choose(
    model: string,
    candidates: readonly Agent[],
    affinity?: string,
    ahead = 0,
  ): Agent | undefined {
    if (candidates.length === 0) return undefined;
    if (this.policy === "round_robin") return candidates[this.#rr++ % candidates.length];
    if (this.policy === "least_connections") {
      return this.#pickMin(candidates, (a) => [a.inFlight + a.remoteInFlight]);
    }
    const now = this.#now();
    const key = normalizeModelName(model);
    if (affinity) {
      const load = (a: Agent) => this.#busy(a, key) / this.capacity(a);
      const free = candidates.filter((a) => this.#hasFreeSlot(a, key, now));
      const preferred = free.find((a) => a.id === this.#affinity.get(affinity));
      // Reuse the agent's prompt cache unless it is clearly busier than the best choice.
      if (preferred && load(preferred) <= Math.min(...free.map(load)) + 0.5) return preferred;
    }
    // One pass over the candidates into scratch arrays reused between decisions: a decision
    // among a thousand agents allocates nothing per agent.
    const n = candidates.length;
    const { costs, flags, pool } = this.#scratchFor(n);
    const tokens = this.speeds.meanTokens(key) ?? DEFAULT_ANSWER_TOKENS;
    const measured = this.speeds.forModel(key);
    // An agent without a measurement gets a fair trial: it counts as fast as the best measured.
    let optimistic = 0;
    if (measured !== undefined) {
      for (let i = 0; i < n; i++) {
        const v = measured.get(candidates[i].id)?.tokensPerSecond ?? null;
        costs[i] = v === null ? NaN : v; // the speed for now; NaN: not measured
        if (v !== null && v > optimistic) optimistic = v;
      }
    }
    if (optimistic === 0) optimistic = DEFAULT_TOKENS_PER_SECOND;
    const busyUntil = this.#busyUntil.size > 0 ? this.#busyUntil : undefined;
    let min = Infinity;
    for (let i = 0; i < n; i++) {
      const a = candidates[i];
      const loaded = a.loadedKeys.has(key);
      const speed = measured === undefined ? NaN : costs[i];
      const service = tokens / (speed === speed ? speed : optimistic) +
        (loaded ? 0 : LOAD_PENALTY_SECONDS);
      const cap = this.capacity(a);
      const busy = this.#busy(a, key);
      const free = busy < cap && (busyUntil === undefined || (busyUntil.get(a.id) ?? 0) <= now);
      const cost = free ? service : (Math.max(0, busy - cap) + 1 + ahead) * service / cap + service;
      costs[i] = cost;
      flags[i] = (free ? FREE : 0) | (loaded ? LOADED : 0);
      if (cost < min) min = cost;
    }
    // Near-ties narrowed step by step, so the costlier criteria only see the few that remain.
    // The pool holds candidate indexes, in candidate order.
    let size = 0;
    let anyFree = false;
    for (let i = 0; i < n; i++) {
      if (costs[i] > min * NEAR_TIE) continue;
      const free = (flags[i] & FREE) !== 0;
      if (free && !anyFree) {
        anyFree = true;
        size = 0;
      }
      if (free || !anyFree) pool[size++] = i;
    }
    if (size > 1) {
      size = this.#narrow(pool, size, (i) => (flags[i] & LOADED) !== 0 ? 0 : 1);
    }
    if (size > 1) {
      size = this.#narrow(pool, size, (i) => {
        const a = candidates[i];
        return Math.round((this.#busy(a, key) / this.capacity(a)) * 1000);
      });
    }
    if (size > 1 && (flags[pool[0]] & LOADED) === 0) {
      size = this.#narrow(pool, size, (i) => this.#tier(candidates[i], key));
    }
    const pick = size === 1 ? pool[0] : pool[Math.floor(this.#random() * size)];
    return (flags[pick] & FREE) !== 0 ? candidates[pick] : undefined;
  }

  /** Scratch arrays for {@linkcode choose}, grown to fit `n` candidates. */
  #scratchFor(n: number): Scratch {
    if (this.#scratch.pool.length < n) {
      const size = Math.max(64, 2 ** Math.ceil(Math.log2(n)));
      this.#scratch = {
        costs: new Float64Array(size),
        flags: new Uint8Array(size),
        pool: new Int32Array(size),
      };
    }
    return this.#scratch;
  }

  /** Keeps, in order, the pool entries with the lowest score; returns the new pool size. */
  #narrow(pool: Int32Array, size: number, score: (i: number) => number): number {
    let best = Infinity;
    let kept = 0;
    for (let j = 0; j < size; j++) {
      const i = pool[j];
      const v = score(i);
      if (v < best) {
        best = v;
        kept = 0;
        pool[kept++] = i;
      } else if (v === best) pool[kept++] = i;
    }
    return kept;
  }

  /** 0: loaded; 1: fits in free VRAM; 2: fits in free memory; 3: must evict or swap. */
  #tier(a: Agent, key: string): number {
    if (a.loadedKeys.has(key)) return 0;
    const size = a.modelSizes.get(key) ?? 0;
    const gpus = a.metrics?.gpus ?? [];
    const vramFree = gpus.reduce(
      (s, g) => s + Math.max(0, (g.memory_total ?? 0) - (g.memory_used ?? 0)),
      0,
    );
    if (size > 0 && vramFree >= size) return 1;
    const m = a.metrics;
    const memFree = m?.memory_total !== undefined && m.memory_used !== undefined
      ? m.memory_total - m.memory_used
      : undefined;
    if (size === 0 || memFree === undefined || memFree >= size) return 2;
    return 3;
  }

  #pickMin(agents: readonly Agent[], key: (a: Agent, i: number) => number[]): Agent {
    let best: Agent[] = [];
    let bestKey: number[] | null = null;
    agents.forEach((a, i) => {
      const k = key(a, i);
      const cmp = bestKey === null ? -1 : compare(k, bestKey);
      if (cmp < 0) {
        best = [a];
        bestKey = k;
      } else if (cmp === 0) best.push(a);
    });
    return best.length === 1 ? best[0] : best[Math.floor(this.#random() * best.length)];
  }

  /**
   * Gives an agent for one attempt at serving `model`, waiting in the model's queue while every
   * candidate is at capacity. Throws {@linkcode NoAgentError} when none can serve it.
   */
  acquire(model: string, opts: AcquireOptions = {}): Promise<Lease> {
    const candidates = this.candidates(model, opts);
    if (candidates.length === 0) return Promise.reject(this.#whyNone(model, opts));
    const queue = this.#queues.get(normalizeModelName(model));
    // First come, first served: nobody overtakes requests already waiting for this model.
    if (!queue?.length) {
      const agent = this.choose(model, candidates, opts.affinity, 0);
      if (agent) {
        this.#fair.served(opts.tenant);
        return Promise.resolve(this.#lease(agent, model, 0));
      }
    }
    return this.#enqueue(model, opts);
  }

  #whyNone(model: string, opts: AcquireOptions): NoAgentError {
    const all = this.registry.all();
    const online = all.filter((a) => a.status === "online");
    if (online.length === 0) {
      return new NoAgentError(MESSAGES.noAgentOnline, 503, 5);
    }
    const key = normalizeModelName(model);
    if (!online.some((a) => a.modelKeys.has(key))) {
      return new NoAgentError(MESSAGES.modelNotFound(model), 404);
    }
    const pin = this.pins.labelFor(key);
    if (pin !== undefined && !online.some((a) => a.labels.includes(pin) && a.modelKeys.has(key))) {
      return new NoAgentError(MESSAGES.modelPinnedOffline(model, pin), 503, 5);
    }
    if (opts.agentId && !online.some((a) => a.id === opts.agentId)) {
      return new NoAgentError(MESSAGES.requestedAgentOffline, 503, 5);
    }
    return new NoAgentError(MESSAGES.allUnavailable(model), 503, 5);
  }

  #lease(agent: Agent, model: string, queuedMs: number): Lease {
    agent.inFlight++;
    const key = normalizeModelName(model);
    agent.inFlightByModel.set(key, this.#localBusy(agent, key) + 1);
    this.breakers.onSend(agent.id);
    return { agent, model, queuedMs };
  }

  #enqueue(model: string, opts: AcquireOptions): Promise<Lease> {
    const key = normalizeModelName(model);
    const queue = this.#queues.get(key) ?? [];
    if (queue.length >= this.#queueMax) {
      const verdict = this.#fair.whenFull(
        queue.map((w) => w.opts.tenant),
        opts.tenant,
        this.#queueMax,
      );
      if (verdict.kind === "full") {
        return Promise.reject(new NoAgentError(MESSAGES.queueFull(model), 503, 2));
      }
      if (verdict.kind === "over_share") {
        return Promise.reject(
          new NoAgentError(MESSAGES.queueShare(model, verdict.places), 429, SHARE_RETRY_S),
        );
      }
      // A key under its share takes the place of the newest request of the key most over it.
      const out = queue.findLast((w) => w.opts.tenant === verdict.victim)!;
      out.cleanup();
      out.reject(new NoAgentError(MESSAGES.queueShare(model, verdict.places), 429, SHARE_RETRY_S));
    }
    this.#queues.set(key, queue);
    return new Promise<Lease>((resolve, reject) => {
      const timer = setTimeout(() => {
        remove();
        reject(new NoAgentError(MESSAGES.queueTimeout(model), 503, 5));
      }, this.#queueTimeoutMs);
      const onAbort = () => {
        remove();
        reject(opts.signal?.reason ?? new DOMException("Aborted", "AbortError"));
      };
      const remove = () => {
        clearTimeout(timer);
        opts.signal?.removeEventListener("abort", onAbort);
        const i = queue.indexOf(waiter);
        if (i !== -1) queue.splice(i, 1);
        if (queue.length === 0 && this.#queues.get(key) === queue) this.#queues.delete(key);
      };
      const waiter: Waiter = {
        model,
        opts,
        enqueuedAt: this.#now(),
        resolve,
        reject,
        cleanup: remove,
      };
      opts.signal?.addEventListener("abort", onAbort, { once: true });
      queue.push(waiter);
    });
  }

  /** Hands freed slots to waiting requests, oldest first in each model's queue. */
  pump(): void {
    if (this.#queues.size === 0) return; // every heartbeat calls this: nothing waits, usually
    for (const queue of [...this.#queues.values()]) {
      // Keep placing while anything can be placed. A waiter that cannot go now (pinned to a busy
      // agent, or excluding the agents it already tried) does not hold up those behind it.
      let placed = true;
      while (placed && queue.length) {
        placed = false;
        for (const [ahead, w] of this.#byTurn(queue).entries()) {
          const candidates = this.candidates(w.model, w.opts);
          if (candidates.length === 0) {
            w.cleanup();
            w.reject(this.#whyNone(w.model, w.opts));
            placed = true;
            break;
          }
          const agent = this.choose(w.model, candidates, w.opts.affinity, ahead);
          if (!agent) continue;
          w.cleanup();
          this.#fair.served(w.opts.tenant);
          w.resolve(this.#lease(agent, w.model, this.#now() - w.enqueuedAt));
          placed = true;
          break;
        }
      }
    }
  }

  /**
   * Waiters in the order they get free slots: weighted fair turns between API keys
   * (`fair.ts`), first come first served within a key and when there are no keys.
   */
  #byTurn(queue: Waiter[]): Waiter[] {
    return this.#fair.order(queue, (w) => w.opts.tenant);
  }

  /** Ends an attempt: frees the slot, feeds the breaker and the speed table, wakes the queue. */
  release(lease: Lease, outcome: Outcome, affinity?: string): void {
    const { agent } = lease;
    agent.inFlight = Math.max(0, agent.inFlight - 1);
    const key = normalizeModelName(lease.model);
    const left = this.#localBusy(agent, key) - 1;
    if (left > 0) agent.inFlightByModel.set(key, left);
    else agent.inFlightByModel.delete(key);
    if (outcome.result === "ok") {
      // It answered, so the model is in memory there now; the next heartbeat has the details.
      agent.loadedKeys.add(key);
      this.breakers.onSuccess(agent.id);
      this.#busyUntil.delete(agent.id);
      if (outcome.tokensPerSecond !== undefined || outcome.ttftMs !== undefined) {
        this.speeds.record(agent.id, key, outcome);
      }
      if (outcome.tokens) this.speeds.recordTokens(key, outcome.tokens);
      if (affinity) this.#remember(affinity, agent.id);
    } else if (outcome.result === "busy") {
      this.breakers.onNeutral(agent.id);
      this.#busyUntil.set(agent.id, this.#now() + BUSY_BACKOFF_MS);
      Deno.unrefTimer(setTimeout(() => this.pump(), BUSY_BACKOFF_MS + 5));
    } else if (this.breakers.onFailure(agent.id)) {
      this.onTrip?.(agent);
    }
    this.pump();
  }

  /**
   * Counts a server-local request (a pull, an upload, a create) in an agent's load while it runs,
   * as the pull-target choice and `least_connections` read it. Returns the function that ends it;
   * calling that again does nothing.
   */
  hold(agent: Agent): () => void {
    agent.inFlight++;
    let held = true;
    return () => {
      if (!held) return;
      held = false;
      agent.inFlight = Math.max(0, agent.inFlight - 1);
    };
  }

  #remember(affinity: string, agentId: string): void {
    this.#affinity.delete(affinity);
    this.#affinity.set(affinity, agentId);
    if (this.#affinity.size > AFFINITY_LIMIT) {
      this.#affinity.delete(this.#affinity.keys().next().value!);
    }
  }

  /** Requests waiting per model (normalised name). */
  queueDepths(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const [k, q] of this.#queues) out[k] = q.length;
    return out;
  }

  /** Forgets a removed agent's statistics. */
  forget(agentId: string): void {
    this.speeds.forget(agentId);
    this.breakers.forget(agentId);
    this.#busyUntil.delete(agentId);
  }
}

function compare(a: number[], b: number[]): number {
  for (let i = 0; i < a.length; i++) {
    if (a[i] !== b[i]) return a[i] < b[i] ? -1 : 1;
  }
  return 0;
}
