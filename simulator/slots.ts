/**
 * Parallel slots per model and one queue over all models, like OLLAMA_NUM_PARALLEL and
 * OLLAMA_MAX_QUEUE: past both, a request is refused with Ollama's 503 message.
 *
 * @module
 */

/** Thrown when every slot is taken and the queue is full (or the `busy` fault is on). */
export class BusyError extends Error {
  constructor() {
    super("server busy, please try again.  maximum pending requests exceeded");
  }
}

interface Waiter {
  key: string;
  grant: () => void;
}

/** Slots per model (`parallel`) and a FIFO queue over all models (`maxQueue`). */
export class SlotPool {
  #active = new Map<string, number>();
  #waiting: Waiter[] = [];
  /** `limits` is read at every decision, so a changed setting applies at once. */
  constructor(readonly limits: () => { parallel: number; maxQueue: number }) {}

  /** Requests waiting for a slot now. */
  get queued(): number {
    return this.#waiting.length;
  }

  /** Resolves with a release function; throws BusyError, or the signal's reason on abort. */
  acquire(key: string, signal: AbortSignal): Promise<() => void> {
    signal.throwIfAborted();
    const { parallel, maxQueue } = this.limits();
    if ((this.#active.get(key) ?? 0) < parallel) {
      return Promise.resolve(this.#take(key));
    }
    if (this.#waiting.length >= maxQueue) {
      return Promise.reject(new BusyError());
    }
    return new Promise((resolve, reject) => {
      const waiter: Waiter = {
        key,
        grant: () => {
          signal.removeEventListener("abort", onAbort);
          resolve(this.#take(key));
        },
      };
      const onAbort = () => {
        this.#waiting.splice(this.#waiting.indexOf(waiter), 1);
        reject(signal.reason);
      };
      signal.addEventListener("abort", onAbort, { once: true });
      this.#waiting.push(waiter);
    });
  }

  /** Grants waiting requests whose model has a free slot, in arrival order. */
  pump(): void {
    const { parallel } = this.limits();
    for (let i = 0; i < this.#waiting.length;) {
      const w = this.#waiting[i];
      if ((this.#active.get(w.key) ?? 0) < parallel) {
        this.#waiting.splice(i, 1);
        w.grant();
      } else i++;
    }
  }

  #take(key: string): () => void {
    this.#active.set(key, (this.#active.get(key) ?? 0) + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.#active.set(key, this.#active.get(key)! - 1);
      this.pump();
    };
  }
}
