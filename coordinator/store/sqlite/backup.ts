/**
 * A consistent snapshot of a live database: `VACUUM INTO` from a separate connection reads one
 * transaction's view while the coordinator keeps writing (WAL mode). And the way back: restoring
 * such a snapshot into the place of a stopped coordinator's database.
 */
import { DatabaseSync } from "node:sqlite";
import { databasePath, loadMigrations } from "./mod.ts";

/** Copies the database at `url` into `target` (which must not exist yet). Returns its size. */
export function backupDatabase(url: string, target: string): number {
  const path = databasePath(url);
  if (path === ":memory:") throw new TypeError("Cannot back up an in-memory database");
  try {
    Deno.statSync(target);
    throw new Error(`Cannot back up to "${target}": the file exists`);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  const db = new DatabaseSync(path, { readOnly: true });
  try {
    db.exec("PRAGMA busy_timeout = 5000");
    db.prepare("VACUUM INTO ?").run(target);
  } finally {
    db.close();
  }
  return Deno.statSync(target).size;
}

const SQLITE_BUSY = 5;
const SQLITE_LOCKED = 6;

// node:sqlite marks its errors with this code; only statement errors carry SQLite's `errcode`.
function isSqliteError(e: unknown): boolean {
  return (e as { code?: string }).code === "ERR_SQLITE_ERROR";
}

function isBusy(e: unknown): boolean {
  const code = (e as { errcode?: number }).errcode;
  return code === SQLITE_BUSY || code === SQLITE_LOCKED;
}

/** Whether a file is at `path` (other errors than its absence are thrown). */
export function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}

/**
 * Checks that `file` can be restored: a sound SQLite database (`PRAGMA integrity_check`) made by
 * this coordinator (a `schema_migrations` table with no migration this version does not know).
 * Returns the migration versions it holds; throws an `Error` saying what is wrong otherwise.
 */
export function checkBackup(file: string): number[] {
  return checkCoordinatorDatabase(file, { action: `restore "${file}"` });
}

/**
 * Checks that `file` is a sound SQLite database made by this coordinator, as
 * {@linkcode checkBackup} does; `action` starts the messages ("Cannot <action>: …").
 */
export function checkCoordinatorDatabase(file: string, options: { action: string }): number[] {
  const cannot = `Cannot ${options.action}`;
  if (!exists(file)) throw new Error(`${cannot}: the file does not exist`);
  let db: DatabaseSync | undefined;
  try {
    db = new DatabaseSync(file, { readOnly: true });
    const problems = db.prepare("PRAGMA integrity_check").all().map((r) =>
      String(r.integrity_check)
    );
    if (problems.length !== 1 || problems[0] !== "ok") {
      throw new Error(
        `${cannot}: it fails the integrity check (${problems.slice(0, 3).join("; ")})`,
      );
    }
    const table = db.prepare(
      "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'",
    ).get();
    const versions = table
      ? db.prepare("SELECT version FROM schema_migrations ORDER BY version").all()
        .map((r) => Number(r.version))
      : [];
    if (versions.length === 0) {
      throw new Error(`${cannot}: it is not a coordinator database (no schema migrations)`);
    }
    const known = new Set(loadMigrations().map((m) => m.version));
    const unknown = versions.filter((v) => !known.has(v));
    if (unknown.length > 0) {
      throw new Error(
        `${cannot}: it has migrations this coordinator does not know ` +
          `(${unknown.join(", ")}); use the version that wrote it`,
      );
    }
    return versions;
  } catch (e) {
    if (!isSqliteError(e)) throw e;
    throw new Error(`${cannot}: it is not a sound SQLite database (${(e as Error).message})`);
  } finally {
    db?.close();
  }
}

/**
 * Makes sure no one uses the database at `path`, and folds its write-ahead log into the file.
 *
 * A running coordinator keeps its connection open, and SQLite in WAL mode holds a shared lock on
 * the database file for as long as a connection is open; the lock goes when the process ends,
 * even by SIGKILL. So an exclusive lock (`locking_mode = EXCLUSIVE`, then a write transaction)
 * taken within a short busy timeout proves that no coordinator, backup or `sqlite3` shell has the
 * file open. Closing that connection, the last one, checkpoints the log and deletes the `-wal`.
 * Returns false when the file cannot be read as a database at all (a damaged file: nothing to
 * fold, and nothing can be using it as a database either).
 */
