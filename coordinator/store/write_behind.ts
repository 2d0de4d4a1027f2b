/**
 * A bounded write-behind buffer for append-only rows (the request log, events): rows are
 * written in batches a moment after they arrive, one batch at a time, and kept for the next try
 * when the store cannot take them. When the buffer is full the oldest rows are dropped, counted
 * and logged, so a database that stays away costs bounded memory, never the process.
 */
import { StoreError } from "./mod.ts";

/** Options for {@linkcode WriteBehind}. */
export interface WriteBehindOptions<T, R> {
  /** Writes one batch; resolves with what the caller should see of the rows (ids, …). */
  write(batch: T[]): Promise<R[]>;
  /** Called with the stored rows, in order, after each successful write. */
  onWritten?(rows: R[]): void;
  /** What the rows are, for log lines ("request log", "events"). */
  what: string;
  /** Milliseconds between a row's arrival and its batch's write. */
  delayMs?: number;
  /** A batch is written at once when this many rows wait. */
  batchSize?: number;
  /** Rows kept while the store is unavailable; older ones are dropped beyond it. */
  maxBuffered?: number;
  /** Milliseconds before retrying after a failed write. */
  retryMs?: number;
  /** Where the buffer's troubles are told (console.error by default). */
  log?: (line: string) => void;
}

/** What a write-behind buffer has done so far. */
export interface WriteCounts {
  buffered: number;
  written: number;
  dropped: number;
}

/** See the module documentation. */
export class WriteBehind<T, R = T> {
  readonly #o: Required<Omit<WriteBehindOptions<T, R>, "onWritten">> & WriteBehindOptions<T, R>;
  #pending: T[] = [];
  #timer: ReturnType<typeof setTimeout> | undefined;
  #writing: Promise<void> | undefined;
  /** The one run that flushes asked for during a write share. */
  #next: Promise<void> | undefined;
  #failing = false;
  #closed = false;
  /** `dropped` when the buffer last started dropping rows, until it has room again. */
  #droppedBefore: number | undefined;
  /** Rows dropped because the buffer was full while the store was unavailable. */
  dropped = 0;
  /** Rows written since start. */
  written = 0;

  constructor(options: WriteBehindOptions<T, R>) {
    this.#o = {
      delayMs: 250,
      batchSize: 500,
      maxBuffered: 50_000,
      retryMs: 1000,
      log: (line) => console.error(line),
      ...options,
    };
  }

  /** Rows waiting to be written. */
  get buffered(): number {
    return this.#pending.length;
  }

  /** Rows waiting, written since start and dropped, as the logs' `counts` and `/metrics` show them. */
  get counts(): WriteCounts {
    return { buffered: this.#pending.length, written: this.written, dropped: this.dropped };
  }

  /** Queues a row. */
  add(row: T): void {
    if (this.#closed) return;
    this.#pending.push(row);
    if (this.#pending.length > this.#o.maxBuffered) {
      const excess = this.#pending.length - this.#o.maxBuffered;
      this.#pending.splice(0, excess);
      if (this.#droppedBefore === undefined) {
        this.#droppedBefore = this.dropped;
        this.#o.log(
          `The ${this.#o.what} buffer is full (${this.#o.maxBuffered} rows): dropping the oldest`,
        );
      }
      this.dropped += excess;
    }
    // A write in progress goes on with full batches of the rows that came meanwhile (the rest
    // waits for the timer); a store that is failing is tried again on the retry timer, not once
    // per row that arrives.
    if (this.#pending.length >= this.#o.batchSize && !this.#failing && !this.#writing) {
      void this.#flush(false);
    } else this.#schedule(this.#failing ? this.#o.retryMs : this.#o.delayMs);
  }

  #schedule(ms: number): void {
    if (this.#timer !== undefined || this.#closed) return;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      void this.#flush(false);
    }, ms);
  }

  /**
   * Writes what is buffered, batch by batch; resolves when the buffer is empty or a write failed
   * (the rows then stay for the next try). Never rejects. One write at a time, in order: flushes
   * asked for during a write share one run after it, however many they are.
   */
  flush(): Promise<void> {
    return this.#flush(true);
  }

  /** `all`: write until the buffer is empty; else see {@linkcode WriteBehind.#run}. */
  #flush(all: boolean): Promise<void> {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    if (this.#writing) {
      if (!all) {
        // The write in progress goes on with full batches; the rest is for the timer.
        this.#schedule(this.#o.delayMs);
        return this.#writing;
      }
      this.#next ??= this.#writing.then(() => {
        this.#next = undefined;
        return this.flush();
      });
      return this.#next;
    }
    const settled = this.#run(all).finally(() => this.#writing = undefined);
    this.#writing = settled;
    return settled;
  }

  /**
   * Writes batches: with `all`, until the buffer is empty; else (the timer, a full batch) the
   * rows waiting when it starts, then only full batches. Rows that come during a write and fill
   * no batch wait for the timer: written at once, a steady stream went out in one small batch
   * per round trip to the store (about 40 rows at 1,200 requests/s) instead of full ones.
   */
  async #run(all: boolean): Promise<void> {
    let owed = this.#pending.length;
    while (
      this.#pending.length > 0 &&
      (all || owed > 0 || this.#pending.length >= this.#o.batchSize)
    ) {
      const batch = this.#pending.slice(0, this.#o.batchSize);
      let rows: R[];
      try {
        rows = await this.#o.write(batch);
      } catch (e) {
        if (!this.#failing) {
          const why = e instanceof StoreError ? e.message : String(e);
          this.#o.log(`Cannot write the ${this.#o.what}, keeping it to retry: ${why}`);
        }
        this.#failing = true;
        this.#schedule(this.#o.retryMs);
        return;
      }
      // Rows added meanwhile went after the batch; dropping the oldest may have eaten into it.
      const dropped = this.#pending.indexOf(batch[batch.length - 1]) + 1;
      this.#pending.splice(0, dropped);
      this.written += batch.length;
      owed -= batch.length;
      if (this.#failing) {
        this.#failing = false;
        this.#o.log(`The ${this.#o.what} is written again`);
      }
      // Told once the buffer is half empty, so a buffer that stays about full (a database slower
      // than the traffic) is not told of with every batch.
      if (this.#droppedBefore !== undefined && this.#pending.length <= this.#o.maxBuffered / 2) {
        this.#o.log(
          `The ${this.#o.what} buffer has room again: ${
            this.dropped - this.#droppedBefore
          } rows were dropped`,
        );
        this.#droppedBefore = undefined;
      }
      this.#o.onWritten?.(rows);
    }
    if (this.#pending.length > 0) this.#schedule(this.#o.delayMs);
  }

  /** Writes what is buffered and takes no more rows. */
  async close(): Promise<void> {
    await this.flush();
    this.#closed = true;
    clearTimeout(this.#timer);
    this.#timer = undefined;
  }
}
