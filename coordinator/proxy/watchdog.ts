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
  /** Neighbours in the watchdog's list while watched; cleared once stopped or fired. */
  prev: Entry | undefined = undefined;
  next: Entry | undefined = undefined;
  watched = true;

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
    this.dog.unlink(this);
  }
}

/**
 * Watches time limits; see the module documentation.
 *
 * The watches are a doubly linked list whose removed entries let go of their neighbours, not a
 * `Set`. A watch lives about as long as its request and reaches the request's whole state through
 * its callback. With a `Set` taking and dropping one per request, V8's young-generation
 * collections kept about 1.6 MB of such state alive each time and promoted it to the old
 * generation (1.5 KB per request at c=8), and each collection paused the loop 6 ms; with the
 * list, 0.3 MB and 2.6 ms (`--trace-gc-nvp`; which part of V8's hash table held on to them was
 * not pinned down).
 */
export class Watchdog {
  #head: Entry | undefined;
  #tail: Entry | undefined;
  #size = 0;
  #timer: ReturnType<typeof setInterval> | undefined;

  constructor(
    /** How often limits are checked: how late a watch may fire. */
    readonly periodMs: number,
    readonly now: () => number = () => performance.now(),
  ) {}

  /** Calls `onExpire` once the clock has run for `limitMs` without a restart. */
  watch(limitMs: number, onExpire: () => void): Watch {
    const entry = new Entry(this, limitMs, onExpire);
    entry.prev = this.#tail;
    if (this.#tail) this.#tail.next = entry;
    else this.#head = entry;
    this.#tail = entry;
    this.#size++;
    this.#timer ??= setInterval(() => this.sweep(), this.periodMs);
    return entry;
  }

  /** @internal Takes a watch out of the list (its own `stop`, or when it fires); once. */
  unlink(e: Entry): void {
    if (!e.watched) return;
    e.watched = false;
    if (e.prev) e.prev.next = e.next;
    else this.#head = e.next;
    if (e.next) e.next.prev = e.prev;
    else this.#tail = e.prev;
    e.prev = e.next = undefined;
    this.#size--;
  }

  /** Whether the sweep timer runs. */
  get ticking(): boolean {
    return this.#timer !== undefined;
  }

  /** How many watches there are. */
  get size(): number {
    return this.#size;
  }

  /**
   * Fires every watch past its limit (run by the timer; public for tests). The timer stops here,
   * at the first sweep that finds nothing watched, rather than when the last watch stops: at
   * concurrency 1 that would start and clear a timer for every request. The expired are found
   * first and fired after, as a callback may stop or start other watches.
   */
  sweep(): void {
    const now = this.now();
    if (this.#size === 0) return this.#idle();
    let expired: Entry[] | undefined;
    for (let e = this.#head; e; e = e.next) {
      if (e.running && now - e.since >= e.limitMs) (expired ??= []).push(e);
    }
    if (!expired) return;
    for (const e of expired) {
      // An earlier callback may have stopped it.
      if (!e.watched) continue;
      this.unlink(e);
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