export function claimUnused(
  path: string,
  options: { busyTimeoutMs?: number; action: string },
): boolean {
  const db = new DatabaseSync(path);
  try {
    db.exec(`PRAGMA busy_timeout = ${Math.max(0, Math.round(options.busyTimeoutMs ?? 1000))}`);
    db.exec("PRAGMA locking_mode = EXCLUSIVE");
    // Statements rather than `exec`, whose errors do not carry SQLite's error code.
    db.prepare("BEGIN EXCLUSIVE").run();
    db.prepare("COMMIT").run();
    db.prepare("PRAGMA wal_checkpoint(TRUNCATE)").get();
    return true;
  } catch (e) {
    if (isBusy(e)) {
      throw new Error(
        `Cannot ${options.action}: the database is in use (stop the coordinator first)`,
      );
    }
    if (!isSqliteError(e)) throw e;
    return false;
  } finally {
    db.close();
  }
}

/** What {@linkcode restoreDatabase} did. */
export interface RestoreResult {
  /** Where the database that was replaced is kept, or null when there was none. */
  previous: string | null;
  /** Migration versions of the restored database. */
  versions: number[];
}

/**
 * Replaces the database at `url` with the backup `file`, for a coordinator that is stopped.
 *
 * The backup is checked ({@linkcode checkBackup}); a database in use is refused; the backup is
 * copied with `VACUUM INTO` to a temporary file beside the target, synced, and renamed over it,
 * so the target is always either the old or the new database. The old one is kept as
 * `<target>.before-restore-<time>` (with its `-wal`, if it could not be folded in), and the
 * target's stale `-wal` and `-shm`, which belong to the old database, are removed.
 */
export function restoreDatabase(
  file: string,
  url: string,
  options: { now?: () => number; busyTimeoutMs?: number } = {},
): RestoreResult {
  const path = databasePath(url);
  if (path === ":memory:") throw new TypeError("Cannot restore into an in-memory database");
  const versions = checkBackup(file);
  const hadTarget = exists(path);
  if (hadTarget && Deno.realPathSync(path) === Deno.realPathSync(file)) {
    throw new Error(`Cannot restore "${file}" into itself`);
  }
  const stamp = new Date((options.now ?? Date.now)()).toISOString().replace(/[:.]/g, "-");
  const folded = hadTarget
    ? claimUnused(path, { busyTimeoutMs: options.busyTimeoutMs, action: `restore into "${path}"` })
    : true;

  const temp = `${path}.restore-${stamp}.tmp`;
  const source = new DatabaseSync(file, { readOnly: true });
  try {
    source.prepare("VACUUM INTO ?").run(temp);
  } catch (e) {
    try {
      Deno.removeSync(temp);
    } catch { /* never written */ }
    throw new Error(`Cannot restore "${file}": copying failed (${(e as Error).message})`);
  } finally {
    source.close();
  }
  const copy = Deno.openSync(temp, { read: true, write: true });
  try {
    copy.syncSync();
  } finally {
    copy.close();
  }

  let previous: string | null = null;
  if (hadTarget) {
    previous = `${path}.before-restore-${stamp}`;
    try {
      // A second name for the old file: the target never goes missing.
      Deno.linkSync(path, previous);
    } catch {
      Deno.copyFileSync(path, previous);
    }
    // An old file that could not be opened keeps its log beside it, in case it can be saved.
    for (const log of folded ? [] : ["-wal", "-journal"]) {
      if (exists(`${path}${log}`)) Deno.renameSync(`${path}${log}`, `${previous}${log}`);
    }
  }
  // A stale log or index beside the new file would be read as part of it.
  for (const stale of [`${path}-wal`, `${path}-shm`, `${path}-journal`]) {
    try {
      Deno.removeSync(stale);
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    }
  }
  Deno.renameSync(temp, path);
  return { previous, versions };
}
