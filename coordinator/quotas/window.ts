/**
 * A sliding one-minute window of counts in one-second slots: what a key used in the last 60 s,
 * and how long until enough of it has aged out. Sixty slots per key, no allocation per count.
 */

const SLOTS = 60;

/** Counts over the last minute, one slot per second. */
export class MinuteWindow {
  readonly #counts = new Float64Array(SLOTS);
  /** The second (epoch seconds) each slot holds; a slot from an older minute counts as empty. */
  readonly #seconds = new Float64Array(SLOTS).fill(-Infinity);

  /** Adds `n` at `now` (epoch ms). */
  add(now: number, n = 1): void {
    const second = Math.floor(now / 1000);
    const i = second % SLOTS;
    if (this.#seconds[i] !== second) {
      this.#seconds[i] = second;
      this.#counts[i] = 0;
    }
    this.#counts[i] += n;
  }

  /** Takes back `n` added at `at` (epoch ms), if that second is still in the window. */
  remove(at: number, n = 1): void {
    const second = Math.floor(at / 1000);
    const i = second % SLOTS;
    if (this.#seconds[i] === second) this.#counts[i] = Math.max(0, this.#counts[i] - n);
  }

  /** The sum over the last 60 seconds, this one included. */
  total(now: number): number {
    const oldest = Math.floor(now / 1000) - SLOTS + 1;
    let sum = 0;
    for (let i = 0; i < SLOTS; i++) if (this.#seconds[i] >= oldest) sum += this.#counts[i];
    return sum;
  }

  /**
   * Whole seconds from `now` until the sum is below `limit` again (at least 1): the oldest
   * seconds age out first.
   */
  retryAfter(now: number, limit: number): number {
    const second = Math.floor(now / 1000);
    let left = this.total(now);
    for (let s = second - SLOTS + 1; s <= second && left >= limit; s++) {
      const i = ((s % SLOTS) + SLOTS) % SLOTS;
      if (this.#seconds[i] === s) left -= this.#counts[i];
      // The count of second `s` stops counting when second s + 60 begins.
      if (left < limit) return Math.max(1, Math.ceil(((s + SLOTS) * 1000 - now) / 1000));
    }
    return left < limit ? 1 : SLOTS;
  }
}
