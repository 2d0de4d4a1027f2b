/**
 * A circuit breaker per agent: repeated failures take the agent out for a cooling period, then
 * one half-open trial request at a time decides whether it comes back.
 */

/** Breaker settings. */
export interface BreakerOptions {
  /** Consecutive failures that open the circuit. */
  failureThreshold: number;
  /** First cooling period; doubles on each failed trial up to `maxCooldownMs`. */
  cooldownMs: number;
  maxCooldownMs: number;
}

/** The state of one agent's circuit. */
export type BreakerState = "closed" | "open" | "half_open";

interface Entry {
  failures: number;
  openUntil: number;
  cooldown: number;
  trial: boolean;
}

/** Circuit breakers for all agents. */
export class Breakers {
  readonly #entries = new Map<string, Entry>();
  readonly #opts: BreakerOptions;
  readonly #now: () => number;

  constructor(opts: BreakerOptions, now: () => number) {
    this.#opts = opts;
    this.#now = now;
  }

  #entry(id: string): Entry {
    let e = this.#entries.get(id);
    if (!e) {
      this.#entries.set(
        id,
        e = { failures: 0, openUntil: 0, cooldown: this.#opts.cooldownMs, trial: false },
      );
    }
    return e;
  }

  /** The circuit's state now. */
  state(id: string): BreakerState {
    const e = this.#entries.get(id);
    if (!e || e.failures < this.#opts.failureThreshold) return "closed";
    return this.#now() < e.openUntil ? "open" : "half_open";
  }

  /** Whether every circuit is closed (no agent has failures): callers may skip per-agent checks. */
  get allClosed(): boolean {
    return this.#entries.size === 0;
  }

  /** Whether a request may go to the agent now (half-open admits one trial at a time). */
  allows(id: string): boolean {
    const s = this.state(id);
    if (s === "closed") return true;
    if (s === "open") return false;
    return !this.#entry(id).trial;
  }

  /** Marks that a request was sent (claims the half-open trial). */
  onSend(id: string): void {
    if (this.state(id) === "half_open") this.#entry(id).trial = true;
  }

  /** The trial ended without a verdict (busy, client gone): another trial may go. */
  onNeutral(id: string): void {
    const e = this.#entries.get(id);
    if (e) e.trial = false;
  }

  /** A success closes the circuit. */
  onSuccess(id: string): void {
    this.#entries.delete(id);
  }

  /** A failure; returns true when it opened (tripped) the circuit. */
  onFailure(id: string): boolean {
    const e = this.#entry(id);
    const wasHalfOpen = this.state(id) === "half_open";
    e.failures++;
    e.trial = false;
    if (wasHalfOpen) {
      e.cooldown = Math.min(e.cooldown * 2, this.#opts.maxCooldownMs);
      e.openUntil = this.#now() + e.cooldown;
      return true;
    }
    if (e.failures === this.#opts.failureThreshold) {
      e.openUntil = this.#now() + e.cooldown;
      return true;
    }
    return false;
  }

  /** Forgets a removed agent. */
  forget(id: string): void {
    this.#entries.delete(id);
  }
}
