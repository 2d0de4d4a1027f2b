import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { databasePath, loadMigrations, migrate, openDatabase } from "./mod.ts";

Deno.test("db - migrations apply in order and are recorded once", () => {
  const db = new DatabaseSync(":memory:");
  const all = loadMigrations();
  assert.deepEqual(migrate(db, all), all.map((m) => m.version));
  assert.deepEqual(migrate(db, all), []);
  const rows = db.prepare("SELECT version FROM schema_migrations ORDER BY version").all();
  assert.deepEqual(rows.map((r) => r.version), all.map((m) => m.version));
  db.close();
});

Deno.test("db - a database made by an older version upgrades in place", () => {
  const path = Deno.makeTempFileSync({ suffix: ".db" });
  try {
    const all = loadMigrations();
    const old = new DatabaseSync(path);
    migrate(old, all.slice(0, 1));
    old.prepare(`INSERT INTO agents (id, machine_name, ip_address, ollama_port, ollama_version,
      registered_at, last_seen) VALUES ('a1', 'old', '127.0.0.1', 11434, '0.1.0', 'x', 'x')`).run();
    old.close();
    const db = openDatabase(`sqlite://${path}`);
    const row = db.prepare("SELECT machine_name, weight FROM agents WHERE id = 'a1'").get();
    assert.equal(row?.machine_name, "old");
    assert.equal(row?.weight, 1);
    assert.equal(db.prepare("PRAGMA journal_mode").get()?.journal_mode, "wal");
    db.close();
  } finally {
    for (const s of ["", "-wal", "-shm"]) {
      try {
        Deno.removeSync(path + s);
      } catch { /* not there */ }
    }
  }
});

Deno.test("db - a failing migration rolls back and names itself", () => {
  const db = new DatabaseSync(":memory:");
  assert.throws(
    () =>
      migrate(db, [
        { version: 1, name: "ok", sql: "CREATE TABLE t (x INTEGER)" },
        { version: 2, name: "broken", sql: "CREATE TABLE u (y); SELECT * FROM nowhere" },
      ]),
    /Cannot apply migration 2_broken/,
  );
  const tables = db.prepare("SELECT name FROM sqlite_master WHERE type = 'table'").all().map((r) =>
    r.name
  );
  assert.ok(tables.includes("t"));
  assert.ok(!tables.includes("u"));
  db.close();
});

Deno.test("db - database URLs", () => {
  assert.equal(databasePath("sqlite::memory:"), ":memory:");
  assert.equal(databasePath("sqlite://coordinator.db"), "coordinator.db");
  assert.throws(() => databasePath("mysql://x"), TypeError);
});
