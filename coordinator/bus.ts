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
  #subs = new Set<(m: BusMessage) => void>();

  /** Subscribes; returns the function that unsubscribes. */
  subscribe(fn: (m: BusMessage) => void): () => void {
    this.#subs.add(fn);
    return () => this.#subs.delete(fn);
  }

  /** Delivers `m` to every subscriber. */
  publish(m: BusMessage): void {
    for (const fn of this.#subs) {
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
