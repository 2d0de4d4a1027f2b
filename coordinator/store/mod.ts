/**
 * The coordinator's durable state behind one asynchronous interface. Every SQL statement of the
 * coordinator lives below this folder; services (registry, request log, event log, security)
 * keep what requests need in memory and call the store to persist it, never on a request's path
 * except where the request itself is a change an admin or an agent must see stored (a
 * registration, a patch, a new key), and then it answers 503 when the store cannot take it.
 *
 * SQLite (`sqlite://PATH`, `sqlite::memory:`) is the embedded default: a file database runs in a
 * worker so that no write, fsync or checkpoint ever blocks the event loop.
 */
import type { AgentMetrics, AgentStatus, InstalledModel, LoadedModel } from "@oc/shared";

/** A recorded event in the fleet's life (registration, status change, failure, …). */
export interface FleetEvent {
  id: number;
  at: string;
  kind: string;
  agent_id: string | null;
  message: string;
}

/** One client request in the request log. */
export interface RequestRecord {
  /** Our id for the request (never the client's: see `http/request_id.ts`). */
  id: string;
  /** The id the client gave it (`X-Request-Id`), if any. */
  client_request_id?: string | null;
  /** When the request arrived (ISO). */
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
  /** The API key that made the request (its id; `env:…` for a key from `API_KEYS`), if any. */
  key_id?: string | null;
}

/**
 * The request log's columns, in the order both stores declare and read them, with what each
 * holds: one list, so a field added to {@linkcode RequestRecord} is added to every statement.
 */
export const REQUEST_COLUMN_KINDS = {
  id: "text",
  at: "time",
  route: "text",
  model: "text",
  agent_id: "text",
  agent_name: "text",
  status: "integer",
  latency_ms: "real",
  ttft_ms: "real",
  queued_ms: "real",
  tokens_in: "integer",
  tokens_out: "integer",
  tokens_per_second: "real",
  attempts: "integer",
  error: "text",
  client_request_id: "text",
  key_id: "text",
} as const satisfies Record<keyof RequestRecord, "text" | "time" | "integer" | "real">;

/** The request log's column names, in order. */
export const REQUEST_COLUMN_NAMES = Object.keys(REQUEST_COLUMN_KINDS) as (keyof RequestRecord)[];

/** An agent as stored: identity, admin settings and last known state. Times are epoch ms. */
export interface AgentRecord {
  id: string;
  machine_name: string;
  display_name: string | null;
  labels: string[];
  ip_address: string;
  ollama_port: number;
  ollama_version: string;
  agent_version: string | null;
  os: string | null;
  parallel: number;
  weight: number;
  drain: boolean;
  status: AgentStatus;
  status_reason: string | null;
  registered_at: number;
  last_seen: number;
  metrics: AgentMetrics | null;
  models: InstalledModel[];
  loaded_models: LoadedModel[];
  /** SHA-256 of the agent's heartbeat secret. */
  secret_hash: string | null;
}

/** A partial update of one agent (only the named fields are written). */
export interface AgentUpdate {
  id: string;
  fields: Partial<Omit<AgentRecord, "id">>;
}

/** An event before the store gave it an id. */
export type NewEvent = Omit<FleetEvent, "id">;

/** Filters for {@linkcode Store.events}. */
export interface EventQuery {
  limit?: number;
  agentId?: string;
  /** Only events with a smaller id (paging back). */
  beforeId?: number;
}

/** Filters for {@linkcode Store.requests}. */
export interface RequestQuery {
  limit?: number;
  model?: string;
  agentId?: string;
  status?: "ok" | "error";
  since?: string;
  /** Only records before this time (ISO), for paging back. */
  until?: string;
  route?: string;
  /** Only the requests one API key made. */
  keyId?: string;
}

/**
 * One page of a whole table in storage order, for copying a database (`deno task db:copy`): pass
 * `next` as `after` to read on; the table is read through when a page has fewer rows than asked.
 */
export interface Page<T> {
  rows: T[];
  /** The position after this page's last row (the same `after` when the page is empty). */
  next: number;
}

/** Filters for {@linkcode Store.keyUsage}. */
export interface KeyUsageQuery {
  /** Requests from this time on (ISO). */
  since: string;
  /** Width of a bucket in milliseconds (buckets start at multiples of it since the epoch). */
  bucketMs: number;
}

/** One API key's requests in one time bucket. */
export interface KeyUsageRow {
  key_id: string;
  /** Start of the bucket (epoch ms). */
  t: number;
  requests: number;
  tokens_in: number;
  tokens_out: number;
  /** Requests refused with 429 (a limit, or the key's share of the queue). */
  limited: number;
}

