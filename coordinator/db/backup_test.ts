import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { openDatabase } from "./mod.ts";
import { backupDatabase } from "./backup.ts";

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
