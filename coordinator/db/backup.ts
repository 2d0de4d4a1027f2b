/**
 * A consistent snapshot of a live database: `VACUUM INTO` from a separate connection reads one
 * transaction's view while the coordinator keeps writing (WAL mode).
 */
import { DatabaseSync } from "node:sqlite";
import { databasePath } from "./mod.ts";

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
