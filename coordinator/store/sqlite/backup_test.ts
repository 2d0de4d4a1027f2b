import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { openDatabase } from "./mod.ts";
import { backupDatabase, checkBackup, restoreDatabase } from "./backup.ts";

Deno.test("backup - a consistent copy while the database is being written", () => {
  const dir = Deno.makeTempDirSync();
  try {
    const url = `sqlite://${dir}/live.db`;
    const db = openDatabase(url);
    const insert = db.prepare(
      "INSERT INTO events (at, kind, agent_id, message) VALUES ('t', 'k', NULL, ?)",
    );
    for (let i = 0; i < 100; i++) insert.run(`e${i}`);
    db.exec("BEGIN");
    insert.run("uncommitted");
    // The open transaction is not in the copy; everything committed is.
    const size = backupDatabase(url, `${dir}/copy.db`);
    db.exec("COMMIT");
    assert.ok(size > 0);
    const copy = new DatabaseSync(`${dir}/copy.db`);
    assert.equal(copy.prepare("SELECT COUNT(*) AS n FROM events").get()?.n, 100);
    assert.ok(Number(copy.prepare("SELECT COUNT(*) AS n FROM schema_migrations").get()?.n) >= 3);
    copy.close();
    db.close();
    assert.throws(() => backupDatabase(url, `${dir}/copy.db`), /exists/);
    assert.throws(() => backupDatabase("sqlite::memory:", `${dir}/x.db`), TypeError);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

function count(path: string, table: string): number {
  const db = new DatabaseSync(path, { readOnly: true });
  try {
    return Number(db.prepare(`SELECT COUNT(*) AS n FROM ${table}`).get()?.n);
  } finally {
    db.close();
  }
}

function addEvents(url: string, n: number) {
  const db = openDatabase(url);
  const insert = db.prepare(
    "INSERT INTO events (at, kind, agent_id, message) VALUES ('t', 'k', NULL, 'e')",
  );
  for (let i = 0; i < n; i++) insert.run();
  db.close();
}

Deno.test("backup - restore puts a backup in place and keeps the replaced database", () => {
  const dir = Deno.makeTempDirSync();
  try {
    const url = `sqlite://${dir}/live.db`;
    addEvents(url, 10);
    backupDatabase(url, `${dir}/copy.db`);
    addEvents(url, 5);
    // Stale files of the old database that must not be read as part of the new one.
    Deno.writeTextFileSync(`${dir}/live.db-shm`, "stale");
    const { previous, versions } = restoreDatabase(`${dir}/copy.db`, url, {
      now: () => Date.UTC(2026, 0, 2, 3, 4, 5),
    });
    assert.equal(previous, `${dir}/live.db.before-restore-2026-01-02T03-04-05-000Z`);
    assert.ok(versions.length >= 4);
    const names = [...Deno.readDirSync(dir)].map((e) => e.name).sort();
    assert.deepEqual(names, [
      "copy.db",
      "live.db",
      "live.db.before-restore-2026-01-02T03-04-05-000Z",
    ]);
    assert.equal(count(`${dir}/live.db`, "events"), 10);
    assert.equal(count(previous!, "events"), 15);
    // The restored file opens as the coordinator's database, fully migrated.
    openDatabase(url).close();
    // Into a path with no database yet: nothing to keep.
    assert.equal(restoreDatabase(`${dir}/copy.db`, `sqlite://${dir}/new.db`).previous, null);
    assert.equal(count(`${dir}/new.db`, "events"), 10);
    assert.throws(() => restoreDatabase(`${dir}/copy.db`, "sqlite::memory:"), TypeError);
    assert.throws(
      () => restoreDatabase(`${dir}/copy.db`, `sqlite://${dir}/copy.db`),
      /into itself/,
    );
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("backup - restore refuses a database in use and changes nothing", () => {
  const dir = Deno.makeTempDirSync();
  try {
    const url = `sqlite://${dir}/live.db`;
    addEvents(url, 3);
    backupDatabase(url, `${dir}/copy.db`);
    addEvents(url, 2);
    const running = openDatabase(url); // as a running coordinator holds it
    try {
      assert.throws(
        () => restoreDatabase(`${dir}/copy.db`, url, { busyTimeoutMs: 50 }),
        /^Error: Cannot restore into ".*live\.db": the database is in use \(stop the coordinator first\)$/,
      );
      assert.equal(running.prepare("SELECT COUNT(*) AS n FROM events").get()?.n, 5);
    } finally {
      running.close();
    }
    const names = [...Deno.readDirSync(dir)].map((e) => e.name).sort();
    assert.deepEqual(names, ["copy.db", "live.db"]);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("backup - restore refuses a missing, foreign or damaged file", () => {
  const dir = Deno.makeTempDirSync();
  try {
    const url = `sqlite://${dir}/live.db`;
    addEvents(url, 200);
    const refused = (file: string, message: RegExp) => {
      assert.throws(() => restoreDatabase(file, url), message);
      assert.equal(count(`${dir}/live.db`, "events"), 200);
    };
    refused(`${dir}/nothing.db`, /the file does not exist/);
    Deno.writeTextFileSync(`${dir}/notes.txt`, "not a database at all\n".repeat(100));
    refused(`${dir}/notes.txt`, /is not a sound SQLite database \(file is not a database\)/);
    const other = new DatabaseSync(`${dir}/other.db`);
    other.exec("CREATE TABLE t (x)");
    other.close();
    refused(`${dir}/other.db`, /is not a coordinator database/);
    const newer = new DatabaseSync(`${dir}/newer.db`);
    newer.exec("CREATE TABLE schema_migrations (version INTEGER, name TEXT, applied_at TEXT)");
    newer.exec("INSERT INTO schema_migrations VALUES (1, 'registry', ''), (999, 'future', '')");
    newer.close();
    refused(`${dir}/newer.db`, /migrations this coordinator does not know \(999\)/);
    // A backup damaged on disk: a page in the middle overwritten.
    backupDatabase(url, `${dir}/damaged.db`);
    const bytes = Deno.readFileSync(`${dir}/damaged.db`);
    const page = new DataView(bytes.buffer).getUint16(16);
    bytes.fill(0xa5, page * 2, page * 2 + 512);
    Deno.writeFileSync(`${dir}/damaged.db`, bytes);
    refused(`${dir}/damaged.db`, /integrity check|not a sound SQLite database/);
    assert.ok(checkBackup(`${dir}/live.db`).length >= 4);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});
