/** One inference request as the proxy sees it, what the proxy needs, and its request-log record. */
import type { AppContext } from "../context.ts";
import type { Flavor } from "../http/errors.ts";
import type { ChunkRewriter } from "./relay.ts";
import type { RequestLog, RequestRecord } from "../telemetry/request_log.ts";
import type { Quotas, Ticket } from "../quotas/mod.ts";

/** Everything the proxy needs to know about one client request. */
export interface ProxyRequest {
  /** Client route, e.g. `/api/chat`. */
  route: string;
  /** Path and query to send upstream. */
  upstreamPath: string;
  method: string;
  headers: Headers;
  /** The client's body, forwarded byte for byte. */
  body: Uint8Array<ArrayBuffer> | null;
  model: string;
  /** Whether the answer streams (NDJSON or SSE). */
  stream: boolean;
  flavor: Flavor;
  /** The coordinator's own id for this request. */
  requestId: string;
  /** The id the client gave the request (`X-Request-Id`), kept beside ours. */
  clientRequestId?: string | null;
  /** Aborted when the client goes away. */
  signal: AbortSignal;
  affinity?: string;
  agentId?: string;
  /** The client's API key id: its quotas, its turns in the queue, its row in the request log. */
  tenant?: string;
  /** Puts the alias the client asked for back in the answer's `model` (the body names the real one). */
  echo?: AnswerRewrite;
}

/** A byte rewrite of the answer (an alias's `ModelEcho`), whole or chunk by chunk. */
export interface AnswerRewrite {
  /** A whole answer rewritten (the same array when nothing changes). */
  whole(bytes: Uint8Array<ArrayBuffer>): Uint8Array<ArrayBuffer>;
  /** A rewriter for one streamed answer. */
  stream(): ChunkRewriter;
}

/** Dependencies of the proxy. */
export interface ProxyDeps extends
  Pick<
    AppContext,
    "scheduler" | "registry" | "config" | "now" | "upstream" | "watchdog" | "instanceId"
  > {
  log?: RequestLog;
  /** Per-key limits; without them nothing is limited. */
  quotas?: Quotas;
}

/** A request's one request-log record: the agents tried so far, written once when it ends. */
export class LogEntry {
  /** When the request arrived (the deps' clock). */
  readonly started: number;
  /** Ids of the agents tried so far. */
  readonly tried: Set<string> = new Set();
  readonly #deps: ProxyDeps;
  readonly #req: ProxyRequest;
  #ticket?: Ticket;

  constructor(deps: ProxyDeps, req: ProxyRequest) {
    this.#deps = deps;
    this.#req = req;
    this.started = deps.now();
  }

  /** Ties the request's quota admission to this record: writing it ends the admission. */
  admitted(ticket: Ticket): void {
    this.#ticket = ticket;
  }

  /**
   * Gives the quota admission back: the request was refused before it reached any agent (no
   * agent, a full queue, the client gone while queued), and refused requests do not count.
   */
  refund(): void {
    this.#ticket?.refund();
  }

  /** Ends the quota admission without a record (the request failed in an unforeseen way). */
  abandon(): void {
    this.#ticket?.end(0);
  }

  /**
   * Writes the record: what is not given is null, the latency and attempts are filled in. The
   * request's tokens count against its key's quota from now on.
   */
  write(r: Ending): void {
    this.#ticket?.end((r.tokens_in ?? 0) + (r.tokens_out ?? 0));
    const log = this.#deps.log;
    if (!log) return;
    const req = this.#req;
    // One literal in one order: every record has the same shape, so the code that reads them
    // (log line, metrics, live charts, the store) stays monomorphic.
    log.add({
      id: req.requestId,
      client_request_id: req.clientRequestId ?? null,
      at: new Date(this.started).toISOString(),
      route: req.route,
      model: req.model,
      agent_id: r.agent_id ?? null,
      agent_name: r.agent_name ?? null,
      status: r.status,
      latency_ms: this.#deps.now() - this.started,
      ttft_ms: r.ttft_ms ?? null,
      queued_ms: r.queued_ms ?? null,
      tokens_in: r.tokens_in ?? null,
      tokens_out: r.tokens_out ?? null,
      tokens_per_second: r.tokens_per_second ?? null,
      attempts: this.tried.size,
      error: r.error ?? null,
      key_id: req.tenant ?? null,
    });
  }
}

/** How a request ended, as {@linkcode LogEntry.write} takes it: what is not known is left out. */
export type Ending =
  & Partial<
    Pick<
      RequestRecord,
      | "agent_id"
      | "agent_name"
      | "ttft_ms"
      | "queued_ms"
      | "tokens_in"
      | "tokens_out"
      | "tokens_per_second"
      | "error"
    >
  >
  & { status: number };
