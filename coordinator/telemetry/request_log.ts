/**
 * The request log: every client request, kept in memory for live views and written to SQLite
 * in batches (off the hot path), pruned by a retention setting.
 */
import type { DatabaseSync, StatementSync } from "node:sqlite";
import type { Bus } from "./bus.ts";

/** One logged request. */
export interface RequestRecord {
  id: string;
  at: string;
  route: string;
  model: string | null;
  agent_id: string | null;
  agent_name: string | null;
  status: number;
  latency_ms: number;
  ttft_ms: number | null;
  queued_ms: number | null;
  tokens_in: number | null;
  tokens_out: number | null;
  tokens_per_second: number | null;
  attempts: number;
  error: string | null;
}

/** Filters for {@linkcode RequestLog.query}. */
export interface RequestQuery {
  limit?: number;
  model?: string;
  agentId?: string;
  status?: "ok" | "error";
  since?: string;
  /** Only records before this time (ISO), for paging back. */
  until?: string;
  route?: string;
}

const COLUMNS = [
  "id",
  "at",
  "route",
  "model",
  "agent_id",
  "agent_name",
  "status",
  "latency_ms",
  "ttft_ms",
  "queued_ms",
  "tokens_in",
  "tokens_out",
  "tokens_per_second",
  "attempts",
  "error",
] as const;

/** Buffers request records and flushes them to SQLite in one transaction per batch. */
export class RequestLog {
  readonly #db: DatabaseSync;
  readonly #insert: StatementSync;
  readonly #bus?: Bus;
  #pending: RequestRecord[] = [];
  #closed = false;
  #timer: ReturnType<typeof setTimeout> | undefined;
  readonly #flushMs: number;
  readonly #retentionMs: number;

  constructor(
    db: DatabaseSync,
    options: { bus?: Bus; flushMs?: number; retentionDays?: number } = {},
  ) {
    this.#db = db;
    this.#bus = options.bus;
    // Small, frequent batches: a write of many rows blocks the event loop for milliseconds.
    this.#flushMs = options.flushMs ?? 250;
    this.#retentionMs = (options.retentionDays ?? 7) * 86_400_000;
    this.#insert = db.prepare(
      `INSERT OR IGNORE INTO requests (${COLUMNS.join(", ")}) VALUES (${
        COLUMNS.map(() => "?").join(", ")
      })`,
    );
  }

  /** Adds a record; it is written with the next batch. */
  add(r: RequestRecord): void {
    if (this.#closed) return;
    this.#pending.push(r);
    this.#bus?.publish({ type: "request", request: r as unknown as Record<string, unknown> });
    if (this.#pending.length >= 100) this.flush();
    else if (this.#timer === undefined) {
      this.#timer = setTimeout(() => this.flush(), this.#flushMs);
    }
  }

  /** Writes everything buffered now. */
  flush(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    if (this.#pending.length === 0) return;
    const batch = this.#pending;
    this.#pending = [];
    this.#db.exec("BEGIN");
    try {
      for (const r of batch) this.#insert.run(...COLUMNS.map((c) => r[c]));
      this.#db.exec("COMMIT");
    } catch (e) {
      this.#db.exec("ROLLBACK");
      console.error("Cannot write the request log:", (e as Error).message);
    }
  }

  /** Deletes records older than the retention period. */
  prune(now = Date.now()): number {
    const cutoff = new Date(now - this.#retentionMs).toISOString();
    return Number(this.#db.prepare("DELETE FROM requests WHERE at < ?").run(cutoff).changes);
  }

  /** Recent records, newest first (flushes first so the answer is complete). */
  query(q: RequestQuery = {}): RequestRecord[] {
    this.flush();
    const limit = Math.min(Math.max(q.limit ?? 100, 1), 10_000);
    return this.#db.prepare(
      `SELECT ${COLUMNS.join(", ")} FROM requests
       WHERE (?1 IS NULL OR model = ?1) AND (?2 IS NULL OR agent_id = ?2)
         AND (?3 IS NULL OR (?3 = 'ok' AND status < 400) OR (?3 = 'error' AND status >= 400))
         AND (?4 IS NULL OR at >= ?4) AND (?6 IS NULL OR at < ?6) AND (?7 IS NULL OR route = ?7)
       ORDER BY at DESC LIMIT ?5`,
    ).all(
      q.model ?? null,
      q.agentId ?? null,
      q.status ?? null,
      q.since ?? null,
      limit,
      q.until ?? null,
      q.route ?? null,
    ) as unknown as RequestRecord[];
  }

  /** Stops the timer and writes what is buffered. */
  close(): void {
    this.flush();
    this.#closed = true;
  }
}
