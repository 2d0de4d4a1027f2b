/**
 * Per-key quotas: requests per minute, tokens per minute (input + output) and requests in
 * flight, checked before a request is routed. Everything is in memory: a sliding one-minute
 * window per key (`window.ts`) and a count of its requests in flight, so the check costs a few
 * array reads and no store access. A request is admitted while the key is under every limit; its
 * tokens count when it ends (they are only known then), so a key may overshoot its token limit
 * by the requests it had running when it reached it, and then waits until the window frees.
 *
 * Several coordinators: each enforces its share of a limit, the limit divided by the
 * coordinators alive (at least 1), as their load messages tell them. A load balancer that spreads
 * a key's requests evenly gives it about its whole limit; a client pinned to one coordinator
 * gets only that coordinator's share. No count crosses the network, so no coordinator waits on
 * another to admit a request.
 */
import type { KeyLimits } from "../store/mod.ts";
import { MESSAGES } from "../http/messages.ts";
import { MinuteWindow } from "./window.ts";

/** What a request can be refused for. */
export type LimitName = "requests_per_minute" | "tokens_per_minute" | "concurrent" | "queue_share";

/** Every reason, in the order metrics and the dashboard list them. */
export const LIMIT_NAMES: readonly LimitName[] = [
  "requests_per_minute",
  "tokens_per_minute",
  "concurrent",
  "queue_share",
];

/**
 * An admitted request: end it exactly once, with the tokens it used, or refund it when it never
 * reached an agent (a second call of either is ignored).
 */
export interface Ticket {
  readonly ok: true;
  end(tokens: number): void;
  /** Ends it as if it had not been admitted: it leaves the requests-per-minute count too. */
  refund(): void;
}

/** A refused request: the client gets 429 with `Retry-After: retryAfter`. */
export interface Refusal {
  readonly ok: false;
  limit: LimitName;
  /** Whole seconds until the key is under the limit again (a guess for `concurrent`). */
  retryAfter: number;
  message: string;
}

/** One key's counts, as metrics and the dashboard read them. */
export interface KeyCounts {
  inFlight: number;
  /** Requests and tokens in the last minute (this coordinator's). */
  requestsLastMinute: number;
  tokensLastMinute: number;
  /** Requests refused, by reason, since the start. */
  limited: Record<LimitName, number>;
}

/** Options of {@linkcode Quotas}. */
export interface QuotasOptions {
  /** The limits of an API key by id, or undefined for a key that has none (env keys). */
  limitsOf: (tenant: string) => KeyLimits | undefined;
  now?: () => number;
  /** Coordinators sharing the limits, this one included (1 on a store of its own). */
  coordinators?: () => number;
  /**
   * Whether a key still exists (default: always): a revoked key's counts are dropped once its
   * requests have ended, so neither memory nor `/metrics` keeps every key there ever was.
   */
  active?: (tenant: string) => boolean;
}

interface KeyState {
  inFlight: number;
  requests: MinuteWindow;
  tokens: MinuteWindow;
  limited: Record<LimitName, number>;
}

/** Admission for nothing: a request without a key is never limited. */
const FREE: Ticket = { ok: true, end() {}, refund() {} };

/** See the module documentation. */
export class Quotas {
  readonly #limitsOf: (tenant: string) => KeyLimits | undefined;
  readonly #now: () => number;
  #coordinators: () => number;
  readonly #active: (tenant: string) => boolean;
  readonly #keys = new Map<string, KeyState>();

  constructor(options: QuotasOptions) {
    this.#limitsOf = options.limitsOf;
    this.#now = options.now ?? Date.now;
    this.#coordinators = options.coordinators ?? (() => 1);
    this.#active = options.active ?? (() => true);
  }

