/**
 * A program for the PostgreSQL store's tests: `deno run -A postgres_crash.ts URL` crashes the
 * server at URL while the store holds one of its connections in a transaction, and prints what
 * the store did as one JSON line. It runs as a program of its own because an error that escapes
 * as uncaught shows in a program's output for sure, and a test process would not notice it.
 */
// @ts-types="@types/pg"
import pg from "pg";
import { StoreError } from "../store/mod.ts";
import { openPostgresStore } from "../store/postgres/store.ts";

/** Polls `check` until it yields a value, or throws after `ms`. */
async function eventually<T>(ms: number, what: string, check: () => Promise<T | undefined>) {
  const until = Date.now() + ms;
  for (;;) {
    const value = await check().catch(() => undefined);
    if (value !== undefined) return value;
    if (Date.now() > until) throw new Error(`${what}: not seen within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** What the store did when the server crashed during one of its transactions. */
export interface CrashOutcome {
  /** The failed call's error: its class, whether it means "unavailable", its message. */
  error: { name: string; unavailable?: boolean; message: string };
  /** Whether the same store saved a setting once the server had recovered. */
  recovered: boolean;
}

/**
 * Holds the settings table from another session so that the store's transaction waits inside
 * its INSERT, then SIGKILLs the holding server process: PostgreSQL ends every connection and
 * recovers (as after `kill -9` or an out-of-memory kill).
 */
export async function crashDuringTransaction(url: string): Promise<CrashOutcome> {
  const store = await openPostgresStore(url, { queryTimeoutMs: 30_000 });
  const clients = [0, 1].map(() => {
    const c = new pg.Client({ connectionString: url });
    c.on("error", () => {}); // they go down with the server
    return c;
  });
  const [holder, watcher] = clients;
  try {
    await Promise.all(clients.map((c) => c.connect()));
    await holder.query("BEGIN");
    await holder.query("LOCK TABLE settings IN ACCESS EXCLUSIVE MODE");
    const holderPid = (await holder.query("SELECT pg_backend_pid() AS pid")).rows[0].pid;
    const saving = store.setSetting("k", "v").then(() => undefined, (e: Error) => e);
    await eventually(10_000, "the transaction waiting", async () => {
      const r = await watcher.query(
        `SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock'
         AND query LIKE 'INSERT INTO settings%'`,
      );
      return r.rows.length ? true : undefined;
    });
    Deno.kill(holderPid, "SIGKILL");
    const error = await saving;
    const recovered = await eventually(20_000, "a setting saved after recovery", async () => {
      await store.setSetting("k", "v2");
      return (await store.load()).settings.k === "v2";
    });
    return {
      error: {
        name: error?.name ?? "none",
        unavailable: error instanceof StoreError ? error.unavailable : undefined,
        message: error?.message ?? "",
      },
      recovered,
    };
  } finally {
    await Promise.all(clients.map((c) => c.end().catch(() => {})));
    await store.close();
  }
}

if (import.meta.main) {
  console.log(JSON.stringify(await crashDuringTransaction(Deno.args[0])));
}
