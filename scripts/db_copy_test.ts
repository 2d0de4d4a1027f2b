/**
 * `deno task db:copy`: a database made by a real coordinator, copied SQLite → PostgreSQL → SQLite,
 * serves a coordinator started on each copy as it served the first: the agent's heartbeat secret,
 * the admin key, the client key (the revoked one stays refused), the session cookie, the admin
 * password and the agent token all still work, and every row came along in order.
 */
import assert from "node:assert/strict";
import { testConfig } from "../coordinator/config.ts";
import { startCoordinator } from "../coordinator/server.ts";
import { copyDatabase } from "../coordinator/store/copy.ts";
import type { FleetEvent, RequestRecord, Store } from "../coordinator/store/mod.ts";
import { openStore } from "../coordinator/store/open.ts";
import { registration } from "../coordinator/testing/app.ts";
import { postgresTestsEnabled, startPostgres } from "../coordinator/testing/postgres.ts";
import { databaseUrl } from "./db_copy.ts";

const postgres = postgresTestsEnabled() ? await startPostgres() : undefined;
let databases = 0;

/** What a coordinator handed out before the copy, to be tried on the copy. */
interface Fixture {
  agentToken: string;
  adminPassword: string;
  agentId: string;
  agentSecret: string;
  adminKey: string;
  clientKey: string;
  revokedKey: string;
  cookie: string;
}

/** Config of a coordinator that keeps its secrets in the database (nothing configured). */
function config(url: string) {
  return testConfig({
    databaseUrl: url,
    agentToken: "",
    adminPassword: "",
    healthCheckInterval: 3600,
  });
}

/** A coordinator on `url` used as people use one; stopped before it returns. */
async function populate(url: string): Promise<Fixture> {
  const c = await startCoordinator(config(url));
  try {
    const { agentToken, adminPassword } = c.firstStart;
    assert.ok(agentToken && adminPassword);
    const reg = await fetch(`${c.url}/api/agents`, {
      method: "POST",
      headers: { authorization: `Bearer ${agentToken}` },
      body: JSON.stringify(registration({ machine_name: "gpu-01", ollama_port: 9 })),
    });
    assert.equal(reg.status, 201);
    const { agent_id: agentId, agent_secret: agentSecret } = await reg.json();
    const login = await fetch(`${c.url}/login`, {
      method: "POST",
      body: new URLSearchParams({ password: adminPassword }),
      redirect: "manual",
    });
    await login.body?.cancel();
    assert.equal(login.status, 303);
    const cookie = login.headers.get("set-cookie")!.split(";")[0];
    const adminKey = (await c.ctx.security.createKey("ops", "admin")).key;
    const admin = { authorization: `Bearer ${adminKey}` };
    const newKey = async (name: string, limits?: Record<string, number>) => {
      const res = await fetch(`${c.url}/api/keys`, {
        method: "POST",
        headers: admin,
        body: JSON.stringify({ name, limits }),
      });
      assert.equal(res.status, 201);
      return await res.json() as { id: string; key: string };
    };
    // Limits travel with the key, and the request log names the key of each request.
    const client = await newKey("laptop", { requests_per_minute: 100, weight: 2 });
    const revoked = await newKey("old laptop");
    const gone = await fetch(`${c.url}/api/keys/${revoked.id}`, {
      method: "DELETE",
      headers: admin,
    });
    assert.equal(gone.status, 204);
    const pin = await fetch(`${c.url}/api/admin/pins`, {
      method: "PUT",
      headers: admin,
      body: JSON.stringify({ model: "llama3.2", label: "gpu" }),
    });
    assert.equal(pin.status, 200);
    // Client requests: key uses, and rows of the request log.
    for (let i = 0; i < 3; i++) {
      const res = await fetch(`${c.url}/api/generate`, {
        method: "POST",
        headers: { authorization: `Bearer ${client.key}` },
        body: JSON.stringify({ model: `missing-${i}`, prompt: "hi", stream: false }),
      });
      await res.body?.cancel();
      assert.equal(res.status, 404);
    }
    return {
      agentToken,
      adminPassword,
      agentId,
      agentSecret,
      adminKey,
      clientKey: client.key,
      revokedKey: revoked.key,
      cookie,
    };
  } finally {
    await c.stop();
  }
}

/** Everything a store holds, read through the store interface. */
async function contents(url: string) {
  const store: Store = await openStore(url);
  try {
    const snapshot = await store.load();
    const events: FleetEvent[] = [];
    for (let after = 0;;) {
      const page = await store.exportEvents(after, 2);
      events.push(...page.rows);
      if (page.rows.length < 2) break;
      after = page.next;
    }
    const requests: RequestRecord[] = [];
    for (let after = 0;;) {
      const page = await store.exportRequests(after, 2);
      requests.push(...page.rows);
      if (page.rows.length < 2) break;
      after = page.next;
    }
    return { ...snapshot, allKeys: await store.listKeys(), events, requests };
  } finally {
    await store.close();
  }
}

