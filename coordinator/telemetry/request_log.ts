/**
 * The request log: every client request, published at once for live views and written to the
 * store in batches behind the request (never on its path), pruned by the retention job.
 */
import type { Bus } from "./bus.ts";
import type { RequestQuery, RequestRecord, Store } from "../store/mod.ts";
import { WriteBehind, type WriteCounts } from "../store/write_behind.ts";

export type { RequestQuery, RequestRecord };

/** Buffers request records and writes them to the store in batches. */
export class RequestLog {
  readonly #store: Store;
  readonly #bus?: Bus;
  readonly #writes: WriteBehind<RequestRecord, void>;

  constructor(store: Store, options: { bus?: Bus; flushMs?: number; maxBuffered?: number } = {}) {
    this.#store = store;
    this.#bus = options.bus;
    this.#writes = new WriteBehind({
      what: "request log",
      write: async (batch) => {
        await store.addRequests(batch);
        return [];
      },
      delayMs: options.flushMs ?? 250,
      // Small batches: even in the worker, one transaction should not hold the file for long.
      batchSize: 200,
      maxBuffered: options.maxBuffered ?? 50_000,
    });
  }

  /** Adds a record; it is written with the next batch. */
  add(r: RequestRecord): void {
    this.#writes.add(r);
    this.#bus?.publish({ type: "request", request: r as unknown as Record<string, unknown> });
  }

  /** Writes everything buffered now (resolves when written or kept for a retry). */
  flush(): Promise<void> {
    return this.#writes.flush();
  }

  /** Records waiting to be written, written and dropped (the store was away too long). */
  get counts(): WriteCounts {
    return this.#writes.counts;
  }

  /** Recent records, newest first (writes what is buffered first so the answer is complete). */
  async query(q: RequestQuery = {}): Promise<RequestRecord[]> {
    await this.flush();
    return await this.#store.requests(q);
  }

  /** Writes what is buffered and takes no more records. */
  close(): Promise<void> {
    return this.#writes.close();
  }
}
