/**
 * Every statement of the SQLite store, synchronous (node:sqlite). It runs inside the store's
 * worker for a file database, or inline for `sqlite::memory:`; {@linkcode SqliteStore} is the
 * asynchronous face the coordinator uses.
 */
import type { DatabaseSync, StatementSync } from "node:sqlite";
import type {
  AgentRecord,
  AgentUpdate,
  ApiKeyRecord,
  EventQuery,
  FleetEvent,
  KeyChange,
  KeyLimits,
  KeyUsageQuery,
  KeyUsageRow,
  NewEvent,
  Page,
  Pruned,
  RequestQuery,
  RequestRecord,
  Retention,
  SessionRecord,
  StoreCounts,
  StoreSnapshot,
} from "../mod.ts";
import { REQUEST_COLUMN_NAMES } from "../mod.ts";
import { openDatabase } from "./mod.ts";

type Row = Record<string, unknown>;

const iso = (ms: number) => new Date(ms).toISOString();
const text = (v: unknown) => (v == null ? null : String(v));

/** The request-log columns, in table order. */
/** How each agent field is written to its column. */
const AGENT_COLUMNS: {
  [K in keyof Omit<AgentRecord, "id">]: (v: AgentRecord[K]) => string | number | null;
} = {
  machine_name: (v) => v,
  display_name: (v) => v,
  labels: (v) => JSON.stringify(v),
  ip_address: (v) => v,
  ollama_port: (v) => v,
  ollama_version: (v) => v,
  agent_version: (v) => v,
  os: (v) => v,
  parallel: (v) => v,
  weight: (v) => v,
  drain: (v) => (v ? 1 : 0),
  status: (v) => v,
  status_reason: (v) => v,
  registered_at: (v) => iso(v),
  last_seen: (v) => iso(v),
  metrics: (v) => (v === null ? null : JSON.stringify(v)),
  models: (v) => JSON.stringify(v),
  loaded_models: (v) => JSON.stringify(v),
  secret_hash: (v) => v,
};
const AGENT_FIELDS = Object.keys(AGENT_COLUMNS) as (keyof typeof AGENT_COLUMNS)[];

/** An agent field's value as its column holds it. */
function column(field: keyof typeof AGENT_COLUMNS, value: unknown): string | number | null {
  return (AGENT_COLUMNS[field] as (v: unknown) => string | number | null)(value);
}

function agentFromRow(r: Row): AgentRecord {
  return {
    id: String(r.id),
    machine_name: String(r.machine_name),
    display_name: text(r.display_name),
    labels: JSON.parse(String(r.labels ?? "[]")),
    ip_address: String(r.ip_address),
    ollama_port: Number(r.ollama_port),
    ollama_version: String(r.ollama_version),
    agent_version: text(r.agent_version),
    os: text(r.os),
    parallel: Number(r.parallel),
    weight: Number(r.weight ?? 1),
    drain: Boolean(r.drain),
    status: String(r.status) as AgentRecord["status"],
    status_reason: text(r.status_reason),
    registered_at: Date.parse(String(r.registered_at)),
    last_seen: Date.parse(String(r.last_seen)),
    metrics: r.metrics == null ? null : JSON.parse(String(r.metrics)),
    models: JSON.parse(String(r.models ?? "[]")),
    loaded_models: JSON.parse(String(r.loaded_models ?? "[]")),
    secret_hash: text(r.secret_hash),
  };
}

const limit = (v: unknown) => (v == null ? null : Number(v));

function keyFromRow(r: Row): ApiKeyRecord {
  return {
    id: String(r.id),
    name: String(r.name),
    prefix: String(r.prefix),
    hash: String(r.hash),
    scope: r.scope === "admin" ? "admin" : "client",
    created_at: String(r.created_at),
    last_used_at: text(r.last_used_at),
    uses: Number(r.uses),
    revoked_at: text(r.revoked_at),
    limits: {
      requests_per_minute: limit(r.requests_per_minute),
      tokens_per_minute: limit(r.tokens_per_minute),
      concurrent: limit(r.concurrent_requests),
      weight: Number(r.weight ?? 1),
    },
  };
}

/** A key's limits as the values of its four columns, in table order. */
function limitColumns(l: KeyLimits): (number | null)[] {
  return [l.requests_per_minute, l.tokens_per_minute, l.concurrent, l.weight];
}

function eventFromRow(r: Row): FleetEvent {
  return {
    id: Number(r.id),
    at: String(r.at),
    kind: String(r.kind),
    agent_id: text(r.agent_id),
    message: String(r.message),
  };
}

