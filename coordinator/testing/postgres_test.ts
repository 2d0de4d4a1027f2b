/**
 * The throwaway PostgreSQL harness, and the behaviours of the `pg` client that the PostgreSQL
 * store relies on: LISTEN/NOTIFY, coming back after a restart, advisory-lock leadership, and
 * failing (not hanging) while the database is down.
 */

import assert from "node:assert/strict";
// @ts-types="@types/pg"
import pg from "pg";
import {
  postgresTestsEnabled,
  startPostgres,
  TEST_PG_USER,
  type TestPostgres,
} from "./postgres.ts";
import { isUnavailable } from "../store/postgres/store.ts";

const ignore = !postgresTestsEnabled();
const HARNESS = new URL("./postgres.ts", import.meta.url).href;

async function withServer(fn: (server: TestPostgres) => Promise<void>): Promise<void> {
  const server = await startPostgres();
  try {
    await fn(server);
  } finally {
    await server.stop();
  }
}

/** A pool configured as the store should: every wait bounded, idle errors handled. */
function newPool(url: string, options: pg.PoolConfig = {}): pg.Pool {
  const pool = new pg.Pool({
    connectionString: url,
    max: 4,
    connectionTimeoutMillis: 2_000,
    query_timeout: 5_000,
    ...options,
  });
  // Without a listener an idle client's error (a restart, say) is thrown and ends the process.
  pool.on("error", () => {});
  return pool;
}

/** Rejects when `promise` has not settled after `ms`: turns a hang into a failure. */
function settlesWithin<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  return Promise.race([
    promise,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what} still pending after ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/**
 * The LISTEN pattern the store uses: one dedicated client; when it ends (restart, crash,
 * terminated backend) a new one is connected and LISTENs again, then `onListen` runs, because
 * notifications sent meanwhile are lost and the caller must reload what it caches.
 */
function listenForever(
  url: string,
  channel: string,
  handlers: { onNotify(payload: string): void; onListen(): void; onEnd?(): void },
): { close(): Promise<void> } {
  let closed = false;
  let current: pg.Client | undefined;
  let retry: ReturnType<typeof setTimeout> | undefined;
  async function connect(delayMs: number): Promise<void> {
    const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 2_000 });
    client.on("error", () => {}); // "end" follows and drives the reconnection
    client.on("notification", (n) => {
      if (n.channel === channel) handlers.onNotify(n.payload ?? "");
    });
    try {
      await client.connect();
      await client.query(`LISTEN "${channel.replaceAll('"', '""')}"`);
    } catch {
      await client.end().catch(() => {});
      if (!closed) retry = setTimeout(() => connect(Math.min(delayMs * 2, 2_000)), delayMs);
      return;
    }
    if (closed) return void await client.end();
    current = client;
    client.once("end", () => {
      current = undefined;
      handlers.onEnd?.();
      if (!closed) retry = setTimeout(() => connect(100), 0);
    });
    handlers.onListen();
  }
  connect(100);
  return {
    async close() {
      closed = true;
      clearTimeout(retry);
      await current?.end();
    },
  };
}

/** A queue of events a test can await one at a time; a missing event fails after 30 s, not never. */
function events<T>() {
  const seen: T[] = [];
  const waiting: Array<(value: T) => void> = [];
  return {
    push(value: T) {
      const next = waiting.shift();
      if (next) next(value);
      else seen.push(value);
    },
    next(): Promise<T> {
      if (seen.length) return Promise.resolve(seen.shift()!);
      return settlesWithin(new Promise((resolve) => waiting.push(resolve)), 30_000, "an event");
    },
  };
}

Deno.test({
  name: "postgres harness - starts a server the password user can use, durability off",
  ignore,
  fn: () =>
    withServer(async (server) => {
      const pool = newPool(server.url);
      try {
        const { rows } = await pool.query<{ user: string; fsync: string; version: number }>(
          "SELECT current_user AS user, current_setting('fsync') AS fsync, " +
            "current_setting('server_version_num')::int AS version",
        );
        assert.equal(rows[0].user, TEST_PG_USER);
        assert.equal(rows[0].fsync, "off");
        assert.ok(rows[0].version >= 150000, `PostgreSQL 15 or later, got ${rows[0].version}`);
      } finally {
        await pool.end();
      }
      const wrong = newPool(server.url.replace(":test-password@", ":wrong@"));
      await assert.rejects(wrong.query("SELECT 1"), { code: "28P01" });
      await wrong.end();
    }),
});