/** The copy holds the same rows; events are renumbered in the same order. */
function assertSameContents(
  copy: Awaited<ReturnType<typeof contents>>,
  original: Awaited<ReturnType<typeof contents>>,
) {
  assert.deepEqual(copy.settings, original.settings);
  assert.deepEqual(copy.agents, original.agents);
  assert.deepEqual(copy.allKeys, original.allKeys);
  assert.deepEqual(copy.keys, original.keys);
  assert.equal(copy.clientKeysEver, true);
  assert.deepEqual(copy.sessions, original.sessions);
  assert.deepEqual(copy.requests, original.requests);
  const withoutIds = (events: FleetEvent[]) => events.map(({ id: _, ...e }) => e);
  assert.deepEqual(withoutIds(copy.events), withoutIds(original.events));
  assert.ok(copy.events.every((e, i) => i === 0 || e.id > copy.events[i - 1].id));
}

/** A coordinator started on the copy accepts what the original handed out. */
async function assertServes(url: string, f: Fixture) {
  const c = await startCoordinator(config(url));
  try {
    // The agent token's and the admin password's hashes came along: nothing new was made.
    assert.deepEqual(c.firstStart, { agentToken: undefined, adminPassword: undefined });
    const beat = await fetch(`${c.url}/api/health`, {
      method: "POST",
      headers: { authorization: `Bearer ${f.agentSecret}` },
      body: JSON.stringify({
        agent_id: f.agentId,
        cpu_usage: 1,
        memory_usage: 2,
        active_requests: 0,
      }),
    });
    assert.equal(beat.status, 200, await beat.text());
    const agents = await fetch(`${c.url}/api/agents`, {
      headers: { authorization: `Bearer ${f.adminKey}` },
    });
    assert.equal(agents.status, 200);
    assert.ok(JSON.stringify(await agents.json()).includes(f.agentId));
    // Before the key is used here: the uses counted on the original came along.
    const keys = await (await fetch(`${c.url}/api/keys`, {
      headers: { authorization: `Bearer ${f.adminKey}` },
    })).json() as { name: string; uses: number }[];
    assert.equal(keys.find((k) => k.name === "laptop")?.uses, 3);
    const status = async (path: string, headers: HeadersInit) => {
      const res = await fetch(`${c.url}${path}`, { headers });
      await res.body?.cancel();
      return res.status;
    };
    assert.equal(await status("/api/tags", { authorization: `Bearer ${f.clientKey}` }), 200);
    assert.equal(await status("/api/tags", { authorization: `Bearer ${f.revokedKey}` }), 401);
    assert.equal(await status("/api/tags", {}), 401);
    assert.equal(await status("/api/agents", { cookie: f.cookie }), 200);
    const login = await fetch(`${c.url}/login`, {
      method: "POST",
      body: new URLSearchParams({ password: f.adminPassword }),
      redirect: "manual",
    });
    await login.body?.cancel();
    assert.equal(login.status, 303);
    const again = await fetch(`${c.url}/api/agents`, {
      method: "POST",
      headers: { authorization: `Bearer ${f.agentToken}` },
      body: JSON.stringify(registration({ machine_name: "gpu-02", ollama_port: 10 })),
    });
    await again.body?.cancel();
    assert.equal(again.status, 201);
    assert.deepEqual(c.ctx.scheduler.pins.list().map((p) => p.model), ["llama3.2:latest"]);
  } finally {
    await c.stop();
  }
}

