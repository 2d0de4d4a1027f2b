/**
 * The coordinator's in-process event bus: the registry, the proxy and the request log publish;
 * the dashboard's live stream and the metrics subscribe. Delivery is synchronous and a failing
 * subscriber never breaks the publisher.
 */
import type { FleetEvent } from "../store/mod.ts";

export type { FleetEvent };

/**
 * What flows on the bus. An agent's change carries only its id: a subscriber reads the agent from
 * the registry when it needs it (the live stream does so once per flush, however many heartbeats
 * came in between).
 */
export type BusMessage =
  | { type: "agent"; id: string }
  | { type: "agent_removed"; id: string }
  | { type: "event"; event: FleetEvent }
  | { type: "request"; request: Record<string, unknown> }
  | { type: "progress"; progress: Record<string, unknown> };

/** A minimal publish/subscribe hub. */
export class Bus {
  #subs = new Map<(m: BusMessage) => void, ReadonlySet<BusMessage["type"]> | null>();
  /** Subscribers per type, and those to every type: {@linkcode wants} on every heartbeat. */
  #counts = new Map<BusMessage["type"], number>();
  #all = 0;

  /**
   * Subscribes to every message, or only to the given types; returns the function that
   * unsubscribes.
   */
  subscribe(fn: (m: BusMessage) => void, types?: BusMessage["type"][]): () => void {
    this.#remove(fn);
    const set = types ? new Set(types) : null;
    this.#subs.set(fn, set);
    this.#count(set, 1);
    return () => this.#remove(fn);
  }

  #remove(fn: (m: BusMessage) => void): void {
    if (!this.#subs.has(fn)) return;
    this.#count(this.#subs.get(fn)!, -1);
    this.#subs.delete(fn);
  }

  #count(types: ReadonlySet<BusMessage["type"]> | null, by: 1 | -1): void {
    if (types === null) this.#all += by;
    else for (const t of types) this.#counts.set(t, (this.#counts.get(t) ?? 0) + by);
  }

  /** Whether anyone listens to `type`: lets publishers skip building a message nobody reads. */
  wants(type: BusMessage["type"]): boolean {
    return this.#all > 0 || (this.#counts.get(type) ?? 0) > 0;
  }

  /** Delivers `m` to every subscriber that wants it. */
  publish(m: BusMessage): void {
    for (const [fn, types] of this.#subs) {
      if (types && !types.has(m.type)) continue;
      try {
        fn(m);
      } catch (e) {
        console.error("Bus subscriber failed:", e);
      }
    }
  }

  /** How many subscribers are listening. */
  get size(): number {
    return this.#subs.size;
  }
}
