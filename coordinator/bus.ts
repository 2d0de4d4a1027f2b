/**
 * The coordinator's in-process event bus: the registry, the proxy and the request log publish;
 * the dashboard's live stream and the metrics subscribe. Delivery is synchronous and a failing
 * subscriber never breaks the publisher.
 */
import type { AgentView } from "@oc/shared";

/** A recorded event in an agent's life (registration, status change, failure, …). */
export interface FleetEvent {
  id: number;
  at: string;
  kind: string;
  agent_id: string | null;
  message: string;
}

/** What flows on the bus. */
export type BusMessage =
  | { type: "agent"; agent: AgentView }
  | { type: "agent_removed"; id: string }
  | { type: "event"; event: FleetEvent }
  | { type: "request"; request: Record<string, unknown> }
  | { type: "progress"; progress: Record<string, unknown> };

/** A minimal publish/subscribe hub. */
export class Bus {
  #subs = new Map<(m: BusMessage) => void, ReadonlySet<BusMessage["type"]> | null>();

  /**
   * Subscribes to every message, or only to the given types; returns the function that
   * unsubscribes.
   */
  subscribe(fn: (m: BusMessage) => void, types?: BusMessage["type"][]): () => void {
    this.#subs.set(fn, types ? new Set(types) : null);
    return () => this.#subs.delete(fn);
  }

  /** Whether anyone listens to `type`: lets publishers skip building a message nobody reads. */
  wants(type: BusMessage["type"]): boolean {
    for (const types of this.#subs.values()) if (!types || types.has(type)) return true;
    return false;
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
