/**
 * The PostgreSQL store (`DATABASE_URL=postgres://…`), for several coordinators sharing one fleet.
 * Same contract as the SQLite store; batches are single statements over `unnest` arrays. Every
 * wait is bounded on the client side, so a database that hangs or goes away turns into a
 * {@linkcode StoreError} marked unavailable within seconds, never a stuck request.
 *
 * The client is node-postgres (`pg`): on Deno it survived PostgreSQL restarts, crashes and
 * terminated connections under load without hanging or ending the process (see the README).
 */
// @ts-types="@types/pg"
import pg from "pg";
import { abortableSleep } from "@oc/shared";
import type {
  AgentRecord,
  AgentUpdate,
  ApiKeyRecord,
  ClusterHandlers,
  ClusterMessage,
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
  Store,
  StoreCluster,
  StoreCounts,
  StoreSnapshot,
} from "../mod.ts";
import { REQUEST_COLUMN_KINDS, REQUEST_COLUMN_NAMES, StoreError } from "../mod.ts";

/** Key of the advisory lock that serialises migrations between coordinators. */
const MIGRATION_LOCK = 7_422_001;
/** Key of the advisory lock its holder leads the fleet-wide chores with. */
const LEADER_LOCK = 7_422_002;
/**
 * Keys of the transaction locks that writes of agents and of events take before they draw from
 * their sequence (`agents_changed_seq`, the events' ids). Readers of the change feed read "what
 * is above the last number I saw": that only works if numbers become visible in the order they
 * were drawn. Two transactions drawing concurrently could commit in the other order (11 before
 * 10), and a reader that saw 11 would never look at 10. Holding the lock from the draw to the
 * commit makes the order of commits the order of numbers. Writers are batched (one transaction a
 * second per coordinator for agents, a few for events), so the lock costs nothing noticeable.
 */
export const AGENTS_WRITE_LOCK = 7_422_003;
/** See {@linkcode AGENTS_WRITE_LOCK}. */
export const EVENTS_WRITE_LOCK = 7_422_004;
/** How a coordinator's connections name themselves (`pg_stat_activity.application_name`). */
export const APPLICATION_NAME = "ollama-coordinator";
/** The channel coordinators tell each other about changes on. */
const CHANNEL = "ollama_coordinator";
/**
 * Settings for the long-lived connections (listener, leader): the server notices a vanished
 * coordinator in about 11 s instead of two hours, which frees its leadership lock in time.
 */
const KEEPALIVE = "-c tcp_keepalives_idle=5 -c tcp_keepalives_interval=2 -c tcp_keepalives_count=3";

const MIGRATIONS_DIR = new URL("./migrations/", import.meta.url);

/** Network errors and SQLSTATEs that mean "the database cannot take this now". */
const UNAVAILABLE_CODES = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "EPIPE",
  "ETIMEDOUT",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "ENOTFOUND",
  "EAI_AGAIN",
]);

/** Whether an error from `pg` means the database is away (rather than the call being wrong). */
export function isUnavailable(e: unknown): boolean {
  if (!(e instanceof Error)) return false;
  const code = (e as { code?: unknown }).code;
  if (typeof code === "string") {
    // 08: connection exceptions; 57P01-57P03: shutdown, crash, cannot connect now;
    // 53: insufficient resources (disk full, out of memory, too many connections).
    return UNAVAILABLE_CODES.has(code) || /^(08...|57P0[123]|53...)$/.test(code);
  }
  return /Connection terminated|timeout exceeded when trying to connect|Query read timeout|not queryable|Client has encountered a connection error/i
    .test(e.message);
}

/** Resolves when `ended` does or `signal` aborts, leaving no listener on the signal. */
function untilEndedOr(ended: Promise<void>, signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.resolve();
  let done: () => void = () => {};
  const stop = new Promise<void>((resolve) => {
    done = resolve;
    signal.addEventListener("abort", done, { once: true });
  });
  return Promise.race([ended, stop]).finally(() => signal.removeEventListener("abort", done));
}

function storeError(op: string, e: unknown): StoreError {
  const message = e instanceof Error ? e.message : String(e);
  const conflict = (e as { code?: unknown })?.code === "23505"; // unique_violation
  return new StoreError(`Cannot ${op}: ${message}`, isUnavailable(e), { cause: e, conflict });
}

const iso = (v: unknown): string | null =>
  v == null ? null : v instanceof Date ? v.toISOString() : new Date(String(v)).toISOString();

type Row = Record<string, unknown>;