/** The SQLite database and every operation of the store on it. */
export class SqliteDatabase {
  readonly #db: DatabaseSync;
  readonly #stmt: Record<string, StatementSync>;
  /** Partial-update statements, one per set of agent fields. */
  readonly #updates = new Map<string, StatementSync>();

  constructor(url: string) {
    this.#db = openDatabase(url);
    const db = this.#db;
    this.#stmt = {
      setSetting: db.prepare(
        "INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
      ),
      addSetting: db.prepare(
        "INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING",
      ),
      setting: db.prepare("SELECT value FROM settings WHERE key = ?"),
      // An upsert by id only: a clash on another unique rule (machine and address) must fail,
      // not silently replace that other agent as INSERT OR REPLACE would.
      putAgent: db.prepare(
        `INSERT INTO agents (id, ${AGENT_FIELDS.join(", ")}) VALUES (?, ${
          AGENT_FIELDS.map(() => "?").join(", ")
        }) ON CONFLICT (id) DO UPDATE SET ${
          AGENT_FIELDS.map((f) => `${f} = excluded.${f}`).join(", ")
        }`,
      ),
      deleteAgent: db.prepare("DELETE FROM agents WHERE id = ?"),
      addEvent: db.prepare(
        "INSERT INTO events (at, kind, agent_id, message) VALUES (?, ?, ?, ?) RETURNING id",
      ),
      events: db.prepare(
        `SELECT id, at, kind, agent_id, message FROM events
         WHERE (?1 IS NULL OR agent_id = ?1) AND (?2 IS NULL OR id < ?2)
         ORDER BY id DESC LIMIT ?3`,
      ),
      exportEvents: db.prepare(
        "SELECT id, at, kind, agent_id, message FROM events WHERE id > ? ORDER BY id LIMIT ?",
      ),
      exportRequests: db.prepare(
        `SELECT rowid AS position, ${REQUEST_COLUMN_NAMES.join(", ")} FROM requests
         WHERE rowid > ? ORDER BY rowid LIMIT ?`,
      ),
      addRequest: db.prepare(
        `INSERT OR IGNORE INTO requests (${REQUEST_COLUMN_NAMES.join(", ")}) VALUES (${
          REQUEST_COLUMN_NAMES.map(() => "?").join(", ")
        })`,
      ),
      requests: db.prepare(
        `SELECT ${REQUEST_COLUMN_NAMES.join(", ")} FROM requests
         WHERE (?1 IS NULL OR model = ?1) AND (?2 IS NULL OR agent_id = ?2)
           AND (?3 IS NULL OR (?3 = 'ok' AND status < 400) OR (?3 = 'error' AND status >= 400))
           AND (?4 IS NULL OR at >= ?4) AND (?6 IS NULL OR at < ?6) AND (?7 IS NULL OR route = ?7)
         AND (?8 IS NULL OR key_id = ?8)
         ORDER BY at DESC LIMIT ?5`,
      ),
      insertKey: db.prepare(
        `INSERT INTO api_keys (id, name, prefix, hash, scope, created_at, last_used_at, uses,
         revoked_at, requests_per_minute, tokens_per_minute, concurrent_requests, weight)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      ),
      renameKey: db.prepare("UPDATE api_keys SET name = ? WHERE id = ? AND revoked_at IS NULL"),
      limitKey: db.prepare(
        `UPDATE api_keys SET requests_per_minute = ?, tokens_per_minute = ?,
         concurrent_requests = ?, weight = ? WHERE id = ? AND revoked_at IS NULL`,
      ),
      // Buckets from the epoch seconds of the ISO text (unixepoch keeps the milliseconds).
      keyUsage: db.prepare(
        `SELECT key_id, CAST(unixepoch(at, 'subsec') * 1000 / ?2 AS INTEGER) * ?2 AS t,
           COUNT(*) AS requests, COALESCE(SUM(tokens_in), 0) AS tokens_in,
           COALESCE(SUM(tokens_out), 0) AS tokens_out,
           SUM(CASE WHEN status = 429 THEN 1 ELSE 0 END) AS limited
         FROM requests WHERE at >= ?1 AND key_id IS NOT NULL
         GROUP BY key_id, t ORDER BY t, key_id`,
      ),
      revokeKey: db.prepare(
        "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
      ),
      useKey: db.prepare(
        "UPDATE api_keys SET uses = uses + ?, last_used_at = max(coalesce(last_used_at, ''), ?) WHERE id = ?",
      ),
      listKeys: db.prepare("SELECT * FROM api_keys ORDER BY created_at DESC"),
      insertSession: db.prepare(
        "INSERT INTO sessions (id_hash, csrf, created_at, expires_at) VALUES (?, ?, ?, ?)",
      ),
      deleteSession: db.prepare("DELETE FROM sessions WHERE id_hash = ?"),
    };
  }

  /** Runs `fn` in one transaction; a failed one is rolled back if SQLite has not done so. */
  #transaction<T>(fn: () => T): T {
    this.#db.exec("BEGIN IMMEDIATE");
    try {
      const result = fn();
      this.#db.exec("COMMIT");
      return result;
    } catch (e) {
      // SQLite rolls back by itself on some errors (a full disk among them): a second
      // ROLLBACK would throw and hide the cause.
      if (this.#db.isTransaction) {
        try {
          this.#db.exec("ROLLBACK");
        } catch { /* the original error says more */ }
      }
      throw e;
    }
  }

  load(): StoreSnapshot {
    const settings: Record<string, string> = {};
    for (const r of this.#db.prepare("SELECT key, value FROM settings").all()) {
      settings[String(r.key)] = String(r.value);
    }
    return {
      agents: this.#db.prepare("SELECT * FROM agents ORDER BY registered_at, id").all().map(
        agentFromRow,
      ),
      settings,
      keys: this.#db.prepare("SELECT * FROM api_keys WHERE revoked_at IS NULL").all().map(
        keyFromRow,
      ),
      clientKeysEver:
        this.#db.prepare("SELECT 1 FROM api_keys WHERE scope = 'client' LIMIT 1").get() !==
          undefined,
      sessions: this.#db.prepare(
        "SELECT id_hash, csrf, created_at, expires_at FROM sessions WHERE expires_at > ?",
      ).all(new Date().toISOString()).map((r) => ({
        id_hash: String(r.id_hash),
        csrf: String(r.csrf),
        created_at: String(r.created_at),
        expires_at: String(r.expires_at),
      })),
    };
  }

  setSetting(key: string, value: string): void {
    this.#stmt.setSetting.run(key, value);
  }

  addSetting(key: string, value: string): string {
    this.#stmt.addSetting.run(key, value);
    return String((this.#stmt.setting.get(key) as Row).value);
  }

  putAgent(a: AgentRecord): void {
    this.#stmt.putAgent.run(
      a.id,
      ...AGENT_FIELDS.map((f) => column(f, a[f])),
    );
  }

  updateAgents(updates: AgentUpdate[]): void {
    this.#transaction(() => {
      for (const u of updates) {
        const fields = AGENT_FIELDS.filter((f) => f in u.fields);
        if (fields.length === 0) continue;
        const key = fields.join(",");
        let stmt = this.#updates.get(key);
        if (!stmt) {
          stmt = this.#db.prepare(
            `UPDATE agents SET ${fields.map((f) => `${f} = ?`).join(", ")} WHERE id = ?`,
          );
          this.#updates.set(key, stmt);
        }
        stmt.run(
          ...fields.map((f) => column(f, u.fields[f])),
          u.id,
        );
      }
    });
  }

  deleteAgent(id: string): boolean {
    return Number(this.#stmt.deleteAgent.run(id).changes) > 0;
  }

  addEvents(events: NewEvent[]): FleetEvent[] {
    return this.#transaction(() =>
      events.map((e) => {
        const row = this.#stmt.addEvent.get(e.at, e.kind, e.agent_id, e.message) as Row;
        return { id: Number(row.id), ...e };
      })
    );
  }

  events(q: EventQuery = {}): FleetEvent[] {
    const limit = Math.min(Math.max(q.limit ?? 100, 1), 1000);
    return this.#stmt.events.all(q.agentId ?? null, q.beforeId ?? null, limit).map(eventFromRow);
  }

  exportEvents(after: number, limit: number): Page<FleetEvent> {
    const rows = this.#stmt.exportEvents.all(after, limit).map(eventFromRow);
    return { rows, next: rows.at(-1)?.id ?? after };
  }

  addRequests(records: RequestRecord[]): void {
    this.#transaction(() => {
      for (const r of records) {
        this.#stmt.addRequest.run(...REQUEST_COLUMN_NAMES.map((c) => r[c] ?? null));
      }
    });
  }

  requests(q: RequestQuery = {}): RequestRecord[] {
    const limit = Math.min(Math.max(q.limit ?? 100, 1), 10_000);
    return this.#stmt.requests.all(
      q.model ?? null,
      q.agentId ?? null,
      q.status ?? null,
      q.since ?? null,
      limit,
      q.until ?? null,
      q.route ?? null,
      q.keyId ?? null,
    ).map((r) => ({ ...r }) as unknown as RequestRecord);
  }

  exportRequests(after: number, limit: number): Page<RequestRecord> {
    let next = after;
    const rows = this.#stmt.exportRequests.all(after, limit).map(({ position, ...r }) => {
      next = Number(position);
      return r as unknown as RequestRecord;
    });
    return { rows, next };
  }

  insertKey(k: ApiKeyRecord): void {
    this.#stmt.insertKey.run(
      k.id,
      k.name,
      k.prefix,
      k.hash,
      k.scope,
      k.created_at,
      k.last_used_at,
      k.uses,
      k.revoked_at,
      ...limitColumns(k.limits),
    );
  }

  updateKey(id: string, change: KeyChange): boolean {
    return this.#transaction(() => {
      let found = true;
      if (change.name !== undefined) {
        found &&= Number(this.#stmt.renameKey.run(change.name, id).changes) > 0;
      }
      if (change.limits !== undefined) {
        found &&= Number(this.#stmt.limitKey.run(...limitColumns(change.limits), id).changes) > 0;
      }
      if (change.name === undefined && change.limits === undefined) {
        found = this.#db.prepare("SELECT 1 FROM api_keys WHERE id = ? AND revoked_at IS NULL")
          .get(id) !== undefined;
      }
      return found;
    });
  }

  keyUsage(q: KeyUsageQuery): KeyUsageRow[] {
    const bucket = Math.max(1000, Math.round(q.bucketMs));
    return this.#stmt.keyUsage.all(q.since, bucket).map((r) => ({
      key_id: String(r.key_id),
      t: Number(r.t),
      requests: Number(r.requests),
      tokens_in: Number(r.tokens_in),
      tokens_out: Number(r.tokens_out),
      limited: Number(r.limited),
    }));
  }

  revokeKey(id: string, at: string): boolean {
    return Number(this.#stmt.revokeKey.run(at, id).changes) > 0;
  }

  addKeyUses(uses: { id: string; uses: number; at: string }[]): void {
    this.#transaction(() => {
      for (const u of uses) this.#stmt.useKey.run(u.uses, u.at, u.id);
    });
  }

  listKeys(): ApiKeyRecord[] {
    return this.#stmt.listKeys.all().map(keyFromRow);
  }

  insertSession(s: SessionRecord): void {
    this.#stmt.insertSession.run(s.id_hash, s.csrf, s.created_at, s.expires_at);
  }

  deleteSession(idHash: string): void {
    this.#stmt.deleteSession.run(idHash);
  }

  deleteAllSessions(): void {
    this.#db.exec("DELETE FROM sessions");
  }

  prune(r: Retention): Pruned {
    return this.#transaction(() => {
      let requests = Number(
        this.#db.prepare("DELETE FROM requests WHERE at < ?").run(r.requestsBefore).changes,
      );
      requests += Number(
        this.#db.prepare(
          "DELETE FROM requests WHERE rowid <= (SELECT rowid FROM requests ORDER BY rowid DESC LIMIT 1 OFFSET ?)",
        ).run(r.maxRequests).changes,
      );
      let events = Number(
        this.#db.prepare("DELETE FROM events WHERE at < ?").run(r.eventsBefore).changes,
      );
      events += Number(
        this.#db.prepare(
          "DELETE FROM events WHERE id <= (SELECT id FROM events ORDER BY id DESC LIMIT 1 OFFSET ?)",
        ).run(r.maxEvents).changes,
      );
      const sessions = Number(
        this.#db.prepare("DELETE FROM sessions WHERE expires_at < ?").run(r.sessionsBefore)
          .changes,
      );
      return { events, requests, sessions };
    });
  }

  counts(): StoreCounts {
    const n = (table: string) =>
      Number((this.#db.prepare(`SELECT COUNT(*) AS n FROM ${table}`).get() as Row).n);
    return {
      agents: n("agents"),
      events: n("events"),
      requests: n("requests"),
      api_keys: n("api_keys"),
      sessions: n("sessions"),
    };
  }

  close(): void {
    if (this.#db.isOpen) this.#db.close();
  }
}

/** The operations a worker or an inline store can be asked to run. */
export type SqliteOp = Exclude<keyof SqliteDatabase, "close">;
