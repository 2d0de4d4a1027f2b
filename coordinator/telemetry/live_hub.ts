/** Tracks the open live streams so a stopping coordinator can end them (they never finish). */
export class LiveHub {
  readonly #closers = new Set<() => void>();

  /** Registers a stream's closer; returns the function that unregisters it. */
  add(close: () => void): () => void {
    this.#closers.add(close);
    return () => this.#closers.delete(close);
  }

  /** Ends every open stream; browsers reconnect (to the next coordinator on this address). */
  close(): void {
    for (const close of [...this.#closers]) close();
    this.#closers.clear();
  }

  /** How many streams are open. */
  get size(): number {
    return this.#closers.size;
  }
}
