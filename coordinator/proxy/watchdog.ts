/**
 * Time limits for many requests with one timer. A watch notes when its clock started; a sweep
 * every `periodMs` fires the watches past their limit, at most one period late. Restarting a
 * watch is one assignment, where a timer per request and per streamed chunk cost a setTimeout
 * and a clearTimeout each (a few percent of the proxy's CPU at c=32, more with many streams).
 * The sweep runs only while something is watched (and one period after).
 *
 * @module
 */

/** One watched time limit. */
export interface Watch {
  /** Restarts the clock, running. */
  restart(): void;
  /** Pauses the clock (a `restart` runs it again from zero). */
  pause(): void;
  /** Stops watching for good; the callback will not run. */
  stop(): void;
}

class Entry implements Watch {
  since: number;
  running = true;

  constructor(
    readonly dog: Watchdog,
    readonly limitMs: number,
    readonly onExpire: () => void,
  ) {
    this.since = dog.now();
  }

  restart(): void {
    this.since = this.dog.now();
    this.running = true;
  }

  pause(): void {
    this.running = false;
  }

  stop(): void {
    this.dog.entries.delete(this);
  }
}

/** Watches time limits; see the module documentation. */
export class Watchdog {
  /** @internal The watched limits (read by their own `stop`). */
  readonly entries = new Set<Entry>();
  #timer: ReturnType<typeof setInterval> | undefined;

  constructor(
    /** How often limits are checked: how late a watch may fire. */
    readonly periodMs: number,
    readonly now: () => number = () => performance.now(),
  ) {}

  /** Calls `onExpire` once the clock has run for `limitMs` without a restart. */
  watch(limitMs: number, onExpire: () => void): Watch {
    const entry = new Entry(this, limitMs, onExpire);
    this.entries.add(entry);
    this.#timer ??= setInterval(() => this.sweep(), this.periodMs);
    return entry;
  }

  /** Whether the sweep timer runs. */
  get ticking(): boolean {
    return this.#timer !== undefined;
  }

  /** How many watches there are. */
  get size(): number {
    return this.entries.size;
  }

  /**
   * Fires every watch past its limit (run by the timer; public for tests). The timer stops here,
   * at the first sweep that finds nothing watched, rather than when the last watch stops: at
   * concurrency 1 that would start and clear a timer for every request.
   */
  sweep(): void {
    const now = this.now();
    if (this.entries.size === 0) return this.#idle();
    for (const e of this.entries) {
      if (!e.running || now - e.since < e.limitMs) continue;
      this.entries.delete(e);
      try {
        e.onExpire();
      } catch (error) {
        console.error("A watchdog callback failed:", error);
      }
    }
  }

  #idle() {
    clearInterval(this.#timer);
    this.#timer = undefined;
  }
}

/** The sweep period for the proxy's limits: a tenth of the shortest, within 10 ms to 1 s. */
export function watchdogPeriod(...limitsMs: number[]): number {
  return Math.min(1000, Math.max(10, Math.min(...limitsMs) / 10));
}