Deno.test({
  name: "postgres harness - restart and crash keep the port and the committed rows",
  ignore,
  fn: () =>
    withServer(async (server) => {
      const pool = newPool(server.url);
      try {
        await pool.query("CREATE TABLE kept (n int)");
        await pool.query("INSERT INTO kept VALUES (1)");
        const before = server.pid;
        await server.restart();
        assert.notEqual(server.pid, before);
        await pool.query("INSERT INTO kept VALUES (2)").catch(() => {}); // may meet a dead idle client
        await server.kill();
        assert.equal(server.pid, undefined);
        await server.start(); // crash recovery
        const { rows } = await pool.query<{ n: number }>("SELECT count(*)::int AS n FROM kept");
        assert.ok(rows[0].n >= 1);
        const url = await server.createDatabase("fresh_one");
        const fresh = newPool(url);
        const { rows: db } = await fresh.query<{ db: string }>("SELECT current_database() AS db");
        assert.equal(db[0].db, "fresh_one");
        await fresh.end();
      } finally {
        await pool.end();
      }
    }),
});

Deno.test({
  name: "postgres harness - a port taken before the server binds it is replaced by a free one",
  ignore,
  async fn() {
    const squatter = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const taken = (squatter.addr as Deno.NetAddr).port;
    try {
      const server = await startPostgres({ port: taken });
      await server.stop();
      assert.notEqual(server.port, taken);
      assert.ok(server.url.includes(`:${server.port}/`));
    } finally {
      squatter.close();
    }
  },
});

Deno.test({
  name: "postgres harness - stop ends the server and removes its folder",
  ignore,
  async fn() {
    const server = await startPostgres();
    const pid = server.pid!;
    await server.stop();
    await server.stop(); // idempotent
    assert.equal(processAlive(pid), false);
    await assert.rejects(Deno.stat(server.dir), Deno.errors.NotFound);
  },
});

function processAlive(pid: number): boolean {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    return stat.slice(stat.lastIndexOf(")") + 2)[0] !== "Z";
  } catch {
    return false;
  }
}

