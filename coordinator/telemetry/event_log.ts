/**
 * The fleet's events (registrations, status changes, failures, pulls, sign-ins): written to the
 * store in small batches behind whatever caused them, then published on the bus with the id the
 * store gave them, so the live dashboard and the events API agree on ids.
 */
import type { Bus } from "./bus.ts";
import type { EventQuery, FleetEvent, NewEvent, Store } from "../store/mod.ts";
import { WriteBehind, type WriteCounts } from "../store/write_behind.ts";

export type { EventQuery, FleetEvent };

/** See the module documentation. */
export class EventLog {
  readonly #store: Store;
  readonly #now: () => number;
  readonly #writes: WriteBehind<NewEvent, FleetEvent>;
  /** Ids of the events written here lately, so another coordinator's feed does not repeat them. */
  readonly #own = new Set<number>();

  constructor(store: Store, options: { bus?: Bus; now?: () => number; flushMs?: number } = {}) {
    this.#store = store;
    this.#now = options.now ?? Date.now;
    const bus = options.bus;
    this.#writes = new WriteBehind({
      what: "event log",
      write: (batch) => store.addEvents(batch),
      onWritten: (events) => {
        for (const event of events) {
          this.#own.add(event.id);
          bus?.publish({ type: "event", event });
        }
        while (this.#own.size > 10_000) this.#own.delete(this.#own.values().next().value!);
      },
      delayMs: options.flushMs ?? 20,
      batchSize: 200,
      maxBuffered: 10_000,
    });
  }

  /** Records an event; it is stored and published a moment later. */
  record(kind: string, agentId: string | null, message: string): void {
    this.#writes.add({ at: new Date(this.#now()).toISOString(), kind, agent_id: agentId, message });
  }

  /** Whether this coordinator wrote the event with `id` (recently). */
  wrote(id: number): boolean {
    return this.#own.has(id);
  }

  /** Writes what is buffered now. */
  flush(): Promise<void> {
    return this.#writes.flush();
  }

  /** Events waiting to be written, written since start, and dropped (the store stayed away). */
  get counts(): WriteCounts {
    return this.#writes.counts;
  }

  /** The most recent events, newest first (what is buffered is written first). */
  async query(q: EventQuery = {}): Promise<FleetEvent[]> {
    await this.flush();
    return await this.#store.events(q);
  }

  /** Writes what is buffered and takes no more events. */
  close(): Promise<void> {
    return this.#writes.close();
  }
}
