/**
 * Log lines written behind: lines are queued and written to the stream in batches, one write
 * per turn of the event loop however many lines came in it (or, with `delayMs`, per that many
 * milliseconds: a write to standard output costs about as much CPU as a small proxied request, so
 * one per request would be a large share of the proxy's cost), and never synchronously. A request
 * therefore never waits for its log line, and a stream that stops taking data (a full pipe, a
 * stuck terminal) costs a bounded buffer, whose overflow is dropped and counted, instead of
 * stalling the coordinator. What is queued when the process exits is written synchronously.
 */

/** Where lines go: standard output or error, or anything alike (tests). */
export interface LineSink {
  write(bytes: Uint8Array): Promise<number>;
  writeSync(bytes: Uint8Array): number;
}

const encoder = new TextEncoder();

/** See the module documentation. */
export class LineWriter {
  readonly #sink: LineSink;
  readonly #maxChars: number;
  #queue: string[] = [];
  #chars = 0;
  #writing: Promise<void> | undefined;
  readonly #delayMs: number;
  /** Ends the wait of a drain that waits for `delayMs` (a flush does not wait for it). */
  #wake: (() => void) | undefined;
  /** Lines dropped because the sink did not keep up. */
  dropped = 0;
  #droppedSeen = 0;

  constructor(sink: LineSink, options: { maxChars?: number; delayMs?: number } = {}) {
    this.#sink = sink;
    this.#maxChars = options.maxChars ?? 4 * 1024 * 1024;
    this.#delayMs = options.delayMs ?? 0;
  }

  /** Queues one line (without its newline). */
  write(line: string): void {
    if (this.#chars + line.length > this.#maxChars) {
      this.dropped++;
      return;
    }
    this.#queue.push(line);
    this.#chars += line.length + 1;
    this.#writing ??= this.#drain();
  }

  async #drain(): Promise<void> {
    // Lines written in the same turn of the event loop (or within `delayMs`) go out together.
    if (this.#delayMs > 0) await this.#wait();
    else await Promise.resolve();
    try {
      while (this.#queue.length > 0) {
        if (this.dropped > this.#droppedSeen) {
          this.#queue.unshift(
            `${this.dropped - this.#droppedSeen} log lines dropped: output was not taken`,
          );
          this.#droppedSeen = this.dropped;
        }
        const bytes = encoder.encode(this.#queue.join("\n") + "\n");
        this.#queue = [];
        this.#chars = 0;
        let at = 0;
        while (at < bytes.length) at += await this.#sink.write(bytes.subarray(at));
      }
    } catch {
      // The stream is gone (closed pipe): nothing more can be said.
      this.#queue = [];
      this.#chars = 0;
    } finally {
      this.#writing = undefined;
    }
  }

  /**
   * Waits `delayMs`, or until a flush. The timer does not keep the process alive: what is queued
   * at exit is written by {@linkcode flushSync}.
   */
  #wait(): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => this.#wake?.(), this.#delayMs);
      Deno.unrefTimer(timer);
      this.#wake = () => {
        clearTimeout(timer);
        this.#wake = undefined;
        resolve();
      };
    });
  }

  /** Resolves once every queued line was written. */
  async flush(): Promise<void> {
    this.#wake?.();
    while (this.#writing) await this.#writing;
  }

  /** Writes what is queued synchronously (at exit, when nothing can be awaited). */
  flushSync(): void {
    if (this.#queue.length === 0) return;
    const bytes = encoder.encode(this.#queue.join("\n") + "\n");
    this.#queue = [];
    this.#chars = 0;
    try {
      let at = 0;
      while (at < bytes.length) at += this.#sink.writeSync(bytes.subarray(at));
    } catch { /* the stream is gone */ }
  }
}
