/**
 * Requests in flight across coordinators: each tells the others, coalesced, how many requests it
 * has on each agent per model (at most every 50 ms when they change, and every second anyway),
 * so `smart` and `least_connections` weigh the load the others put on an agent too. A
 * coordinator that goes silent for 3 s no longer counts.
 */
import type { Registry } from "../fleet/registry.ts";
import type { ClusterMessage, StoreCluster } from "../store/mod.ts";

type LoadMessage = Extract<ClusterMessage, { t: "load" }>;
type Snapshot = Record<string, Record<string, number>>;

/** Largest payload of one message (PostgreSQL's NOTIFY takes under 8,000 bytes). */
const MAX_CHUNK_BYTES = 6000;
/** A coordinator not heard from for this long no longer counts. */
const EXPIRE_MS = 3000;
/**
 * How often a changed load is sent. Requests last a few hundred milliseconds: at 250 ms the others
 * saw a burst too late and sent it to the agent this one had just filled (smart's p95 through two
 * coordinators was 1.33× one's in `bench:lb --coordinators 2`).
 */
const SEND_EVERY_MS = 50;

/** Splits a snapshot into messages small enough to send. */
export function chunkSnapshot(seq: number, snapshot: Snapshot): LoadMessage[] {
  const chunks: Snapshot[] = [];
  let current: Snapshot = {};
  let size = 0;
  for (const [agent, models] of Object.entries(snapshot)) {
    const entry = JSON.stringify(models).length + agent.length + 6;
    if (size + entry > MAX_CHUNK_BYTES && size > 0) {
      chunks.push(current);
      current = {};
      size = 0;
    }
    current[agent] = models;
    size += entry;
  }
  chunks.push(current);
  return chunks.map((a, i) => ({ t: "load", s: seq, i, n: chunks.length, a }));
}

/** See the module documentation. */
export class ClusterLoad {
  readonly #registry: Registry;
  readonly #cluster: StoreCluster;
  readonly #now: () => number;
  readonly #changed: () => void;
  /** Per other coordinator: its last complete snapshot and when it was heard from. */
  readonly #others = new Map<string, { at: number; load: Snapshot }>();
  /** Snapshots still arriving in chunks, per coordinator. */
  readonly #partial = new Map<string, { s: number; chunks: Snapshot[]; got: number }>();
  #seq = 0;
  #lastSent = "";
  #lastSentAt = 0;

  constructor(
    registry: Registry,
    cluster: StoreCluster,
    options: { now?: () => number; changed?: () => void } = {},
  ) {
    this.#registry = registry;
    this.#cluster = cluster;
    this.#now = options.now ?? Date.now;
    this.#changed = options.changed ?? (() => {});
  }

  /** This coordinator's own requests in flight, per agent and model. */
  #local(): Snapshot {
    const out: Snapshot = {};
    for (const a of this.#registry.all()) {
      if (a.inFlight > 0) out[a.id] = Object.fromEntries(a.inFlightByModel);
    }
    return out;
  }

  /** Sends this coordinator's load when it changed, or a second after the last time. */
  async tick(): Promise<void> {
    const now = this.#now();
    const local = this.#local();
    const text = JSON.stringify(local);
    if (text !== this.#lastSent || now - this.#lastSentAt >= 1000) {
      this.#lastSent = text;
      this.#lastSentAt = now;
      const seq = ++this.#seq;
      for (const m of chunkSnapshot(seq, local)) await this.#cluster.publish(m);
    }
    this.#expire(now);
  }

  /** Other coordinators heard from in the last 3 s (each tells its load every second). */
  get peers(): number {
    return this.#others.size;
  }

  /** Applies another coordinator's load message. */
  receive(from: string, m: LoadMessage): void {
    let p = this.#partial.get(from);
    if (!p || p.s !== m.s) {
      p = { s: m.s, chunks: new Array(m.n), got: 0 };
      this.#partial.set(from, p);
    }
    if (p.chunks[m.i] === undefined) {
      p.chunks[m.i] = m.a;
      p.got++;
    }
    if (p.got < m.n) return;
    this.#partial.delete(from);
    this.#others.set(from, { at: this.#now(), load: Object.assign({}, ...p.chunks) });
    this.#recount();
  }

  #expire(now: number): void {
    let gone = false;
    for (const [id, o] of this.#others) {
      if (now - o.at > EXPIRE_MS) {
        this.#others.delete(id);
        this.#partial.delete(id);
        gone = true;
      }
    }
    if (gone) this.#recount();
  }

  /** Sums the others' loads onto the agents. */
  #recount(): void {
    for (const a of this.#registry.all()) {
      a.remoteInFlight = 0;
      if (a.remoteInFlightByModel.size) a.remoteInFlightByModel.clear();
    }
    for (const { load } of this.#others.values()) {
      for (const [agentId, models] of Object.entries(load)) {
        const a = this.#registry.get(agentId);
        if (!a) continue;
        for (const [key, n] of Object.entries(models)) {
          a.remoteInFlight += n;
          a.remoteInFlightByModel.set(key, (a.remoteInFlightByModel.get(key) ?? 0) + n);
        }
      }
    }
    this.#changed();
  }

  /** Starts sending (every {@linkcode SEND_EVERY_MS} when changed); returns the function that stops. */
  start(): () => void {
    let running = false;
    const timer = setInterval(() => {
      if (running) return;
      running = true;
      this.tick().catch(() => {}).finally(() => running = false);
    }, SEND_EVERY_MS);
    Deno.unrefTimer(timer);
    return () => clearInterval(timer);
  }
}
