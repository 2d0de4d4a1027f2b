/**
 * What the fleet's pulls are doing, read from the progress the bus carries: the coordinator's own
 * pulls (`api/admin/models.ts`) and the agents' (commands, shared between coordinators) alike.
 * Per agent and model: running or not, the last progress, and after a failure how many there
 * were in a row and when the next try is due (exponential back-off). Every coordinator keeps one,
 * so each shows the same state; only the leader acts on it.
 */
import { normalizeModelName } from "@oc/shared";
import type { Bus, BusMessage } from "../telemetry/bus.ts";

/** First wait after a failed pull; it doubles with each failure in a row. */
export const RETRY_BASE_MS = 30_000;
/** Longest wait between two tries. */
export const RETRY_MAX_MS = 3_600_000;
/** A pull with no progress for this long is taken as failed (its agent went away meanwhile). */
export const STALL_MS = 10 * 60_000;

/** The wait before try number `failures + 1`. */
export function retryDelay(failures: number): number {
  return Math.min(RETRY_MAX_MS, RETRY_BASE_MS * 2 ** Math.max(0, failures - 1));
}

/** One model on one agent. */
export interface PullState {
  agentId: string;
  /** The normalised model name. */
  key: string;
  model: string;
  running: boolean;
  status: string;
  completed?: number;
  total?: number;
  startedAt: number;
  updatedAt: number;
  /** Failed tries in a row (0 after a success). */
  failures: number;
  error?: string;
  /** When the next try is due after a failure. */
  retryAt?: number;
  succeededAt?: number;
}

/** See the module documentation. */
export class PullTracker {
  readonly #now: () => number;
  readonly #states = new Map<string, PullState>();
  readonly #unsubscribe: () => void;
  /** Called when a pull ends (after the state changed). */
  onEnd?: (state: PullState, progress: Record<string, unknown>) => void;

  constructor(bus: Bus, options: { now?: () => number } = {}) {
    this.#now = options.now ?? Date.now;
    this.#unsubscribe = bus.subscribe((m) => this.#receive(m), ["progress", "agent_removed"]);
  }

  #receive(m: BusMessage): void {
    if (m.type === "agent_removed") return this.forget(m.id);
    if (m.type !== "progress") return;
    const p = m.progress;
    const agentId = p.agent_id;
    const model = p.model;
    if (typeof agentId !== "string" || typeof model !== "string" || !model) return;
    const key = normalizeModelName(model);
    const now = this.#now();
    const id = `${agentId}\0${key}`;
    const state = this.#states.get(id) ??
      {
        agentId,
        key,
        model,
        running: false,
        status: "",
        startedAt: now,
        updatedAt: now,
        failures: 0,
      };
    this.#states.set(id, state);
    const error = typeof p.error === "string" ? p.error : undefined;
    if (p.done === true || error !== undefined) {
      state.running = false;
      state.updatedAt = now;
      if (error !== undefined) this.#fail(state, error);
      else {
        state.failures = 0;
        state.error = state.retryAt = undefined;
        state.status = "success";
        state.succeededAt = now;
      }
      this.onEnd?.(state, p);
      return;
    }
    if (!state.running) {
      state.running = true;
      state.startedAt = now;
      state.completed = state.total = undefined;
    }
    state.updatedAt = now;
    state.status = typeof p.status === "string" ? p.status : state.status;
    if (typeof p.completed === "number") state.completed = p.completed;
    if (typeof p.total === "number") state.total = p.total;
  }

  #fail(state: PullState, error: string): void {
    const now = this.#now();
    state.running = false;
    state.failures++;
    state.error = error;
    state.status = "error";
    state.updatedAt = now;
    state.retryAt = now + retryDelay(state.failures);
  }

  /** Ends pulls that stopped reporting; call before reading. */
  sweep(): void {
    const now = this.#now();
    for (const s of this.#states.values()) {
      if (s.running && now - s.updatedAt >= STALL_MS) {
        this.#fail(s, `no progress for ${Math.round(STALL_MS / 60_000)} minutes`);
        this.onEnd?.(s, { error: s.error });
      }
    }
  }

  /** One model's state on one agent. */
  get(agentId: string, key: string): PullState | undefined {
    return this.#states.get(`${agentId}\0${key}`);
  }

  /** Every pull running now. */
  running(): PullState[] {
    return [...this.#states.values()].filter((s) => s.running);
  }

  /** Everything known about one agent's models. */
  onAgent(agentId: string): PullState[] {
    return [...this.#states.values()].filter((s) => s.agentId === agentId);
  }

  /** Drops what is known of an agent (removed). */
  forget(agentId: string): void {
    for (const [id, s] of this.#states) if (s.agentId === agentId) this.#states.delete(id);
  }

  /** Drops finished entries `keep` does not want (models without a rule, old successes). */
  prune(keep: (state: PullState) => boolean): void {
    for (const [id, s] of this.#states) if (!s.running && !keep(s)) this.#states.delete(id);
  }

  /** Stops listening to the bus. */
  close(): void {
    this.#unsubscribe();
  }
}