/** How each agent field is passed and cast in a batched update. */
const AGENT_FIELDS: Record<keyof Omit<AgentRecord, "id">, { type: string; json?: boolean }> = {
  machine_name: { type: "text" },
  display_name: { type: "text" },
  labels: { type: "jsonb", json: true },
  ip_address: { type: "text" },
  ollama_port: { type: "integer" },
  ollama_version: { type: "text" },
  agent_version: { type: "text" },
  os: { type: "text" },
  parallel: { type: "integer" },
  weight: { type: "double precision" },
  drain: { type: "boolean" },
  status: { type: "text" },
  status_reason: { type: "text" },
  registered_at: { type: "bigint" },
  last_seen: { type: "bigint" },
  metrics: { type: "jsonb", json: true },
  models: { type: "jsonb", json: true },
  loaded_models: { type: "jsonb", json: true },
  secret_hash: { type: "text" },
};
const FIELD_NAMES = Object.keys(AGENT_FIELDS) as (keyof typeof AGENT_FIELDS)[];

function param(field: keyof typeof AGENT_FIELDS, value: unknown): unknown {
  // jsonb parameters are always passed as text: pg would send a JS array as a PostgreSQL array.
  if (AGENT_FIELDS[field].json) return value === null ? null : JSON.stringify(value);
  return value;
}

function agentFromRow(r: Row): AgentRecord {
  return {
    id: String(r.id),
    machine_name: String(r.machine_name),
    display_name: r.display_name == null ? null : String(r.display_name),
    labels: r.labels as string[],
    ip_address: String(r.ip_address),
    ollama_port: Number(r.ollama_port),
    ollama_version: String(r.ollama_version),
    agent_version: r.agent_version == null ? null : String(r.agent_version),
    os: r.os == null ? null : String(r.os),
    parallel: Number(r.parallel),
    weight: Number(r.weight),
    drain: Boolean(r.drain),
    status: String(r.status) as AgentRecord["status"],
    status_reason: r.status_reason == null ? null : String(r.status_reason),
    registered_at: Number(r.registered_at),
    last_seen: Number(r.last_seen),
    metrics: (r.metrics ?? null) as AgentRecord["metrics"],
    models: r.models as AgentRecord["models"],
    loaded_models: r.loaded_models as AgentRecord["loaded_models"],
    secret_hash: r.secret_hash == null ? null : String(r.secret_hash),
  };
}