Deno.test({
  name: "postgres harness - a test process that dies takes its server with it",
  ignore,
  async fn() {
    const script = `import { startPostgres } from ${JSON.stringify(HARNESS)};
      const server = await startPostgres();
      console.log(JSON.stringify({ pid: server.pid, dir: server.dir }));
      setInterval(() => {}, 1000);`;
    const child = new Deno.Command(Deno.execPath(), {
      args: ["eval", script],
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    let line = "";
    while (!line.includes("\n")) {
      const { value, done } = await reader.read();
      if (done) break;
      line += value;
    }
    child.kill("SIGKILL");
    await child.status;
    reader.releaseLock();
    await child.stdout.cancel().catch(() => {});
    const { pid, dir } = JSON.parse(line);
    // The parent-death signal is delivered at once; wait for the kernel to finish the job.
    for (let i = 0; processAlive(pid) && i < 500; i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(processAlive(pid), false, "postgres outlived its test process");
    // The next start removes the dead process's folder.
    const next = await startPostgres();
    await next.stop();
    await assert.rejects(Deno.stat(dir), Deno.errors.NotFound);
  },
});

Deno.test("postgres harness - skips with one line, or fails under REQUIRE_POSTGRES=1", async () => {
  const script = `import { postgresTestsEnabled } from ${JSON.stringify(HARNESS)};
    console.log(postgresTestsEnabled(), postgresTestsEnabled());`;
  const run = (require: string) =>
    new Deno.Command(Deno.execPath(), {
      args: ["eval", script],
      env: {
        POSTGRES_BIN_DIR: "/nonexistent",
        REQUIRE_POSTGRES: require,
        OC_POSTGRES_SKIP_NOTICE_PRINTED: "",
        NO_COLOR: "1",
      },
    }).output();
  const skipped = await run("0");
  const decode = (b: Uint8Array) => new TextDecoder().decode(b).trim();
  assert.equal(decode(skipped.stdout), "false false");
  const lines = decode(skipped.stderr).split("\n");
  assert.equal(lines.length, 1, decode(skipped.stderr));
  assert.match(lines[0], /^PostgreSQL tests skipped: install the Debian package postgresql \(/);
  const required = await run("1");
  assert.equal(required.success, false);
  assert.match(decode(required.stderr), /Cannot run PostgreSQL tests: .*REQUIRE_POSTGRES=1/);
});

Deno.test({
  name: "pg - NOTIFY on one connection reaches LISTEN on another",
  ignore,
  fn: () =>
    withServer(async (server) => {
      const pool = newPool(server.url);
      const payloads = events<string>();
      const listens = events<void>();
      const listener = listenForever(server.url, "fleet", {
        onNotify: (p) => payloads.push(p),
        onListen: () => listens.push(),
      });
      try {
        await listens.next();
        await pool.query("SELECT pg_notify('fleet', $1)", [JSON.stringify({ agent: "gpu-01" })]);
        assert.deepEqual(JSON.parse(await payloads.next()), { agent: "gpu-01" });
        // Inside a transaction the notification waits for COMMIT, and a rollback drops it.
        const client = await pool.connect();
        await client.query("BEGIN");
        await client.query("SELECT pg_notify('fleet', 'rolled back')");
        await client.query("ROLLBACK");
        await client.query("BEGIN");
        await client.query("SELECT pg_notify('fleet', 'committed')");
        await client.query("COMMIT");
        client.release();
        assert.equal(await payloads.next(), "committed");
      } finally {
        await listener.close();
        await pool.end();
      }
    }),
});

Deno.test({
  name: "pg - after a restart the listener ends, listens again and says so; the pool reconnects",
  ignore,
  fn: () =>
    withServer(async (server) => {
      const pool = newPool(server.url);
      const payloads = events<string>();
      const listens = events<void>();
      const ends = events<void>();
      const listener = listenForever(server.url, "fleet", {
        onNotify: (p) => payloads.push(p),
        onListen: () => listens.push(),
        onEnd: () => ends.push(),
      });
      try {
        await listens.next();
        await pool.query("SELECT 1"); // an idle pooled connection to be cut by the restart
        await server.restart();
        await ends.next();
        await listens.next(); // the moment the store reloads what it caches
        // An idle connection cut by the restart may fail one query; the next one reconnects.
        const first = await pool.query("SELECT 1").then(() => undefined, (e) => e);
        if (first) assert.ok(isUnavailable(first), String(first));
        await pool.query("SELECT pg_notify('fleet', 'after restart')");
        assert.equal(await payloads.next(), "after restart");

        await server.kill();
        await ends.next();
        await server.start();
        await listens.next();
        await pool.query("SELECT 1").catch(() => {});
        await pool.query("SELECT pg_notify('fleet', 'after crash')");
        assert.equal(await payloads.next(), "after crash");
      } finally {
        await listener.close();
        await pool.end();
      }
    }),
});

Deno.test({
  name: "pg - an advisory lock is freed when its holder's connection is terminated",
  ignore,
  fn: () =>
    withServer(async (server) => {
      const admin = newPool(server.adminUrl, { max: 1 });
      const holder = new pg.Client({ connectionString: server.url });
      const contender = new pg.Client({ connectionString: server.url });
      holder.on("error", () => {});
      contender.on("error", () => {});
      const holderEnded = new Promise<void>((resolve) => holder.once("end", () => resolve()));
      await holder.connect();
      await contender.connect();
      const take = (c: pg.Client) =>
        c.query<{ ok: boolean }>("SELECT pg_try_advisory_lock(4242) AS ok").then((r) =>
          r.rows[0].ok
        );
      try {
        assert.equal(await take(holder), true);
        assert.equal(await take(contender), false);
        const { rows } = await holder.query<{ pid: number }>("SELECT pg_backend_pid() AS pid");
        await admin.query("SELECT pg_terminate_backend($1)", [rows[0].pid]);
        // How the leader learns it is no longer the leader.
        await settlesWithin(holderEnded, 30_000, "the holder's end event");
        await assert.rejects(holder.query("SELECT 1"), (e) => isUnavailable(e));
        assert.equal(await take(contender), true);
      } finally {
        await holder.end().catch(() => {});
        await contender.end();
        await admin.end();
      }
    }),
});

Deno.test({
  name: "pg - queries fail instead of hanging while PostgreSQL is down or frozen",
  ignore,
  fn: () =>
    withServer(async (server) => {
      const pool = newPool(server.url, { query_timeout: 500, connectionTimeoutMillis: 500 });
      try {
        await pool.query("SELECT 1");
        await server.kill();
        for (let i = 0; i < 3; i++) {
          const error = await settlesWithin(pool.query("SELECT 1"), 15_000, "query while down")
            .then(() => undefined, (e) => e);
          assert.ok(error && isUnavailable(error), `unavailable, got ${error}`);
        }
        await server.start();
        await pool.query("SELECT 1");

        // A frozen server accepts TCP but never answers: only the client's timeouts help.
        server.pause();
        try {
          const onOpen = await settlesWithin(pool.query("SELECT 1"), 15_000, "query while frozen")
            .then(() => undefined, (e) => e);
          assert.ok(onOpen && isUnavailable(onOpen), `unavailable, got ${onOpen}`);
          const fresh = newPool(server.url, { connectionTimeoutMillis: 500 });
          const onConnect = await settlesWithin(fresh.query("SELECT 1"), 15_000, "connect")
            .then(() => undefined, (e) => e);
          assert.ok(onConnect && isUnavailable(onConnect), `unavailable, got ${onConnect}`);
          await fresh.end();
        } finally {
          server.resume();
        }
        await pool.query("SELECT 1").catch(() => {}); // a timed-out client is discarded, not reused
        const { rows } = await pool.query<{ ok: number }>("SELECT 1 AS ok");
        assert.equal(rows[0].ok, 1);
        assert.equal(isUnavailable(await pool.query("SELEC 1").catch((e) => e)), false);
      } finally {
        await pool.end();
      }
    }),
});