/** What an API key may use; null means no limit. */
export interface KeyLimits {
  requests_per_minute: number | null;
  /** Input and output tokens a minute, counted when each request ends. */
  tokens_per_minute: number | null;
  /** Requests in flight at once. */
  concurrent: number | null;
  /** The key's share of turns and of places in the queue against other keys (default 1). */
  weight: number;
}

/** The limits of a key nobody limited. */
export const NO_LIMITS: KeyLimits = Object.freeze({
  requests_per_minute: null,
  tokens_per_minute: null,
  concurrent: null,
  weight: 1,
});

/** An API key as stored (never the key itself, only its hash). */
export interface ApiKeyRecord {
  id: string;
  name: string;
  prefix: string;
  hash: string;
  scope: "client" | "admin";
  created_at: string;
  last_used_at: string | null;
  uses: number;
  revoked_at: string | null;
  limits: KeyLimits;
}

/** A change to a stored key (only what is given is written). */
export interface KeyChange {
  name?: string;
  limits?: KeyLimits;
}

/** An admin session as stored. */
export interface SessionRecord {
  /** SHA-256 of the cookie value. */
  id_hash: string;
  csrf: string;
  created_at: string;
  expires_at: string;
}

/** Everything the coordinator loads at start-up. */
export interface StoreSnapshot {
  agents: AgentRecord[];
  settings: Record<string, string>;
  /** Keys not revoked. */
  keys: ApiKeyRecord[];
  /** Whether a client key was ever created (revoking every key keeps client auth on). */
  clientKeysEver: boolean;
  /** Sessions not expired. */
  sessions: SessionRecord[];
}

/** Rows per table, for tests, metrics and the operator. */
export interface StoreCounts {
  agents: number;
  events: number;
  requests: number;
  api_keys: number;
  sessions: number;
}

/** How many rows a prune removed. */
export interface Pruned {
  events: number;
  requests: number;
  sessions: number;
}

/** What retention keeps. */
export interface Retention {
  /** Request-log rows older than this (ISO) go. */
  requestsBefore: string;
  /** At most this many request-log rows are kept (the newest). */
  maxRequests: number;
  /** Events older than this (ISO) go. */
  eventsBefore: string;
  /** At most this many events are kept (the newest). */
  maxEvents: number;
  /** Sessions that expired before this (ISO) go. */
  sessionsBefore: string;
}

/**
 * What one coordinator tells the others through a shared store. Changes to stored state name
 * what changed (the receiver reads it back); `load` carries a coordinator's requests in flight.
 */
export type ClusterMessage =
  | { t: "agents" }
  | { t: "agent_removed"; id: string }
  | { t: "events" }
  | { t: "key"; id: string }
  | { t: "session"; h: string }
  | { t: "sessions_cleared" }
  | { t: "setting"; k: string }
  | { t: "command"; agent: string; command: { id: string; type: "pull" | "delete"; model: string } }
  | { t: "command_taken"; agent: string; ids: string[] }
  /** A blob was uploaded to `agent`: the create that uses it goes there. */
  | { t: "blob"; d: string; agent: string }
  | {
    t: "progress";
    agent: string;
    model: string;
    progress: {
      command_id: string;
      status: string;
      total?: number;
      completed?: number;
      done?: boolean;
      error?: string;
    };
  }
  | {
    t: "load";
    /** Snapshot number; chunks of one snapshot share it. */
    s: number;
    /** Chunk index and count: a large snapshot travels in pieces. */
    i: number;
    n: number;
    /** Agent id → normalised model name → requests in flight. */
    a: Record<string, Record<string, number>>;
  };

/** Handlers for {@linkcode StoreCluster.subscribe}. */
export interface ClusterHandlers {
  /** A message from another coordinator (never from this one). */
  message(m: ClusterMessage, from: string): void;
  /** The feed (re)connected: messages sent meanwhile are lost, so reload what matters. */
  connected(): void;
}

/** A store several coordinators share: how they hear of each other's changes and pick a leader. */
export interface StoreCluster {
  /** This coordinator's id among the others. */
  readonly id: string;
  /** Sends a message to the other coordinators (best effort). */
  publish(m: ClusterMessage): Promise<void>;
  /** Listens to the other coordinators until the returned function is called. */
  subscribe(handlers: ClusterHandlers): () => void;
  /**
   * Runs for leadership of the fleet-wide chores (health monitor, retention) until the returned
   * function is called; `changed(true)` when this coordinator became leader, `false` when it lost
   * it. At most one coordinator leads at a time, but for a moment after a leader's connection
   * died; chores must be safe to repeat.
   */
  lead(changed: (leading: boolean) => void): () => void;
  /** Agents changed after `since` (a value returned earlier; 0 for all), and the new watermark. */
  agentsChangedSince(since: number): Promise<{ agents: AgentRecord[]; watermark: number }>;
  /** Ids of every stored agent (to notice removals missed while disconnected). */
  agentIds(): Promise<string[]>;
  /** Events with an id above `afterId`, oldest first. */
  eventsAfter(afterId: number): Promise<FleetEvent[]>;
  /** The newest event id (0 when there is none). */
  lastEventId(): Promise<number>;
  key(id: string): Promise<ApiKeyRecord | undefined>;
  session(idHash: string): Promise<SessionRecord | undefined>;
  setting(key: string): Promise<string | undefined>;
}

