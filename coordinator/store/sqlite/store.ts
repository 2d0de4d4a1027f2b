/**
 * The SQLite store: {@linkcode SqliteDatabase}'s operations behind the asynchronous
 * {@linkcode Store} interface. A file database runs in a worker (no disk work on the event
 * loop); `sqlite::memory:` runs inline, since a memory database belongs to one connection.
 */
import type { Store } from "../mod.ts";
import { StoreError } from "../mod.ts";
import { SqliteDatabase, type SqliteOp } from "./database.ts";
import type { WorkerCall, WorkerReply } from "./worker.ts";

// SQLite result codes that mean "the database cannot take this now", not "the call is wrong".
const UNAVAILABLE = new Set([
  5, // SQLITE_BUSY
  6, // SQLITE_LOCKED
  7, // SQLITE_NOMEM
  8, // SQLITE_READONLY
  10, // SQLITE_IOERR
  13, // SQLITE_FULL
  14, // SQLITE_CANTOPEN
  26, // SQLITE_NOTADB
]);

function storeError(op: string, e: { message: string; errcode?: number }): StoreError {
  // Extended result codes carry the primary code in their low byte.
  const primary = e.errcode === undefined ? undefined : e.errcode & 0xff;
  const unavailable = primary === undefined || UNAVAILABLE.has(primary);
  // SQLITE_CONSTRAINT_UNIQUE and _PRIMARYKEY.
  const conflict = e.errcode === 2067 || e.errcode === 1555;
  return new StoreError(`Cannot ${describe(op)}: ${e.message}`, unavailable, { conflict });
}

function describe(op: string): string {
  return op.replace(/[A-Z]/g, (c) => ` ${c.toLowerCase()}`);
}

type Ops = Omit<SqliteDatabase, "close">;

/** Creates the SQLite store for `url` (`sqlite://PATH` or `sqlite::memory:`). */
export async function openSqliteStore(url: string): Promise<Store> {
  const call = url === "sqlite::memory:" ? inline(url) : await inWorker(url);
  const op = <K extends SqliteOp>(name: K) => (...args: Parameters<Ops[K]>) =>
    call.run(name, args) as Promise<ReturnType<Ops[K]>>;
  return {
    kind: "sqlite",
    load: op("load"),
    setSetting: op("setSetting"),
    addSetting: op("addSetting"),
    putAgent: op("putAgent"),
    updateAgents: op("updateAgents"),
    deleteAgent: op("deleteAgent"),
    addEvents: op("addEvents"),
    events: op("events"),
    exportEvents: op("exportEvents"),
    addRequests: op("addRequests"),
    requests: op("requests"),
    exportRequests: op("exportRequests"),
    insertKey: op("insertKey"),
    revokeKey: op("revokeKey"),
    addKeyUses: op("addKeyUses"),
    listKeys: op("listKeys"),
    updateKey: op("updateKey"),
    keyUsage: op("keyUsage"),
    insertSession: op("insertSession"),
    deleteSession: op("deleteSession"),
    deleteAllSessions: op("deleteAllSessions"),
    prune: op("prune"),
    counts: op("counts"),
    close: () => call.close(),
  };
}

interface Caller {
  run(op: SqliteOp, args: unknown[]): Promise<unknown>;
  close(): Promise<void>;
}

function inline(url: string): Caller {
  let db: SqliteDatabase | undefined;
  try {
    db = new SqliteDatabase(url);
  } catch (e) {
    throw storeError("open", e as { message: string; errcode?: number });
  }
  return {
    run(op, args) {
      if (!db) return Promise.reject(new StoreError("Cannot use the store: it is closed", true));
      try {
        return Promise.resolve((db[op] as (...a: unknown[]) => unknown).apply(db, args));
      } catch (e) {
        return Promise.reject(storeError(op, e as { message: string; errcode?: number }));
      }
    },
    close() {
      db?.close();
      db = undefined;
      return Promise.resolve();
    },
  };
}

async function inWorker(url: string): Promise<Caller> {
  const worker = new Worker(new URL("./worker.ts", import.meta.url).href, { type: "module" });
  const pending = new Map<
    number,
    { op: string; resolve(v: unknown): void; reject(e: Error): void }
  >();
  let next = 1;
  let broken: StoreError | undefined;
  worker.onmessage = (e: MessageEvent<WorkerReply>) => {
    const r = e.data;
    const p = pending.get(r.id);
    if (!p) return;
    pending.delete(r.id);
    if (r.ok) p.resolve(r.value);
    else p.reject(storeError(p.op, r.error));
  };
  // The worker itself failed (it should not: every call is caught there). Later calls fail as
  // unavailable rather than hanging.
  worker.onerror = (e) => {
    e.preventDefault();
    broken = new StoreError(`Cannot use the store: its worker failed (${e.message})`, true);
    for (const p of pending.values()) p.reject(broken);
    pending.clear();
  };
  const send = (op: WorkerCall["op"], args: unknown[]) =>
    new Promise<unknown>((resolve, reject) => {
      if (broken) return reject(broken);
      const id = next++;
      pending.set(id, { op, resolve, reject });
      worker.postMessage({ id, op, args } satisfies WorkerCall);
    });
  try {
    await send("open", [url]);
  } catch (e) {
    worker.terminate();
    throw e;
  }
  let closed: Promise<void> | undefined;
  return {
    run: (op, args) => send(op, args),
    close() {
      closed ??= send("close", []).catch(() => {}).then(() => worker.terminate());
      return closed;
    },
  };
}