  #state(tenant: string): KeyState {
    let s = this.#keys.get(tenant);
    if (!s) {
      // Once per key: a good moment to drop the keys revoked since the last one appeared.
      this.#forgetRevoked();
      s = {
        inFlight: 0,
        requests: new MinuteWindow(),
        tokens: new MinuteWindow(),
        limited: { requests_per_minute: 0, tokens_per_minute: 0, concurrent: 0, queue_share: 0 },
      };
      this.#keys.set(tenant, s);
    }
    return s;
  }

  /** Shares every limit between the coordinators `count` tells of (this one included). */
  shareWith(count: () => number): void {
    this.#coordinators = count;
  }

  /** Coordinators the limits are shared between now (this one included). */
  get coordinators(): number {
    return Math.max(1, Math.floor(this.#coordinators()));
  }

  /** This coordinator's share of a limit. */
  #share(limit: number): { share: number; coordinators: number } {
    const coordinators = this.coordinators;
    return { share: Math.max(1, Math.floor(limit / coordinators)), coordinators };
  }

  /** Admits a request of `tenant` (an API key's id) now, or says which limit refuses it. */
  admit(tenant: string | undefined): Ticket | Refusal {
    if (tenant === undefined) return FREE;
    const s = this.#state(tenant);
    const limits = this.#limitsOf(tenant);
    const now = this.#now();
    if (limits) {
      const refusal = this.#check(s, limits, now);
      if (refusal) {
        s.limited[refusal.limit]++;
        return refusal;
      }
    }
    s.inFlight++;
    s.requests.add(now);
    let open = true;
    const close = () => {
      if (!open) return false;
      open = false;
      s.inFlight = Math.max(0, s.inFlight - 1);
      return true;
    };
    return {
      ok: true,
      end: (tokens: number) => {
        if (close() && tokens > 0) s.tokens.add(this.#now(), tokens);
      },
      refund: () => {
        if (close()) s.requests.remove(now);
      },
    };
  }

  #check(s: KeyState, limits: KeyLimits, now: number): Refusal | undefined {
    if (limits.concurrent !== null) {
      const { share, coordinators } = this.#share(limits.concurrent);
      if (s.inFlight >= share) {
        return {
          ok: false,
          limit: "concurrent",
          retryAfter: 1,
          message: MESSAGES.tooManyAtOnce(limits.concurrent, shared(share, coordinators)),
        };
      }
    }
    if (limits.requests_per_minute !== null) {
      const { share, coordinators } = this.#share(limits.requests_per_minute);
      if (s.requests.total(now) >= share) {
        const retryAfter = s.requests.retryAfter(now, share);
        return {
          ok: false,
          limit: "requests_per_minute",
          retryAfter,
          message: MESSAGES.rateLimited(
            `${limits.requests_per_minute} requests per minute${shared(share, coordinators)}`,
            retryAfter,
          ),
        };
      }
    }
    if (limits.tokens_per_minute !== null) {
      const { share, coordinators } = this.#share(limits.tokens_per_minute);
      if (s.tokens.total(now) >= share) {
        const retryAfter = s.tokens.retryAfter(now, share);
        return {
          ok: false,
          limit: "tokens_per_minute",
          retryAfter,
          message: MESSAGES.rateLimited(
            `${limits.tokens_per_minute} tokens per minute${shared(share, coordinators)}`,
            retryAfter,
          ),
        };
      }
    }
    return undefined;
  }

  /** Counts a request of `tenant` the scheduler refused because the key held its share of the queue. */
  queueShareRefused(tenant: string | undefined): void {
    if (tenant !== undefined) this.#state(tenant).limited.queue_share++;
  }

  /** Requests of `tenant` in flight on this coordinator. */
  inFlight(tenant: string): number {
    return this.#keys.get(tenant)?.inFlight ?? 0;
  }

  /** Every key seen since the start and not revoked (or still running requests), with its counts. */
  counts(): Map<string, KeyCounts> {
    this.#forgetRevoked();
    const now = this.#now();
    const out = new Map<string, KeyCounts>();
    for (const [tenant, s] of this.#keys) {
      out.set(tenant, {
        inFlight: s.inFlight,
        requestsLastMinute: s.requests.total(now),
        tokensLastMinute: s.tokens.total(now),
        limited: { ...s.limited },
      });
    }
    return out;
  }

  /** Drops the counts of revoked keys with nothing in flight. */
  #forgetRevoked(): void {
    for (const [tenant, s] of this.#keys) {
      if (s.inFlight === 0 && !this.#active(tenant)) this.#keys.delete(tenant);
    }
  }
}

function shared(share: number, coordinators: number): string {
  return coordinators > 1 ? ` (${share} on each of ${coordinators} coordinators)` : "";
}
