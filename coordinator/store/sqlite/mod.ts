/**
 * The coordinator's SQLite database (node:sqlite, WAL mode) and its migrations.
 * Migrations are the numbered files in ./migrations, applied in order at start-up, each in a
 * transaction and recorded in `schema_migrations`, so an older database upgrades in place.
 */
import { DatabaseSync } from "node:sqlite";

/** A numbered migration. */
export interface Migration {
  version: number;
  name: string;
  sql: string;
}

const MIGRATIONS_DIR = new URL("./migrations/", import.meta.url);

/** Reads the migration files (`NNN_name.sql`) in version order. */
export function loadMigrations(dir: URL = MIGRATIONS_DIR): Migration[] {
  const out: Migration[] = [];
  for (const entry of Deno.readDirSync(dir)) {
    const m = /^(\d+)_(.+)\.sql$/.exec(entry.name);
    if (!entry.isFile || !m) continue;
    out.push({
      version: Number(m[1]),
      name: m[2],
      sql: Deno.readTextFileSync(new URL(entry.name, dir)),
    });
  }
  return out.sort((a, b) => a.version - b.version);
}

/** Turns `sqlite://path` or `sqlite::memory:` into what DatabaseSync opens. */
export function databasePath(url: string): string {
  if (url === "sqlite::memory:") return ":memory:";
  const m = /^sqlite:\/\/(.+)$/.exec(url);
  if (!m) throw new TypeError(`Cannot open database "${url}": expected sqlite://PATH`);
  return m[1];
}

/**
 * Applies the migrations not yet recorded; returns the versions applied. Each runs in an
 * immediate transaction that first reads what is already applied, so coordinators starting at
 * the same moment on one file apply each migration once: the second waits for the first's lock
 * (busy timeout) and then finds it done.
 */
export function migrate(db: DatabaseSync, migrations: Migration[] = loadMigrations()): number[] {
  db.exec(`CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)`);
  const applied: number[] = [];
  const done = db.prepare("SELECT 1 FROM schema_migrations WHERE version = ?");
  const record = db.prepare(
    "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
  );
  for (const m of migrations) {
    if (done.get(m.version)) continue;
    db.exec("BEGIN IMMEDIATE");
    try {
      if (!done.get(m.version)) {
        db.exec(m.sql);
        record.run(m.version, m.name, new Date().toISOString());
        applied.push(m.version);
      }
      db.exec("COMMIT");
    } catch (e) {
      if (db.isTransaction) db.exec("ROLLBACK");
      throw new Error(`Cannot apply migration ${m.version}_${m.name}: ${(e as Error).message}`);
    }
  }
  return applied;
}

/** Opens (creating if needed) the database at `url`, in WAL mode, fully migrated. */
export function openDatabase(url: string): DatabaseSync {
  const db = new DatabaseSync(databasePath(url));
  // The busy timeout first: switching to WAL takes a lock another process may hold.
  db.exec("PRAGMA busy_timeout = 5000");
  db.exec("PRAGMA journal_mode = WAL");
  db.exec("PRAGMA synchronous = NORMAL");
  db.exec("PRAGMA foreign_keys = ON");
  migrate(db);
  return db;
}
