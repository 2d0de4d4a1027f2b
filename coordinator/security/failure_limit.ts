/**
 * Limits on failed attempts at a secret (the admin password, the agent token): per client, with
 * IPv6 clients counted by their /64, and across all clients together, so neither one address nor
 * a crowd of them can keep guessing. An attempt counts from the moment it starts, so concurrent
 * guesses from one client cannot overtake the count.
 */
import { limitKey } from "./networks.ts";

/** Options of {@linkcode FailureLimit}. */
export interface FailureLimitOptions {
  /** Failures one client may have within `clientWindowMs`. */
  perClient: number;
  /** How long a client's failures count, from its first one. */
  clientWindowMs: number;
  /** Failures all clients together may have within `globalWindowMs`. */
  global: number;
  /** How long failures count towards the global budget, from the first one. */
  globalWindowMs: number;
  /** Clock, injectable for tests. */
  now?: () => number;
  /** Clients remembered at most; the oldest is forgotten first. */
  maxClients?: number;
}

/** An attempt under way: it ends as a pass, a failure, or not counted at all. */
export interface Attempt {
  /** The secret was right: the client's failures are forgotten. */
  pass(): void;
  /** The secret was wrong: the attempt stays counted. */
  fail(): void;
  /** The attempt never got to the check (a bad form, a busy server): it does not count. */
  cancel(): void;
}

/** Whether an attempt may go ahead, or how many seconds to wait and which limit was reached. */
export type Admission =
  | { ok: true; attempt: Attempt }
  | { ok: false; retryAfter: number; scope: "client" | "global" };

interface Window {
  count: number;
  until: number;
}

/** Counts failed attempts per client and globally, in windows that start at the first one. */
export class FailureLimit {
  readonly #options: Required<FailureLimitOptions>;
  readonly #clients = new Map<string, Window>();
  #global: Window = { count: 0, until: 0 };

  constructor(options: FailureLimitOptions) {
    this.#options = { now: Date.now, maxClients: 10_000, ...options };
  }

  /**
   * Whether an attempt from `address` would be refused now, without counting one: lets a caller
   * turn a client away before it does any work for it.
   */
  check(address: string): Extract<Admission, { ok: false }> | undefined {
    const now = this.#options.now();
    const client = this.#clients.get(limitKey(address));
    if (client && client.until > now && client.count >= this.#options.perClient) {
      return { ok: false, retryAfter: secondsUntil(client.until, now), scope: "client" };
    }
    const all = this.#global;
    if (all.until > now && all.count >= this.#options.global) {
      return { ok: false, retryAfter: secondsUntil(all.until, now), scope: "global" };
    }
    return undefined;
  }

  /** Starts an attempt from `address`, or says how long the client (or everyone) must wait. */
  begin(address: string): Admission {
    const { now: clock, maxClients } = this.#options;
    const refused = this.check(address);
    if (refused) return refused;
    const now = clock();
    const key = limitKey(address);
    let client = this.#clients.get(key);
    if (client && client.until <= now) client = undefined;
    if (this.#global.until <= now) {
      this.#global = { count: 0, until: now + this.#options.globalWindowMs };
    }
    const all = this.#global;
    if (!client) {
      client = { count: 0, until: now + this.#options.clientWindowMs };
      this.#clients.delete(key);
      this.#clients.set(key, client);
      if (this.#clients.size > maxClients) this.#clients.delete(this.#clients.keys().next().value!);
    }
    client.count++;
    all.count++;
    const mine = client;
    let settled = false;
    const uncount = () => {
      if (settled) return false;
      settled = true;
      mine.count--;
      all.count--;
      return true;
    };
    return {
      ok: true,
      attempt: {
        pass: () => {
          if (uncount() && this.#clients.get(key) === mine) this.#clients.delete(key);
        },
        fail: () => {
          settled = true;
        },
        cancel: () => void uncount(),
      },
    };
  }
}

function secondsUntil(until: number, now: number): number {
  return Math.max(1, Math.ceil((until - now) / 1000));
}