async function withDir(fn: (dir: string) => Promise<void>) {
  const dir = await Deno.makeTempDir();
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test({
  name: "db:copy - SQLite to PostgreSQL and back: a coordinator on each copy serves as before",
  ignore: !postgres,
  async fn() {
    await withDir(async (dir) => {
      const first = `sqlite://${dir}/one.db`;
      const fixture = await populate(first);
      const original = await contents(first);
      assert.ok(original.events.length >= 5 && original.requests.length === 3);

      const pg = await postgres!.createDatabase(`copy_${++databases}`);
      const there = await copyDatabase(first, pg);
      assert.deepEqual(there, {
        settings: Object.keys(original.settings).length,
        agents: 1,
        api_keys: 3,
        sessions: 1,
        events: original.events.length,
        requests: 3,
      });
      assertSameContents(await contents(pg), original);

      // And back, with the command as people run it.
      const back = `${dir}/back.db`;
      const run = await new Deno.Command(Deno.execPath(), {
        args: ["run", "--allow-all", new URL("./db_copy.ts", import.meta.url).pathname, pg, back],
        stdout: "piped",
        stderr: "piped",
      }).output();
      const out = new TextDecoder().decode(run.stdout);
      assert.ok(run.success, new TextDecoder().decode(run.stderr));
      assert.match(
        out,
        /Copied .*1 agents, 3 API keys, 1 sessions, \d+ events, 3 request-log rows/,
      );
      // The password stays out of what it prints.
      assert.doesNotMatch(out, /test-password/);
      assertSameContents(await contents(`sqlite://${back}`), original);

      await assertServes(pg, fixture);
      await assertServes(`sqlite://${back}`, fixture);
    });
  },
});

Deno.test("db:copy - SQLite to SQLite without PostgreSQL at hand", async () => {
  await withDir(async (dir) => {
    const fixture = await populate(`sqlite://${dir}/a.db`);
    const original = await contents(`sqlite://${dir}/a.db`);
    await copyDatabase(`sqlite://${dir}/a.db`, `sqlite://${dir}/b.db`);
    assertSameContents(await contents(`sqlite://${dir}/b.db`), original);
    await assertServes(`sqlite://${dir}/b.db`, fixture);
  });
});

Deno.test("db:copy - refuses a target holding data, a source that is not a coordinator's, a database in use", async () => {
  await withDir(async (dir) => {
    const a = `sqlite://${dir}/a.db`;
    const b = `sqlite://${dir}/b.db`;
    await assert.rejects(copyDatabase(a, b), /Cannot copy from ".*a\.db": the file does not exist/);
    await Deno.writeTextFile(`${dir}/junk.db`, "not a database");
    await assert.rejects(
      copyDatabase(`sqlite://${dir}/junk.db`, b),
      /Cannot copy from .*: it is not a sound SQLite database/,
    );
    await populate(a);
    await populate(b);
    await assert.rejects(
      copyDatabase(a, b),
      /Cannot copy into ".*b\.db": it already holds data \(1 agent, \d+ settings, 3 API keys, 1 session, \d+ events, 3 request-log rows\); copy into an empty database/,
    );
    await assert.rejects(copyDatabase(a, a), TypeError);
    await assert.rejects(copyDatabase(a, "sqlite::memory:"), TypeError);

    // A coordinator running on the source (it would go on writing) or on the target.
    const running = await startCoordinator(config(a));
    try {
      await assert.rejects(
        copyDatabase(a, `sqlite://${dir}/c.db`),
        /Cannot copy from ".*a\.db": the database is in use \(stop the coordinator first\)/,
      );
      await assert.rejects(
        copyDatabase(`sqlite://${dir}/b.db`, a),
        /Cannot copy into ".*a\.db": the database is in use/,
      );
    } finally {
      await running.stop();
    }
    // Nothing was written where the copy was refused.
    await assert.rejects(Deno.stat(`${dir}/c.db`), Deno.errors.NotFound);
  });
});

Deno.test({
  name: "db:copy - refuses a PostgreSQL database a coordinator uses, or one it never made",
  ignore: !postgres,
  async fn() {
    await withDir(async (dir) => {
      const file = `sqlite://${dir}/a.db`;
      await populate(file);
      const empty = await postgres!.createDatabase(`copy_${++databases}`);
      await assert.rejects(
        copyDatabase(empty, `sqlite://${dir}/b.db`),
        /Cannot copy from "postgres:\/\/coordinator:\*\*\*@.*": it is not a coordinator database/,
      );
      const used = await postgres!.createDatabase(`copy_${++databases}`);
      const running = await startCoordinator(config(used));
      try {
        await assert.rejects(
          copyDatabase(file, used),
          /Cannot copy into .*: the database is in use by a coordinator \(\d+ connections?; stop every coordinator first\)/,
        );
      } finally {
        await running.stop();
      }
      // Once it stopped, the database still holds what the coordinator made at its start.
      await assert.rejects(copyDatabase(file, used), /already holds data \(2 settings\)/);
    });
  },
});

Deno.test("db:copy - a file path is a SQLite database; URLs stay as they are", () => {
  assert.equal(databaseUrl("coordinator.db"), "sqlite://coordinator.db");
  assert.equal(databaseUrl("/var/lib/oc/c.db"), "sqlite:///var/lib/oc/c.db");
  assert.equal(databaseUrl("sqlite://c.db"), "sqlite://c.db");
  assert.equal(databaseUrl("postgres://u:p@h/db"), "postgres://u:p@h/db");
  assert.equal(databaseUrl("postgresql://h/db"), "postgresql://h/db");
});