function keyFromRow(r: Row): ApiKeyRecord {
  return {
    id: String(r.id),
    name: String(r.name),
    prefix: String(r.prefix),
    hash: String(r.hash),
    scope: r.scope === "admin" ? "admin" : "client",
    created_at: iso(r.created_at)!,
    last_used_at: iso(r.last_used_at),
    uses: Number(r.uses),
    revoked_at: iso(r.revoked_at),
    limits: {
      requests_per_minute: r.requests_per_minute == null ? null : Number(r.requests_per_minute),
      tokens_per_minute: r.tokens_per_minute == null ? null : Number(r.tokens_per_minute),
      concurrent: r.concurrent_requests == null ? null : Number(r.concurrent_requests),
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
    at: iso(r.at)!,
    kind: String(r.kind),
    agent_id: r.agent_id == null ? null : String(r.agent_id),
    message: String(r.message),
  };
}

/** The PostgreSQL type of each kind of request-log column. */
const PG_TYPES = {
  text: "text",
  time: "timestamptz",
  integer: "integer",
  real: "double precision",
} as const;

/** The request log's columns with their PostgreSQL types. */
const REQUEST_COLUMNS = REQUEST_COLUMN_NAMES.map((name) => ({
  name,
  type: PG_TYPES[REQUEST_COLUMN_KINDS[name]],
}));

function requestFromRow(r: Row): RequestRecord {
  const out: Record<string, unknown> = {};
  for (const { name, type } of REQUEST_COLUMNS) {
    const v = r[name];
    out[name] = v == null
      ? null
      : type === "timestamptz"
      ? iso(v)
      : type === "text"
      ? String(v)
      : Number(v);
  }
  return out as unknown as RequestRecord;
}

/** Options for {@linkcode openPostgresStore}. */
export interface PostgresOptions {
  /** Connections in the pool. */
  max?: number;
  /** Milliseconds a query may take before it is abandoned (client and server side). */
  queryTimeoutMs?: number;
  /** Milliseconds to connect or wait for a free connection. */
  connectTimeoutMs?: number;
  /**
   * How the connections name themselves; a tool that is not a coordinator (`db:copy`) uses
   * another name, so that it can tell the coordinators' connections from its own.
   */
  applicationName?: string;
}

/** A pool with every wait bounded and connection losses reported, never thrown. */
export function createPool(url: string, options: PostgresOptions = {}): pg.Pool {
  const pool = new pg.Pool({
    connectionString: url,
    max: options.max ?? 10,
    connectionTimeoutMillis: options.connectTimeoutMs ?? 2000,
    query_timeout: options.queryTimeoutMs ?? 5000,
    statement_timeout: options.queryTimeoutMs ?? 5000,
    idleTimeoutMillis: 30_000,
    keepAlive: true,
    application_name: options.applicationName ?? APPLICATION_NAME,
    types: {
      // int8 (ids, epoch milliseconds, counts) as numbers: all fit in a double here.
      getTypeParser: ((oid: number, format?: "text" | "binary") =>
        oid === 20
          ? Number
          : pg.types.getTypeParser(oid, format)) as typeof pg.types.getTypeParser,
    },
  });
  // Without a listener, an idle connection that dies (a restart) would end the process.
  pool.on("error", (e) => console.error("PostgreSQL connection lost:", e.message));
  // A connection that dies while lent out emits "error" on its client too. The pool listens only
  // while the client is idle or inside pool.query(); after pool.connect() there is a moment
  // before the borrower can listen, and an "error" then would end the process. Whoever holds
  // the client learns of the failure from its queries anyway.
  pool.on("connect", (client) => client.on("error", () => {}));
  return pool;
}

/** Reads the migration files (`NNN_name.sql`) in version order. */
function loadMigrations(): { version: number; name: string; sql: string }[] {
  const out = [];
  for (const entry of Deno.readDirSync(MIGRATIONS_DIR)) {
    const m = /^(\d+)_(.+)\.sql$/.exec(entry.name);
    if (!entry.isFile || !m) continue;
    out.push({
      version: Number(m[1]),
      name: m[2],
      sql: Deno.readTextFileSync(new URL(entry.name, MIGRATIONS_DIR)),
    });
  }
  return out.sort((a, b) => a.version - b.version);
}

/**
 * Applies the migrations not yet recorded, holding a transaction-level advisory lock: the
 * coordinators that start together take turns, and each migration runs once.
 */
export function migrate(pool: pg.Pool): Promise<number[]> {
  return inTransaction(pool, async (client) => {
    await client.query("SELECT pg_advisory_xact_lock($1)", [MIGRATION_LOCK]);
    await client.query(`CREATE TABLE IF NOT EXISTS schema_migrations (
      version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL)`);
    const done = new Set(
      (await client.query("SELECT version FROM schema_migrations")).rows.map((r) =>
        Number(r.version)
      ),
    );
    const applied: number[] = [];
    for (const m of loadMigrations()) {
      if (done.has(m.version)) continue;
      try {
        await client.query(m.sql);
      } catch (e) {
        throw new Error(`Cannot apply migration ${m.version}_${m.name}: ${(e as Error).message}`);
      }
      await client.query(
        "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, now())",
        [m.version, m.name],
      );
      applied.push(m.version);
    }
    return applied;
  });
}

/**
 * Runs `fn` in a transaction on a connection lent by the pool (ROLLBACK when it throws).
 *
 * pg reports a connection that dies while lent out (a restart, a crash, a reset) as an "error"
 * event on the client, on top of failing the query in flight; an "error" event nobody listens to
 * ends the process. So the client is listened to while lent, and one that failed is discarded
 * rather than handed back to the pool.
 */
export async function inTransaction<T>(
  pool: pg.Pool,
  fn: (client: pg.PoolClient) => Promise<T>,
): Promise<T> {
  const client = await pool.connect();
  let broken: Error | undefined;
  const onError = (e: Error) => {
    broken = e;
  };
  client.on("error", onError);
  try {
    await client.query("BEGIN");
    const result = await fn(client);
    await client.query("COMMIT");
    return result;
  } catch (e) {
    if (!broken) {
      await client.query("ROLLBACK").catch((r: Error) => {
        broken = r;
      });
    }
    throw e;
  } finally {
    client.off("error", onError);
    client.release(broken);
  }
}

/** What {@linkcode inspectPostgres} found. */
export interface PostgresInspection {
  /** Whether the database has the coordinator's schema (a `schema_migrations` table). */
  schema: boolean;
  /** Connections of running coordinators to this database. */
  coordinators: number;
}

/**
 * Looks at a database without changing it: whether a coordinator made it and whether any
 * coordinator is connected to it now (every coordinator's connections carry
 * {@linkcode APPLICATION_NAME}, which `pg_stat_activity` shows to every role).
 */
export async function inspectPostgres(url: string): Promise<PostgresInspection> {
  const client = new pg.Client({
    connectionString: url,
    connectionTimeoutMillis: 5000,
    query_timeout: 5000,
    application_name: `${APPLICATION_NAME} inspect`,
  });
  client.on("error", () => {});
  try {
    await client.connect();
    const r = await client.query(
      `SELECT to_regclass('schema_migrations') IS NOT NULL AS schema,
        (SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
          AND application_name = $1 AND pid <> pg_backend_pid()) AS coordinators`,
      [APPLICATION_NAME],
    );
    return { schema: Boolean(r.rows[0].schema), coordinators: Number(r.rows[0].coordinators) };
  } catch (e) {
    throw storeError("inspect the database", e);
  } finally {
    await client.end().catch(() => {});
  }
}

/** Opens the PostgreSQL store at `url`, applying migrations; rejects when it cannot. */
export async function openPostgresStore(
  url: string,
  options: PostgresOptions = {},
): Promise<Store & { readonly pool: pg.Pool }> {
  const pool = createPool(url, options);
  try {
    await migrate(pool);
  } catch (e) {
    await pool.end().catch(() => {});
    throw storeError("open the database", e);
  }
  return new PostgresStore(pool, url);
}

/** See the module documentation. */
class PostgresStore implements Store {
  readonly kind = "postgres" as const;
  readonly pool: pg.Pool;
  readonly cluster: StoreCluster;
  readonly #url: string;
  readonly #id = crypto.randomUUID().slice(0, 8);
  /** Stops the listener and leadership loops on close. */
  readonly #stop = new AbortController();
  readonly #loops = new Set<Promise<void>>();
  #closed = false;

  constructor(pool: pg.Pool, url: string) {
    this.pool = pool;
    this.#url = url;
    this.cluster = this.#makeCluster();
  }

  /** Tells the other coordinators, in the transaction of the change (sent on commit). */
  async #notify(c: pg.PoolClient, m: ClusterMessage): Promise<void> {
    await c.query("SELECT pg_notify($1, $2)", [CHANNEL, JSON.stringify({ o: this.#id, ...m })]);
  }

  /** A client of its own for a long-lived loop (listener, leadership). */
  #dedicated(): pg.Client {
    const c = new pg.Client({
      connectionString: this.#url,
      connectionTimeoutMillis: 2000,
      query_timeout: 2000,
      keepAlive: true,
      options: KEEPALIVE,
      application_name: APPLICATION_NAME,
    });
    c.on("error", () => {}); // "end" follows; the loop reconnects
    return c;
  }

  /** Runs `loop` until the store closes. */
  #run(loop: (signal: AbortSignal) => Promise<void>): () => void {
    const stop = new AbortController();
    const signal = AbortSignal.any([stop.signal, this.#stop.signal]);
    const running = loop(signal).catch((e) => console.error("Cluster loop failed:", e));
    this.#loops.add(running);
    running.finally(() => this.#loops.delete(running));
    return () => stop.abort();
  }

  #makeCluster(): StoreCluster {
    const q = (op: string, text: string, values: unknown[] = []) => this.#query(op, text, values);
    return {
      id: this.#id,
      publish: async (m) => {
        await q("tell the other coordinators", "SELECT pg_notify($1, $2)", [
          CHANNEL,
          JSON.stringify({ o: this.#id, ...m }),
        ]);
      },
      subscribe: (handlers) => this.#run((signal) => this.#listen(handlers, signal)),
      lead: (changed) => this.#run((signal) => this.#lead(changed, signal)),
      agentsChangedSince: async (since) => {
        const r = await q(
          "read changed agents",
          "SELECT * FROM agents WHERE changed_seq > $1 ORDER BY changed_seq",
          [since],
        );
        const watermark = r.rows.reduce((m, row) => Math.max(m, Number(row.changed_seq)), since);
        return { agents: r.rows.map(agentFromRow), watermark };
      },
      agentIds: async () =>
        (await q("list agents", "SELECT id FROM agents")).rows.map((r) => String(r.id)),
      eventsAfter: async (afterId) =>
        (await q(
          "read events",
          "SELECT id, at, kind, agent_id, message FROM events WHERE id > $1 ORDER BY id LIMIT 1000",
          [afterId],
        )).rows.map(eventFromRow),
      lastEventId: async () =>
        Number(
          (await q("read events", "SELECT coalesce(max(id), 0) AS id FROM events")).rows[0].id,
        ),
      key: async (id) => {
        const r = await q("read an API key", "SELECT * FROM api_keys WHERE id = $1", [id]);
        return r.rows[0] ? keyFromRow(r.rows[0]) : undefined;
      },
      session: async (idHash) => {
        const r = await q(
          "read a session",
          "SELECT id_hash, csrf, created_at, expires_at FROM sessions WHERE id_hash = $1",
          [idHash],
        );
        const row = r.rows[0];
        return row
          ? {
            id_hash: String(row.id_hash),
            csrf: String(row.csrf),
            created_at: iso(row.created_at)!,
            expires_at: iso(row.expires_at)!,
          }
          : undefined;
      },
      setting: async (key) => {
        const r = await q("read a setting", "SELECT value FROM settings WHERE key = $1", [key]);
        return r.rows[0] ? String(r.rows[0].value) : undefined;
      },
    };
  }

  /** LISTEN, reconnecting for as long as it runs; `connected` after every (re)connection. */
  async #listen(handlers: ClusterHandlers, signal: AbortSignal): Promise<void> {
    let delay = 100;
    while (!signal.aborted) {
      const c = this.#dedicated();
      const ended = new Promise<void>((r) => c.once("end", () => r()));
      c.on("notification", (n) => {
        if (n.channel !== CHANNEL || !n.payload) return;
        let m: ClusterMessage & { o?: string };
        try {
          m = JSON.parse(n.payload);
        } catch {
          return;
        }
        if (m.o === this.#id || typeof m.o !== "string") return;
        try {
          handlers.message(m, m.o);
        } catch (e) {
          console.error("Cannot apply another coordinator's change:", e);
        }
      });
      try {
        await c.connect();
        await c.query(`LISTEN ${pg.escapeIdentifier(CHANNEL)}`);
        delay = 100;
        handlers.connected();
        await untilEndedOr(ended, signal);
      } catch { /* down: try again */ }
      await c.end().catch(() => {});
      await abortableSleep(delay, signal);
      delay = Math.min(delay * 2, 2000);
    }
  }

  /** Holds the leadership lock on a connection of its own while it can. */
  async #lead(changed: (leading: boolean) => void, signal: AbortSignal): Promise<void> {
    while (!signal.aborted) {
      const c = this.#dedicated();
      let lost = false;
      c.once("end", () => lost = true);
      let leading = false;
      try {
        await c.connect();
        while (!signal.aborted && !lost) {
          // Asked only while not holding it: a second success would stack the lock.
          const r = await c.query("SELECT pg_try_advisory_lock($1) AS ok", [LEADER_LOCK]);
          if (r.rows[0].ok) break;
          await abortableSleep(1000, signal);
        }
        if (!signal.aborted && !lost) {
          leading = true;
          changed(true);
          // A query a second notices a connection that died without a word.
          while (!signal.aborted && !lost) {
            await c.query("SELECT 1");
            await abortableSleep(1000, signal);
          }
        }
      } catch { /* lost or down */ }
      if (leading) changed(false);
      // Closing the connection releases the lock.
      await c.end().catch(() => {});
      await abortableSleep(1000, signal);
    }
  }

  async #query(op: string, text: string, values: unknown[] = []): Promise<pg.QueryResult> {
    if (this.#closed) throw new StoreError(`Cannot ${op}: the store is closed`, true);
    try {
      return await this.pool.query(text, values);
    } catch (e) {
      throw storeError(op, e);
    }
  }

  async #transaction<T>(op: string, fn: (c: pg.PoolClient) => Promise<T>): Promise<T> {
    if (this.#closed) throw new StoreError(`Cannot ${op}: the store is closed`, true);
    try {
      return await inTransaction(this.pool, fn);
    } catch (e) {
      throw storeError(op, e);
    }
  }

  async load(): Promise<StoreSnapshot> {
    const [agents, settings, keys, ever, sessions] = await Promise.all([
      this.#query("load agents", "SELECT * FROM agents ORDER BY registered_at, id"),
      this.#query("load settings", "SELECT key, value FROM settings"),
      this.#query("load keys", "SELECT * FROM api_keys WHERE revoked_at IS NULL"),
      this.#query("load keys", "SELECT 1 FROM api_keys WHERE scope = 'client' LIMIT 1"),
      this.#query(
        "load sessions",
        "SELECT id_hash, csrf, created_at, expires_at FROM sessions WHERE expires_at > now()",
      ),
    ]);
    return {
      agents: agents.rows.map(agentFromRow),
      settings: Object.fromEntries(settings.rows.map((r) => [String(r.key), String(r.value)])),
      keys: keys.rows.map(keyFromRow),
      clientKeysEver: ever.rows.length > 0,
      sessions: sessions.rows.map((r) => ({
        id_hash: String(r.id_hash),
        csrf: String(r.csrf),
        created_at: iso(r.created_at)!,
        expires_at: iso(r.expires_at)!,
      })),
    };
  }

  async setSetting(key: string, value: string): Promise<void> {
    await this.#transaction("save a setting", async (c) => {
      await c.query(
        "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        [key, value],
      );
      await this.#notify(c, { t: "setting", k: key });
    });
  }

  addSetting(key: string, value: string): Promise<string> {
    return this.#transaction("save a setting", async (c) => {
      const added = await c.query(
        "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING RETURNING value",
        [key, value],
      );
      if (added.rows.length > 0) {
        await this.#notify(c, { t: "setting", k: key });
        return value;
      }
      const r = await c.query("SELECT value FROM settings WHERE key = $1", [key]);
      return String(r.rows[0].value);
    });
  }

  async putAgent(a: AgentRecord): Promise<void> {
    const cols = ["id", ...FIELD_NAMES];
    const values = cols.map((_, i) => `$${i + 1}`).join(", ");
    const set = FIELD_NAMES.map((f) => `${f} = excluded.${f}`).join(", ");
    await this.#transaction("save an agent", async (c) => {
      await c.query("SELECT pg_advisory_xact_lock($1)", [AGENTS_WRITE_LOCK]);
      await c.query(
        `INSERT INTO agents (${cols.join(", ")}) VALUES (${values})
         ON CONFLICT (id) DO UPDATE SET ${set}, changed_seq = nextval('agents_changed_seq')`,
        [a.id, ...FIELD_NAMES.map((f) => param(f, a[f]))],
      );
      await this.#notify(c, { t: "agents" });
    });
  }

  async updateAgents(updates: AgentUpdate[]): Promise<void> {
    // One statement per set of fields (heartbeats all share one): a thousand agents are one
    // UPDATE … FROM unnest, not a thousand round trips.
    const groups = new Map<string, AgentUpdate[]>();
    for (const u of updates) {
      const fields = FIELD_NAMES.filter((f) => f in u.fields);
      if (fields.length === 0) continue;
      const key = fields.join(",");
      const group = groups.get(key);
      if (group) group.push(u);
      else groups.set(key, [u]);
    }
    if (groups.size === 0) return;
    await this.#transaction("update agents", async (c) => {
      await c.query("SELECT pg_advisory_xact_lock($1)", [AGENTS_WRITE_LOCK]);
      for (const [key, group] of groups) {
        const fields = key.split(",") as (keyof typeof AGENT_FIELDS)[];
        // One row per agent: a batch naming an agent twice keeps the last.
        const byId = new Map(group.map((u) => [u.id, u]));
        const ids = [...byId.keys()];
        const arrays = fields.map((f) => [...byId.values()].map((u) => param(f, u.fields[f])));
        const set = fields.map((f) => `${f} = v.${f}${AGENT_FIELDS[f].json ? "::jsonb" : ""}`);
        // jsonb values travel as text (see param) and are cast in the SET list.
        const casts = fields.map((f, i) =>
          `$${i + 2}::${AGENT_FIELDS[f].json ? "text" : AGENT_FIELDS[f].type}[]`
        );
        await c.query(
          `UPDATE agents SET ${set.join(", ")}, changed_seq = nextval('agents_changed_seq')
           FROM unnest($1::text[], ${casts.join(", ")}) AS v(id, ${fields.join(", ")})
           WHERE agents.id = v.id`,
          [ids, ...arrays],
        );
      }
      await this.#notify(c, { t: "agents" });
    });
  }

  deleteAgent(id: string): Promise<boolean> {
    return this.#transaction("delete an agent", async (c) => {
      const r = await c.query("DELETE FROM agents WHERE id = $1", [id]);
      if (!r.rowCount) return false;
      await this.#notify(c, { t: "agent_removed", id });
      return true;
    });
  }

  async addEvents(events: NewEvent[]): Promise<FleetEvent[]> {
    if (events.length === 0) return [];
    return await this.#transaction("add events", async (c) => {
      await c.query("SELECT pg_advisory_xact_lock($1)", [EVENTS_WRITE_LOCK]);
      const r = await c.query(
        `INSERT INTO events (at, kind, agent_id, message)
         SELECT * FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::text[])
         RETURNING id, at, kind, agent_id, message`,
        [
          events.map((e) => e.at),
          events.map((e) => e.kind),
          events.map((e) => e.agent_id),
          events.map((e) => e.message),
        ],
      );
      await this.#notify(c, { t: "events" });
      return r.rows.map(eventFromRow).sort((a, b) => a.id - b.id);
    });
  }

  async events(q: EventQuery = {}): Promise<FleetEvent[]> {
    const limit = Math.min(Math.max(q.limit ?? 100, 1), 1000);
    const r = await this.#query(
      "read events",
      `SELECT id, at, kind, agent_id, message FROM events
       WHERE ($1::text IS NULL OR agent_id = $1) AND ($2::bigint IS NULL OR id < $2)
       ORDER BY id DESC LIMIT $3`,
      [q.agentId ?? null, q.beforeId ?? null, limit],
    );
    return r.rows.map(eventFromRow);
  }

  async exportEvents(after: number, limit: number): Promise<Page<FleetEvent>> {
    const r = await this.#query(
      "read events",
      "SELECT id, at, kind, agent_id, message FROM events WHERE id > $1 ORDER BY id LIMIT $2",
      [after, limit],
    );
    const rows = r.rows.map(eventFromRow);
    return { rows, next: rows.at(-1)?.id ?? after };
  }

  async addRequests(records: RequestRecord[]): Promise<void> {
    if (records.length === 0) return;
    const names = REQUEST_COLUMNS.map((c) => c.name);
    await this.#query(
      "add requests",
      `INSERT INTO requests (${names.join(", ")})
       SELECT * FROM unnest(${REQUEST_COLUMNS.map((c, i) => `$${i + 1}::${c.type}[]`).join(", ")})
       ON CONFLICT (id) DO NOTHING`,
      REQUEST_COLUMNS.map((c) => records.map((r) => r[c.name] ?? null)),
    );
  }

  async requests(q: RequestQuery = {}): Promise<RequestRecord[]> {
    const limit = Math.min(Math.max(q.limit ?? 100, 1), 10_000);
    const r = await this.#query(
      "read the request log",
      `SELECT ${REQUEST_COLUMNS.map((c) => c.name).join(", ")} FROM requests
       WHERE ($1::text IS NULL OR model = $1) AND ($2::text IS NULL OR agent_id = $2)
         AND ($3::text IS NULL OR ($3 = 'ok' AND status < 400) OR ($3 = 'error' AND status >= 400))
         AND ($4::timestamptz IS NULL OR at >= $4) AND ($6::timestamptz IS NULL OR at < $6)
         AND ($7::text IS NULL OR route = $7) AND ($8::text IS NULL OR key_id = $8)
       ORDER BY at DESC LIMIT $5`,
      [
        q.model ?? null,
        q.agentId ?? null,
        q.status ?? null,
        q.since ?? null,
        limit,
        q.until ?? null,
        q.route ?? null,
        q.keyId ?? null,
      ],
    );
    return r.rows.map(requestFromRow);
  }

  async exportRequests(after: number, limit: number): Promise<Page<RequestRecord>> {
    const r = await this.#query(
      "read the request log",
      `SELECT seq, ${REQUEST_COLUMNS.map((c) => c.name).join(", ")} FROM requests
       WHERE seq > $1 ORDER BY seq LIMIT $2`,
      [after, limit],
    );
    const last = r.rows.at(-1);
    return { rows: r.rows.map(requestFromRow), next: last ? Number(last.seq) : after };
  }

  async insertKey(k: ApiKeyRecord): Promise<void> {
    await this.#transaction("save an API key", async (c) => {
      await c.query(
        `INSERT INTO api_keys (id, name, prefix, hash, scope, created_at, last_used_at, uses,
         revoked_at, requests_per_minute, tokens_per_minute, concurrent_requests, weight)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)`,
        [
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
        ],
      );
      await this.#notify(c, { t: "key", id: k.id });
    });
  }

  revokeKey(id: string, at: string): Promise<boolean> {
    return this.#transaction("revoke an API key", async (c) => {
      const r = await c.query(
        "UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
        [at, id],
      );
      if (!r.rowCount) return false;
      await this.#notify(c, { t: "key", id });
      return true;
    });
  }

  async addKeyUses(uses: { id: string; uses: number; at: string }[]): Promise<void> {
    if (uses.length === 0) return;
    await this.#query(
      "count API key uses",
      `UPDATE api_keys SET uses = api_keys.uses + v.uses,
         last_used_at = GREATEST(api_keys.last_used_at, v.at)
       FROM (SELECT id, sum(uses) AS uses, max(at) AS at
             FROM unnest($1::text[], $2::bigint[], $3::timestamptz[]) AS u(id, uses, at)
             GROUP BY id) AS v
       WHERE api_keys.id = v.id`,
      [uses.map((u) => u.id), uses.map((u) => u.uses), uses.map((u) => u.at)],
    );
  }

  updateKey(id: string, change: KeyChange): Promise<boolean> {
    return this.#transaction("change an API key", async (c) => {
      const r = await c.query(
        `UPDATE api_keys SET name = coalesce($2, name),
           requests_per_minute = CASE WHEN $3 THEN $4 ELSE requests_per_minute END,
           tokens_per_minute = CASE WHEN $3 THEN $5 ELSE tokens_per_minute END,
           concurrent_requests = CASE WHEN $3 THEN $6 ELSE concurrent_requests END,
           weight = CASE WHEN $3 THEN $7 ELSE weight END
         WHERE id = $1 AND revoked_at IS NULL`,
        [
          id,
          change.name ?? null,
          change.limits !== undefined,
          ...(change.limits ? limitColumns(change.limits) : [null, null, null, 1]),
        ],
      );
      if (!r.rowCount) return false;
      // The others read the key back: its new limits apply there as they do here.
      await this.#notify(c, { t: "key", id });
      return true;
    });
  }

  async keyUsage(q: KeyUsageQuery): Promise<KeyUsageRow[]> {
    const bucket = Math.max(1000, Math.round(q.bucketMs));
    const r = await this.#query(
      "read API key usage",
      `SELECT key_id, floor(extract(epoch FROM at) * 1000 / $2::bigint)::bigint * $2::bigint AS t,
         count(*) AS requests, coalesce(sum(tokens_in), 0) AS tokens_in,
         coalesce(sum(tokens_out), 0) AS tokens_out,
         count(*) FILTER (WHERE status = 429) AS limited
       FROM requests WHERE at >= $1 AND key_id IS NOT NULL
       GROUP BY key_id, t ORDER BY t, key_id`,
      [q.since, bucket],
    );
    return r.rows.map((row) => ({
      key_id: String(row.key_id),
      t: Number(row.t),
      requests: Number(row.requests),
      tokens_in: Number(row.tokens_in),
      tokens_out: Number(row.tokens_out),
      limited: Number(row.limited),
    }));
  }

  async listKeys(): Promise<ApiKeyRecord[]> {
    const r = await this.#query("list API keys", "SELECT * FROM api_keys ORDER BY created_at DESC");
    return r.rows.map(keyFromRow);
  }

  async insertSession(s: SessionRecord): Promise<void> {
    await this.#transaction("save a session", async (c) => {
      await c.query(
        "INSERT INTO sessions (id_hash, csrf, created_at, expires_at) VALUES ($1, $2, $3, $4)",
        [s.id_hash, s.csrf, s.created_at, s.expires_at],
      );
      await this.#notify(c, { t: "session", h: s.id_hash });
    });
  }

  async deleteSession(idHash: string): Promise<void> {
    await this.#transaction("end a session", async (c) => {
      await c.query("DELETE FROM sessions WHERE id_hash = $1", [idHash]);
      await this.#notify(c, { t: "session", h: idHash });
    });
  }

  async deleteAllSessions(): Promise<void> {
    await this.#transaction("end every session", async (c) => {
      await c.query("DELETE FROM sessions");
      await this.#notify(c, { t: "sessions_cleared" });
    });
  }

  prune(r: Retention): Promise<Pruned> {
    return this.#transaction("apply retention", async (c) => {
      let requests = (await c.query("DELETE FROM requests WHERE at < $1", [r.requestsBefore]))
        .rowCount ?? 0;
      requests += (await c.query(
        `DELETE FROM requests WHERE seq <= (SELECT seq FROM requests ORDER BY seq DESC
         OFFSET $1 LIMIT 1)`,
        [r.maxRequests],
      )).rowCount ?? 0;
      let events = (await c.query("DELETE FROM events WHERE at < $1", [r.eventsBefore])).rowCount ??
        0;
      events += (await c.query(
        "DELETE FROM events WHERE id <= (SELECT id FROM events ORDER BY id DESC OFFSET $1 LIMIT 1)",
        [r.maxEvents],
      )).rowCount ?? 0;
      const sessions = (await c.query("DELETE FROM sessions WHERE expires_at < $1", [
        r.sessionsBefore,
      ])).rowCount ?? 0;
      return { requests, events, sessions };
    });
  }

  async counts(): Promise<StoreCounts> {
    const r = await this.#query(
      "count rows",
      `SELECT (SELECT count(*) FROM agents) AS agents, (SELECT count(*) FROM events) AS events,
              (SELECT count(*) FROM requests) AS requests, (SELECT count(*) FROM api_keys) AS api_keys,
              (SELECT count(*) FROM sessions) AS sessions`,
    );
    const row = r.rows[0];
    return {
      agents: Number(row.agents),
      events: Number(row.events),
      requests: Number(row.requests),
      api_keys: Number(row.api_keys),
      sessions: Number(row.sessions),
    };
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#stop.abort();
    await Promise.all(this.#loops);
    await this.pool.end().catch(() => {});
  }
}
