/**
 * A bound on expensive work: at most `concurrency` tasks run at once and at most `queue` wait
 * for a turn; any more are turned away at once, so a flood costs the caller nothing but a refusal.
 */

/** Options of {@linkcode Gate}. */
export interface GateOptions {
  /** Tasks that may run at once (at least 1). */
  concurrency: number;
  /** Tasks that may wait for a turn (0: none wait). */
  queue: number;
}

/** Runs tasks with bounded concurrency and a bounded waiting line. */
export class Gate {
  readonly #concurrency: number;
  readonly #queue: number;
  readonly #waiting: (() => void)[] = [];
  #running = 0;

  constructor(options: GateOptions) {
    if (!(options.concurrency >= 1)) throw new RangeError("Cannot create gate: concurrency < 1");
    this.#concurrency = options.concurrency;
    this.#queue = Math.max(0, options.queue);
  }

  /** Tasks running now. */
  get running(): number {
    return this.#running;
  }

  /** Tasks waiting for a turn. */
  get waiting(): number {
    return this.#waiting.length;
  }

  /** Whether a task offered now would be turned away. */
  get full(): boolean {
    return this.#running >= this.#concurrency && this.#waiting.length >= this.#queue;
  }

  /**
   * Runs `task` when a turn is free. Returns undefined at once, without running it, when every
   * turn is taken and the waiting line is full.
   */
  run<T>(task: () => Promise<T>): Promise<T> | undefined {
    if (this.#running < this.#concurrency) {
      this.#running++;
      return this.#execute(task);
    }
    if (this.#waiting.length >= this.#queue) return undefined;
    return new Promise<void>((resolve) => this.#waiting.push(resolve)).then(() =>
      this.#execute(task)
    );
  }

  async #execute<T>(task: () => Promise<T>): Promise<T> {
    try {
      return await task();
    } finally {
      // The turn passes straight to the next in line, so no newcomer can slip in between.
      const next = this.#waiting.shift();
      if (next) next();
      else this.#running--;
    }
  }
}