/** The coordinator's durable state. Every method may reject with a {@linkcode StoreError}. */
export interface Store {
  /** `sqlite` or `postgres`. */
  readonly kind: "sqlite" | "postgres";
  /** Present when several coordinators may share this store (PostgreSQL). */
  readonly cluster?: StoreCluster;
  /** Everything the coordinator keeps in memory, read once at start-up. */
  load(): Promise<StoreSnapshot>;

  setSetting(key: string, value: string): Promise<void>;
  /**
   * Stores a setting unless it has a value already; resolves to the value stored (this one, or
   * the one another coordinator stored first). Generated secrets go through it, so coordinators
   * starting together on an empty database agree on one.
   */
  addSetting(key: string, value: string): Promise<string>;

  /** Inserts an agent, or replaces it when its id exists. */
  putAgent(agent: AgentRecord): Promise<void>;
  /** Applies partial updates in one transaction; unknown ids are skipped. */
  updateAgents(updates: AgentUpdate[]): Promise<void>;
  /** Deletes an agent; false when there was none. */
  deleteAgent(id: string): Promise<boolean>;

  /** Stores events in one transaction; returns them with their ids, in order. */
  addEvents(events: NewEvent[]): Promise<FleetEvent[]>;
  /** Recent events, newest first. */
  events(query?: EventQuery): Promise<FleetEvent[]>;
  /** Events with an id above `after` (0: from the first), oldest first, at most `limit`. */
  exportEvents(after: number, limit: number): Promise<Page<FleetEvent>>;

  /** Stores request-log rows in one transaction (a repeated id is ignored). */
  addRequests(records: RequestRecord[]): Promise<void>;
  /** Request-log rows, newest first. */
  requests(query?: RequestQuery): Promise<RequestRecord[]>;
  /**
   * Request-log rows stored after position `after` (0: from the first), in the order they were
   * stored, at most `limit`. Positions are the store's own (a row number), not times.
   */
  exportRequests(after: number, limit: number): Promise<Page<RequestRecord>>;

  /**
   * Stores a key with everything it holds: a new key, or one copied from another database with
   * its use count, last use and revocation.
   */
  insertKey(key: ApiKeyRecord): Promise<void>;
  /** Marks a key revoked; false when there was no such active key. */
  revokeKey(id: string, at: string): Promise<boolean>;
  /** Adds counted uses to keys. */
  addKeyUses(uses: { id: string; uses: number; at: string }[]): Promise<void>;
  /** Every key, newest first. */
  listKeys(): Promise<ApiKeyRecord[]>;
  /** Renames a key or replaces its limits; false when there was no such active key. */
  updateKey(id: string, change: KeyChange): Promise<boolean>;
  /** Requests, tokens and 429s per API key and time bucket, oldest first. */
  keyUsage(query: KeyUsageQuery): Promise<KeyUsageRow[]>;

  insertSession(session: SessionRecord): Promise<void>;
  deleteSession(idHash: string): Promise<void>;
  /** Ends every session (the admin password changed). */
  deleteAllSessions(): Promise<void>;

  /** Applies retention in one go. */
  prune(retention: Retention): Promise<Pruned>;
  counts(): Promise<StoreCounts>;
  /** Writes nothing more and releases the database. */
  close(): Promise<void>;
}

/**
 * A store operation that failed. `unavailable` means the database could not take it now (disk
 * full, read-only, locked, unreachable): the caller answers 503 and may try again later; memory
 * must not change. Other failures are bugs or broken data.
 */
export class StoreError extends Error {
  override name = "StoreError";
  /** The write clashed with a row that already holds a unique value (a race between writers). */
  readonly conflict: boolean;
  constructor(
    message: string,
    readonly unavailable: boolean,
    options?: ErrorOptions & { conflict?: boolean },
  ) {
    super(message, options);
    this.conflict = options?.conflict ?? false;
  }
}

/** The message a client gets when a change could not be stored. */
export const STORE_UNAVAILABLE =
  "The change could not be saved: the coordinator's database is unavailable; try again later";
