/**
 * Fair admission between API keys in the scheduler's queues: whose waiting request gets the next
 * free slot, and who may take a place in a full queue.
 *
 * Turns are weighted fair queueing by start tags (start-time fair queueing): each key has a
 * virtual finish time that grows by 1 / weight with every slot it is given, and the queue serves
 * the key with the smallest tag first, first come first served within a key. Two busy keys of
 * weights 1 and 3 get slots 1 : 3. A key coming back from idle starts at most `burst` behind the
 * virtual time of the last slot given (as Linux's CFS places a task waking from sleep a little
 * behind the others): a light key's short burst goes ahead of a flood's backlog, while a key
 * that keeps the queue busy never collects that credit. Requests without a key count as one key.
 *
 * Places: a queue that is not full takes anyone. In a full queue each key with waiting requests
 * (and the one asking) is entitled to its weighted share of the places; a key under its share
 * takes the place of the newest request of the key most over its share (that request gets 429),
 * a key at or over its share is refused at once with 429, and a queue that one key fills alone
 * refuses with 503 as before. So a flood holds every place only while nobody else waits.
 */

/** The key of requests made without an API key. */
const NO_KEY = "";

/** Tags closer than this are a tie (floating-point sums of 1 / weight). */
const TIE = 1e-9;

/** Turns a key back from idle may take ahead of busy keys of the same weight. */
export const DEFAULT_BURST = 8;

/** Options of {@linkcode FairShare}. */
export interface FairOptions {
  /** A key's weight (its share against other keys); 1 when not given or not positive. */
  weightOf?: (tenant: string) => number;
  /** See {@linkcode DEFAULT_BURST}. */
  burst?: number;
}

/** What a full queue does with a new request. */
export type FullQueueVerdict =
  /** Take it in place of the newest waiting request of `victim`. */
  | { kind: "push_out"; victim: string | undefined; places: number }
  /** Refuse it with 429: its key holds its share (`places`) already. */
  | { kind: "over_share"; places: number }
  /** Refuse it with 503: the queue is full and no other key is over its share. */
  | { kind: "full" };

/** Turn order and shares of places between API keys (see the module documentation). */
export class FairShare {
  readonly #weightOf: (tenant: string) => number;
  readonly #burst: number;
  /** Start tag of the last slot given. */
  #vtime = 0;
  /** Each key's virtual finish time. */
  readonly #finish = new Map<string, number>();
  /** Slots given since idle keys were last swept out of {@linkcode #finish}. */
  #sinceSweep = 0;

  constructor(options: FairOptions = {}) {
    this.#weightOf = options.weightOf ?? (() => 1);
    this.#burst = options.burst ?? DEFAULT_BURST;
  }

  /** A key's weight (positive). */
  weight(tenant: string | undefined): number {
    if (tenant === undefined) return 1;
    const w = this.#weightOf(tenant);
    return w > 0 && Number.isFinite(w) ? w : 1;
  }

  /** The tag the next request of `tenant` is served by: smaller goes first. */
  tag(tenant: string | undefined): number {
    const finish = this.#finish.get(tenant ?? NO_KEY) ?? -Infinity;
    return Math.max(finish, this.#vtime - this.#burst);
  }

  /** Records that a request of `tenant` was given a slot. */
  served(tenant: string | undefined): void {
    const start = this.tag(tenant);
    if (start > this.#vtime) this.#vtime = start;
    this.#finish.set(tenant ?? NO_KEY, start + 1 / this.weight(tenant));
    if (++this.#sinceSweep >= Math.max(64, this.#finish.size)) this.#forgetIdle();
  }

  /**
   * Drops keys whose finish time the idle credit already covers: their tag is `vtime - burst`
   * with or without an entry, and `vtime` only grows, so nothing changes but the map's size
   * (revoked keys and keys idle for long would otherwise stay forever). A sweep comes after as
   * many slots as keys are remembered, so it costs O(1) per slot given.
   */
  #forgetIdle(): void {
    this.#sinceSweep = 0;
    const floor = this.#vtime - this.#burst;
    for (const [k, finish] of this.#finish) if (finish <= floor) this.#finish.delete(k);
  }

  /** Keys whose turns are remembered (the others start from the idle credit). */
  get remembered(): number {
    return this.#finish.size;
  }

  /** `items` in the order they get free slots: by their key's tag, then as they came. */
  order<T>(items: readonly T[], tenantOf: (item: T) => string | undefined): T[] {
    const tags = new Map<string | undefined, number>();
    const keyed = items.map((item, i) => {
      const tenant = tenantOf(item);
      let t = tags.get(tenant);
      if (t === undefined) tags.set(tenant, t = this.tag(tenant));
      return { item, i, t };
    });
    // One key, or none: the queue is first come, first served.
    if (tags.size <= 1) return [...items];
    // Tags within TIE of each other are equal: sums of 1/3 must tie with whole turns.
    return keyed.sort((a, b) => (Math.abs(a.t - b.t) > TIE ? a.t - b.t : a.i - b.i))
      .map((x) => x.item);
  }

  /** The weighted share of `max` places of each key in `counts` and of `tenant`. */
  shares(counts: ReadonlyMap<string | undefined, number>, tenant: string | undefined, max: number) {
    let total = 0;
    for (const k of counts.keys()) total += this.weight(k);
    if (!counts.has(tenant)) total += this.weight(tenant);
    return (k: string | undefined) => Math.max(1, Math.floor((max * this.weight(k)) / total));
  }

  /** What a full queue (`queued`: the key of each waiting request) does with one of `tenant`. */
  whenFull(
    queued: readonly (string | undefined)[],
    tenant: string | undefined,
    max: number,
  ): FullQueueVerdict {
    const counts = new Map<string | undefined, number>();
    for (const k of queued) counts.set(k, (counts.get(k) ?? 0) + 1);
    if (counts.size === 0 || (counts.size === 1 && counts.has(tenant))) return { kind: "full" };
    const share = this.shares(counts, tenant, max);
    const places = share(tenant);
    if ((counts.get(tenant) ?? 0) >= places) return { kind: "over_share", places };
    let victim: string | undefined;
    let worst = 1;
    let found = false;
    for (const [k, n] of counts) {
      if (k === tenant) continue;
      const over = n / share(k);
      if (over > worst) {
        worst = over;
        victim = k;
        found = true;
      }
    }
    return found ? { kind: "push_out", victim, places: share(victim) } : { kind: "full" };
  }
}
