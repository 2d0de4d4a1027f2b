/**
 * What only the PostgreSQL store has to get right: its change feed, read by the other
 * coordinators as "everything numbered above what I saw", must never skip a change that
 * committed after a higher-numbered one; and a connection that dies while the store holds it
 * fails that call, never the process.
 */
import assert from "node:assert/strict";
// @ts-types="@types/pg"
import pg from "pg";
import type { AgentRecord, Store } from "../mod.ts";
import { EVENTS_WRITE_LOCK, openPostgresStore } from "./store.ts";
import type { CrashOutcome } from "../../testing/postgres_crash.ts";
import { postgresTestsEnabled, startPostgres, type TestPostgres } from "../../testing/postgres.ts";

const postgres = postgresTestsEnabled() ? await startPostgres() : undefined;
let databases = 0;

function agent(name: string): AgentRecord {
  return {
    id: crypto.randomUUID(),
    machine_name: name,
    display_name: null,
    labels: [],
    ip_address: "10.0.0.5",
    ollama_port: 11434,
    ollama_version: "0.12.6",
    agent_version: null,
    os: null,
    parallel: 1,
    weight: 1,
    drain: false,
    status: "online",
    status_reason: null,
    registered_at: 1,
    last_seen: 1,
    metrics: null,
    models: [],
    loaded_models: [],
    secret_hash: null,
  };
}

/** Backends of `db` waiting for a lock (row or advisory), as the server sees them now. */
async function waiting(server: TestPostgres, db: string): Promise<number> {
  return Number(
    await server.psql(
      `SELECT count(*) FROM pg_stat_activity WHERE datname = '${db}' AND wait_event_type = 'Lock'`,
    ),
  );
}

/** Waits until `check` holds (fails after 30 s rather than hanging the run). */
async function until(what: string, check: () => Promise<boolean>): Promise<void> {
  for (let i = 0; !(await check()); i++) {
    if (i > 3000) throw new Error(`${what}: not seen within 30 s`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

async function setup(): Promise<{ name: string; url: string; one: Store; two: Store }> {
  const name = `feed_${++databases}`;
  const url = await postgres!.createDatabase(name);
  const [one, two] = await Promise.all([openPostgresStore(url), openPostgresStore(url)]);
  return { name, url, one, two };
}

Deno.test({
  name: "postgres store - the agents' change feed misses no change that commits after a newer one",
  ignore: !postgres,
  async fn() {
    const { name, url, one, two } = await setup();
    const blocker = new pg.Client({ connectionString: url });
    await blocker.connect();
    try {
      const [x, y, z] = [agent("x"), agent("y"), agent("z")];
      for (const a of [x, y, z]) await one.putAgent(a);
      const start = (await two.cluster!.agentsChangedSince(0)).watermark;

      // Coordinator one writes a batch: y first, then x, whose row another transaction holds.
      // y has drawn its change number and waits, uncommitted, behind x.
      await blocker.query("BEGIN");
      await blocker.query("SELECT 1 FROM agents WHERE id = $1 FOR UPDATE", [x.id]);
      const first = one.updateAgents([
        { id: y.id, fields: { drain: true } },
        { id: x.id, fields: { weight: 0.5 } },
      ]);
      await until("the first batch waiting", async () => await waiting(postgres!, name) >= 1);
      // Coordinator two writes z meanwhile. Without ordering it commits at once, with a higher
      // number than y's; with ordering it waits for the first batch.
      let secondDone = false;
      const second = two.updateAgents([{ id: z.id, fields: { drain: true } }])
        .then(() => secondDone = true);
      await until(
        "the second batch done or waiting",
        async () => secondDone || await waiting(postgres!, name) >= 2,
      );
      // A third coordinator reads the feed now, and again once everything committed.
      const early = await two.cluster!.agentsChangedSince(start);
      await blocker.query("COMMIT");
      await Promise.all([first, second]);
      const late = await two.cluster!.agentsChangedSince(early.watermark);
      const seen = new Map([...early.agents, ...late.agents].map((a) => [a.id, a]));
      assert.equal(seen.get(y.id)?.drain, true, "y's drain never reached the feed's reader");
      assert.equal(seen.get(x.id)?.weight, 0.5);
      assert.equal(seen.get(z.id)?.drain, true);
    } finally {
      await blocker.end();
      await Promise.all([one.close(), two.close()]);
    }
  },
});

Deno.test({
  name: "postgres store - events are numbered under a lock held to their commit",
  ignore: !postgres,
  async fn() {
    // Events are one INSERT, so nothing can hold one between drawing ids and committing from
    // outside; what keeps the ids in commit order is the lock, so the test holds it.
    const { name, url, one, two } = await setup();
    const blocker = new pg.Client({ connectionString: url });
    await blocker.connect();
    try {
      await blocker.query("BEGIN");
      await blocker.query("SELECT pg_advisory_xact_lock($1)", [EVENTS_WRITE_LOCK]);
      let done = false;
      const added = one.addEvents([
        { at: new Date().toISOString(), kind: "k", agent_id: null, message: "m" },
      ]).then((e) => (done = true, e));
      await until("the event write waiting", async () => await waiting(postgres!, name) >= 1);
      assert.equal(done, false);
      assert.deepEqual(await two.cluster!.eventsAfter(0), []);
      await blocker.query("COMMIT");
      const [event] = await added;
      assert.deepEqual(await two.cluster!.eventsAfter(0), [event]);
    } finally {
      await blocker.end();
      await Promise.all([one.close(), two.close()]);
    }
  },
});

Deno.test({
  name: "postgres store - a server crash during a transaction fails that call, not the process",
  ignore: !postgres,
  async fn() {
    // A server of its own: this test crashes it.
    const server = await startPostgres();
    try {
      const out = await new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "-A",
          new URL("../../testing/postgres_crash.ts", import.meta.url).pathname,
          server.url,
        ],
        stdout: "piped",
        stderr: "piped",
        signal: AbortSignal.timeout(60_000),
      }).output();
      const stdout = new TextDecoder().decode(out.stdout);
      const stderr = new TextDecoder().decode(out.stderr);
      // pg reports a connection that dies while lent out as an "error" event on it. Unheard, it
      // escapes as uncaught: reported when the program ends (as here, for a connection that
      // closed) or ending it at once (for a connection reset, as a coordinator saw).
      assert.doesNotMatch(stdout + stderr, /Uncaught/);
      assert.equal(out.code, 0, stderr);
      const outcome: CrashOutcome = JSON.parse(stdout.split("\n")[0]);
      assert.equal(outcome.error.name, "StoreError", outcome.error.message);
      assert.equal(outcome.error.unavailable, true);
      assert.equal(outcome.recovered, true);
    } finally {
      await server.stop();
    }
  },
});
