/**
 * The SQLite store's worker: owns the database connection, so that writes, fsyncs and WAL
 * checkpoints happen off the coordinator's event loop. Requests are answered in order.
 */
/// <reference lib="deno.worker" />
import { SqliteDatabase, type SqliteOp } from "./database.ts";

/** A call from the coordinator. */
export interface WorkerCall {
  id: number;
  op: SqliteOp | "open" | "close";
  args: unknown[];
}

/** The worker's answer to a call. */
export type WorkerReply =
  | { id: number; ok: true; value: unknown }
  | { id: number; ok: false; error: { message: string; code?: string; errcode?: number } };

let db: SqliteDatabase | undefined;

self.onmessage = (e: MessageEvent<WorkerCall>) => {
  const { id, op, args } = e.data;
  let reply: WorkerReply;
  try {
    let value: unknown;
    if (op === "open") db = new SqliteDatabase(args[0] as string);
    else if (op === "close") {
      db?.close();
      db = undefined;
    } else {
      if (!db) throw new Error("Cannot run a store operation: the database is not open");
      value = (db[op] as (...a: unknown[]) => unknown).apply(db, args);
    }
    reply = { id, ok: true, value };
  } catch (err) {
    const x = err as { message?: string; code?: string; errcode?: number };
    reply = {
      id,
      ok: false,
      error: { message: String(x?.message ?? err), code: x?.code, errcode: x?.errcode },
    };
  }
  self.postMessage(reply);
};
