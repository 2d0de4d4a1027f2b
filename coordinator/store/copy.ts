/**
 * Copying a whole coordinator database into an empty one, SQLite to PostgreSQL or back
 * (`deno task db:copy FROM TO`): a one-machine install grows into several coordinators, or goes
 * back, without agents registering again or keys being made again.
 *
 * Everything goes through the {@linkcode Store} interface, so the copy holds what a coordinator
 * reads: settings (the agent token's hash, the admin password's hash, model pins), agents with
 * their heartbeat secrets' hashes, API keys (revoked ones too, with their use counts), sessions
 * still valid, events oldest first (the target numbers them anew, in the same order) and the
 * request log in the order it was written.
 */
import type { Store, StoreCounts } from "./mod.ts";
import { isPostgresUrl, openStore, redactUrl } from "./open.ts";
import { checkCoordinatorDatabase, claimUnused, exists } from "./sqlite/backup.ts";
import { databasePath } from "./sqlite/mod.ts";

/** How many rows of each kind a copy wrote. */
export interface CopyResult {
  settings: number;
  agents: number;
  api_keys: number;
  sessions: number;
  events: number;
  requests: number;
}

/** Options for {@linkcode copyDatabase}. */
export interface CopyOptions {
  /** Events or request-log rows read and written at a time. */
  pageSize?: number;
  /** Told after each table or page, with the rows of that table copied so far. */
  progress?(table: keyof CopyResult, rows: number): void;
}

/** Connections of the copy name themselves so, never as a coordinator. */
const APPLICATION_NAME = "ollama-coordinator db:copy";

/**
 * Refuses a database that a coordinator has open. SQLite: an exclusive lock taken within a second
 * (as `deno task restore` does). PostgreSQL: connections named as a coordinator's in
 * `pg_stat_activity`. A source must also be a coordinator's database; a target may not exist yet.
 */
async function check(url: string, role: "source" | "target"): Promise<void> {
  const shown = redactUrl(url);
  const action = role === "source" ? `copy from "${shown}"` : `copy into "${shown}"`;
  if (url === "sqlite::memory:") {
    throw new TypeError(`Cannot ${action}: an in-memory database lives only in one process`);
  }
  if (url.startsWith("sqlite:")) {
    const path = databasePath(url);
    if (role === "source") checkCoordinatorDatabase(path, { action });
    if (exists(path)) claimUnused(path, { action });
    return;
  }
  if (!isPostgresUrl(url)) {
    throw new TypeError(`Cannot ${action}: unsupported URL scheme (sqlite:// or postgres://)`);
  }
  const { inspectPostgres } = await import("./postgres/store.ts");
  const found = await inspectPostgres(url);
  if (role === "source" && !found.schema) {
    throw new Error(`Cannot ${action}: it is not a coordinator database (no schema migrations)`);
  }
  if (found.coordinators > 0) {
    throw new Error(
      `Cannot ${action}: the database is in use by a coordinator ` +
        `(${found.coordinators} connection${
          found.coordinators === 1 ? "" : "s"
        }; stop every coordinator first)`,
    );
  }
}

async function open(url: string): Promise<Store> {
  if (!isPostgresUrl(url)) return await openStore(url);
  const { openPostgresStore } = await import("./postgres/store.ts");
  // Room for a page of the request log as one statement.
  return await openPostgresStore(url, {
    applicationName: APPLICATION_NAME,
    queryTimeoutMs: 60_000,
  });
}

/** What a store holds, in words ("3 agents, 2 settings"), for a refusal. */
function describe(counts: StoreCounts, settings: number): string {
  const parts = [
    [counts.agents, "agent"],
    [settings, "setting"],
    [counts.api_keys, "API key"],
    [counts.sessions, "session"],
    [counts.events, "event"],
    [counts.requests, "request-log row"],
  ] as const;
  return parts.filter(([n]) => n > 0).map(([n, what]) => `${n} ${what}${n === 1 ? "" : "s"}`)
    .join(", ");
}

/**
 * Copies the coordinator database at `from` into the empty database at `to` (created when it is
 * a SQLite file that does not exist yet). Refuses a target that holds anything, a source that is
 * not a coordinator's database, and either one while a coordinator has it open. Resolves with the
 * rows written; rejects with an `Error` saying what is wrong. A copy that fails half-way leaves a
 * partial target: empty it (or remove the file) and copy again.
 */
export async function copyDatabase(
  from: string,
  to: string,
  options: CopyOptions = {},
): Promise<CopyResult> {
  if (from === to) throw new TypeError(`Cannot copy "${redactUrl(from)}" onto itself`);
  await check(from, "source");
  await check(to, "target");
  const source = await open(from);
  let target: Store | undefined;
  try {
    target = await open(to);
    const [held, targetSnapshot] = await Promise.all([target.counts(), target.load()]);
    const settingsHeld = Object.keys(targetSnapshot.settings).length;
    if (Object.values(held).some((n) => n > 0) || settingsHeld > 0) {
      throw new Error(
        `Cannot copy into "${redactUrl(to)}": it already holds data (${
          describe(held, settingsHeld)
        }); copy into an empty database`,
      );
    }
    return await copyRows(source, target, options);
  } finally {
    await Promise.all([source.close(), target?.close()]);
  }
}

async function copyRows(source: Store, target: Store, options: CopyOptions): Promise<CopyResult> {
  const pageSize = options.pageSize ?? 1000;
  const progress = options.progress ?? (() => {});
  const snapshot = await source.load();
  const result: CopyResult = {
    settings: 0,
    agents: 0,
    api_keys: 0,
    sessions: 0,
    events: 0,
    requests: 0,
  };

  for (const [key, value] of Object.entries(snapshot.settings)) {
    await target.setSetting(key, value);
    result.settings++;
  }
  progress("settings", result.settings);
  for (const agent of snapshot.agents) {
    await target.putAgent(agent);
    result.agents++;
  }
  progress("agents", result.agents);
  // Every key, revoked ones too: they keep client auth on and show in the keys' history.
  for (const key of (await source.listKeys()).reverse()) {
    await target.insertKey(key);
    result.api_keys++;
  }
  progress("api_keys", result.api_keys);
  // Sessions still valid (expired ones are of no use and retention removes them anyway).
  for (const session of snapshot.sessions) {
    await target.insertSession(session);
    result.sessions++;
  }
  progress("sessions", result.sessions);

  for (let after = 0;;) {
    const page = await source.exportEvents(after, pageSize);
    if (page.rows.length > 0) {
      // The target numbers them anew; one batch keeps their order.
      await target.addEvents(page.rows.map(({ id: _, ...event }) => event));
      result.events += page.rows.length;
      progress("events", result.events);
    }
    if (page.rows.length < pageSize) break;
    after = page.next;
  }
  for (let after = 0;;) {
    const page = await source.exportRequests(after, pageSize);
    if (page.rows.length > 0) {
      await target.addRequests(page.rows);
      result.requests += page.rows.length;
      progress("requests", result.requests);
    }
    if (page.rows.length < pageSize) break;
    after = page.next;
  }

  // Rows the target holds now must be the rows copied: a request-log row whose id repeated
  // would have been skipped silently.
  const counts = await target.counts();
  const expected: Partial<StoreCounts> = {
    agents: result.agents,
    api_keys: result.api_keys,
    sessions: result.sessions,
    events: result.events,
    requests: result.requests,
  };
  for (const [table, n] of Object.entries(expected)) {
    const got = counts[table as keyof StoreCounts];
    if (got !== n) {
      throw new Error(`Cannot finish the copy: the target holds ${got} ${table} rows, not ${n}`);
    }
  }
  return result;
}
