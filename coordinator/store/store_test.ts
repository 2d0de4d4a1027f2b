/**
 * The store's contract, run against every implementation: SQLite in memory (inline), SQLite in
 * a file (in its worker), and, where the machine has it, PostgreSQL.
 */
import assert from "node:assert/strict";
import type { AgentRecord, ApiKeyRecord, RequestRecord, Store } from "./mod.ts";
import { NO_LIMITS, StoreError } from "./mod.ts";
import { openStore, redactUrl } from "./open.ts";
import { fillDisk, smallDisk } from "../testing/abuse.ts";
import { postgresTestsEnabled, startPostgres } from "../testing/postgres.ts";

// One PostgreSQL for this file, started outside any test so no test owns it; it ends with the
// test process. Each test gets a database of its own.
const postgres = postgresTestsEnabled() ? await startPostgres() : undefined;
let databases = 0;

/** A store under test and how to dispose of it. */
interface Subject {
  name: string;
  open(): Promise<{ store: Store; dispose(): Promise<void> }>;
}

const SUBJECTS: Subject[] = [
  {
    name: "sqlite memory",
    async open() {
      const store = await openStore("sqlite::memory:");
      return { store, dispose: () => store.close() };
    },
  },
  ...(postgres
    ? [{
      name: "postgres",
      async open() {
        const url = await postgres.createDatabase(`store_${++databases}`);
        const store = await openStore(url);
        return { store, dispose: () => store.close() };
      },
    }]
    : []),
  {
    name: "sqlite file",
    async open() {
      const dir = await Deno.makeTempDir();
      const store = await openStore(`sqlite://${dir}/c.db`);
      return {
        store,
        async dispose() {
          await store.close();
          await Deno.remove(dir, { recursive: true });
        },
      };
    },
  },
];

function agent(overrides: Partial<AgentRecord> = {}): AgentRecord {
  return {
    id: crypto.randomUUID(),
    machine_name: "gpu-01",
    display_name: null,
    labels: [],
    ip_address: "10.0.0.5",
    ollama_port: 11434,
    ollama_version: "0.12.6",
    agent_version: "1.0.0",
    os: "linux",
    parallel: 2,
    weight: 1,
    drain: false,
    status: "online",
    status_reason: null,
    registered_at: Date.parse("2026-01-01T00:00:00Z"),
    last_seen: Date.parse("2026-01-01T00:00:05Z"),
    metrics: null,
    models: [{ name: "llama3.2:latest", size: 2_000_000_000 }],
    loaded_models: [],
    secret_hash: "a".repeat(64),
    ...overrides,
  };
}

function request(id: string, at: string, overrides: Partial<RequestRecord> = {}): RequestRecord {
  return {
    id,
    at,
    route: "/api/chat",
    model: "llama3.2",
    agent_id: null,
    agent_name: null,
    status: 200,
    latency_ms: 12.5,
    ttft_ms: null,
    queued_ms: null,
    tokens_in: 3,
    tokens_out: 8,
    tokens_per_second: 100,
    attempts: 1,
    error: null,
    client_request_id: null,
    key_id: null,
    ...overrides,
  };
}

function apiKey(overrides: Partial<ApiKeyRecord> = {}): ApiKeyRecord {
  return {
    id: "k1",
    name: "laptop",
    prefix: "oc_abcd",
    hash: "h1",
    scope: "client",
    created_at: "2026-01-01T00:00:00.000Z",
    last_used_at: null,
    uses: 0,
    revoked_at: null,
    limits: { ...NO_LIMITS },
    ...overrides,
  };
}

for (const subject of SUBJECTS) {
  const test = (name: string, fn: (store: Store) => Promise<void>) =>
    Deno.test(`store (${subject.name}) - ${name}`, async () => {
      const { store, dispose } = await subject.open();
      try {
        await fn(store);
      } finally {
        await dispose();
      }
    });

  test("an empty store loads empty", async (store) => {
    const s = await store.load();
    assert.deepEqual(s, {
      agents: [],
      settings: {},
      keys: [],
      clientKeysEver: false,
      sessions: [],
    });
  });

  test("agents round-trip whole, update field by field and go", async (store) => {
    const a = agent({
      labels: ["gpu", "fast"],
      metrics: { cpu_usage: 5, memory_usage: 6, active_requests: 0, gpus: [{ name: "RTX" }] },
      loaded_models: [{ name: "llama3.2:latest", size_vram: 5 }],
      display_name: "Box ✓",
    });
    const b = agent({ machine_name: "gpu-02", registered_at: a.registered_at + 1 });
    await store.putAgent(a);
    await store.putAgent(b);
    assert.deepEqual((await store.load()).agents, [a, b]);
    await store.updateAgents([
      { id: a.id, fields: { drain: true, weight: 0.5, status: "draining", last_seen: 99 } },
      { id: "unknown", fields: { drain: true } },
      { id: b.id, fields: {} },
    ]);
    const [a2] = (await store.load()).agents;
    assert.deepEqual(a2, { ...a, drain: true, weight: 0.5, status: "draining", last_seen: 99 });
    assert.equal(await store.deleteAgent(a.id), true);
    assert.equal(await store.deleteAgent(a.id), false);
    assert.deepEqual((await store.load()).agents.map((x) => x.id), [b.id]);
  });

  test("settings are kept and replaced", async (store) => {
    await store.setSetting("k", "1");
    await store.setSetting("k", "2");
    await store.setSetting("other", "x");
    assert.deepEqual((await store.load()).settings, { k: "2", other: "x" });
  });

  test("a setting added only where none exists keeps the first value", async (store) => {
    assert.equal(await store.addSetting("token", "first"), "first");
    assert.equal(await store.addSetting("token", "second"), "first");
    assert.equal((await store.load()).settings.token, "first");
  });

  test("events get increasing ids and page back by id", async (store) => {
    const stored = await store.addEvents([
      { at: "2026-01-01T00:00:00.000Z", kind: "registered", agent_id: "a", message: "one" },
      { at: "2026-01-01T00:00:01.000Z", kind: "status", agent_id: "b", message: "two" },
      { at: "2026-01-01T00:00:02.000Z", kind: "pin", agent_id: null, message: "three" },
    ]);
    assert.ok(stored[0].id < stored[1].id && stored[1].id < stored[2].id);
    assert.deepEqual((await store.events()).map((e) => e.message), ["three", "two", "one"]);
    assert.deepEqual(await store.events({ agentId: "b" }), [stored[1]]);
    assert.deepEqual(await store.events({ beforeId: stored[2].id, limit: 1 }), [stored[1]]);
  });

  test("request-log rows are stored once and filtered", async (store) => {
    await store.addRequests([
      request("r1", "2026-01-01T00:00:00.000Z"),
      request("r2", "2026-01-01T00:00:01.000Z", { status: 503, error: "busy", model: "qwen3" }),
      request("r3", "2026-01-01T00:00:02.000Z", { client_request_id: "client-7" }),
    ]);
    await store.addRequests([request("r1", "2026-01-01T00:00:09.000Z", { status: 500 })]);
    assert.deepEqual((await store.requests()).map((r) => r.id), ["r3", "r2", "r1"]);
    assert.deepEqual(
      (await store.requests()).find((r) => r.id === "r1"),
      request("r1", "2026-01-01T00:00:00.000Z"),
    );
    // The client's own id is kept beside ours.
    assert.equal((await store.requests())[0].client_request_id, "client-7");
    assert.deepEqual((await store.requests({ status: "error" })).map((r) => r.id), ["r2"]);
    assert.deepEqual((await store.requests({ model: "llama3.2" })).map((r) => r.id), ["r3", "r1"]);
    assert.deepEqual(
      (await store.requests({ since: "2026-01-01T00:00:00.500Z" })).map((r) => r.id),
      ["r3", "r2"],
    );
    assert.deepEqual(
      (await store.requests({ until: "2026-01-01T00:00:00.500Z" })).map((r) => r.id),
      ["r1"],
    );
  });

  test("API keys are revoked once, count uses and stay listed", async (store) => {
    const key = apiKey();
    await store.insertKey(key);
    await store.addKeyUses([{ id: "k1", uses: 3, at: "2026-01-02T00:00:00.000Z" }]);
    await store.addKeyUses([{ id: "k1", uses: 2, at: "2026-01-01T12:00:00.000Z" }]);
    const s = await store.load();
    assert.equal(s.clientKeysEver, true);
    assert.deepEqual(s.keys, [{ ...key, uses: 5, last_used_at: "2026-01-02T00:00:00.000Z" }]);
    assert.equal(await store.revokeKey("k1", "2026-01-03T00:00:00.000Z"), true);
    assert.equal(await store.revokeKey("k1", "2026-01-04T00:00:00.000Z"), false);
    const after = await store.load();
    assert.deepEqual(after.keys, []);
    assert.equal(after.clientKeysEver, true);
    assert.equal((await store.listKeys())[0].revoked_at, "2026-01-03T00:00:00.000Z");
  });

  test("API key limits round-trip, change and stay with a revoked key", async (store) => {
    const limits = {
      requests_per_minute: 60,
      tokens_per_minute: 10_000,
      concurrent: 2,
      weight: 0.5,
    };
    await store.insertKey(apiKey({ limits }));
    await store.insertKey(apiKey({ id: "k2", hash: "h2", name: "free" }));
    const loaded = Object.fromEntries((await store.load()).keys.map((k) => [k.id, k]));
    assert.deepEqual(loaded.k1.limits, limits);
    assert.deepEqual(loaded.k2.limits, NO_LIMITS);
    // Limits replace limits whole; a rename leaves them alone.
    const next = { requests_per_minute: null, tokens_per_minute: 500, concurrent: null, weight: 3 };
    assert.equal(await store.updateKey("k1", { limits: next }), true);
    assert.equal(await store.updateKey("k1", { name: "laptop 2" }), true);
    const k1 = (await store.load()).keys.find((k) => k.id === "k1")!;
    assert.equal(k1.name, "laptop 2");
    assert.deepEqual(k1.limits, next);
    assert.equal(await store.updateKey("nope", { name: "x" }), false);
    await store.revokeKey("k2", "2026-01-03T00:00:00.000Z");
    assert.equal(await store.updateKey("k2", { limits: next }), false);
    assert.deepEqual((await store.listKeys()).find((k) => k.id === "k2")!.limits, NO_LIMITS);
  });

  test("the request log keeps each request's key and sums usage per key and bucket", async (store) => {
    await store.addRequests([
      request("a1", "2026-01-01T00:00:05.000Z", { key_id: "ka", tokens_in: 10, tokens_out: 20 }),
      request("a2", "2026-01-01T00:00:59.999Z", { key_id: "ka", tokens_in: 1, tokens_out: 2 }),
      request("a3", "2026-01-01T00:01:00.000Z", {
        key_id: "ka",
        status: 429,
        tokens_in: null,
        tokens_out: null,
      }),
      request("b1", "2026-01-01T00:00:30.000Z", { key_id: "kb", tokens_in: 5, tokens_out: 5 }),
      request("n1", "2026-01-01T00:00:30.000Z"),
      request("old", "2025-12-31T23:59:00.000Z", { key_id: "ka" }),
    ]);
    assert.deepEqual((await store.requests({ keyId: "ka" })).map((r) => r.id), [
      "a3",
      "a2",
      "a1",
      "old",
    ]);
    assert.equal((await store.requests({ keyId: "kb" }))[0].key_id, "kb");
    const minute = Date.parse("2026-01-01T00:00:00Z");
    assert.deepEqual(
      await store.keyUsage({ since: "2026-01-01T00:00:00.000Z", bucketMs: 60_000 }),
      [
        { key_id: "ka", t: minute, requests: 2, tokens_in: 11, tokens_out: 22, limited: 0 },
        { key_id: "kb", t: minute, requests: 1, tokens_in: 5, tokens_out: 5, limited: 0 },
        { key_id: "ka", t: minute + 60_000, requests: 1, tokens_in: 0, tokens_out: 0, limited: 1 },
      ],
    );
  });

  test("sessions load until they expire and end on demand", async (store) => {
    const future = new Date(Date.now() + 3_600_000).toISOString();
    const past = new Date(Date.now() - 1000).toISOString();
    const now = new Date().toISOString();
    await store.insertSession({ id_hash: "s1", csrf: "c1", created_at: now, expires_at: future });
    await store.insertSession({ id_hash: "s2", csrf: "c2", created_at: now, expires_at: future });
    await store.insertSession({ id_hash: "old", csrf: "c3", created_at: now, expires_at: past });
    assert.deepEqual((await store.load()).sessions.map((s) => s.id_hash).sort(), ["s1", "s2"]);
    await store.deleteSession("s1");
    assert.deepEqual((await store.load()).sessions.map((s) => s.id_hash), ["s2"]);
    await store.deleteAllSessions();
    assert.deepEqual((await store.load()).sessions, []);
  });

  test("retention prunes old rows and keeps the newest events", async (store) => {
    await store.addRequests([
      request("old", "2026-01-01T00:00:00.000Z"),
      request("new", "2026-02-01T00:00:00.000Z"),
      request("newer", "2026-02-02T00:00:00.000Z"),
      request("newest", "2026-02-03T00:00:00.000Z"),
    ]);
    const events = Array.from({ length: 10 }, (_, i) => ({
      at: new Date(Date.parse("2026-01-20T00:00:00Z") + i * 86_400_000).toISOString(),
      kind: "model",
      agent_id: null,
      message: `e${i}`,
    }));
    await store.addEvents(events);
    const pruned = await store.prune({
      requestsBefore: "2026-01-15T00:00:00.000Z",
      maxRequests: 2,
      eventsBefore: "2026-01-22T00:00:00.000Z",
      maxEvents: 5,
      sessionsBefore: "2026-01-15T00:00:00.000Z",
    });
    assert.deepEqual(pruned, { requests: 2, events: 5, sessions: 0 });
    assert.deepEqual((await store.requests()).map((r) => r.id), ["newest", "newer"]);
    assert.deepEqual((await store.events()).map((e) => e.message), ["e9", "e8", "e7", "e6", "e5"]);
    assert.deepEqual(await store.counts(), {
      agents: 0,
      events: 5,
      requests: 2,
      api_keys: 0,
      sessions: 0,
    });
  });

  test("events and the request log read whole, page by page, in the order stored", async (store) => {
    const stored = await store.addEvents(
      Array.from({ length: 7 }, (_, i) => ({
        at: new Date(Date.parse("2026-01-01T00:00:00Z") + i * 1000).toISOString(),
        kind: "model",
        agent_id: i % 2 ? "a" : null,
        message: `e${i}`,
      })),
    );
    const events = [];
    let page = await store.exportEvents(0, 3);
    events.push(...page.rows);
    while (page.rows.length === 3) {
      page = await store.exportEvents(page.next, 3);
      events.push(...page.rows);
    }
    assert.deepEqual(events, stored);
    assert.deepEqual(await store.exportEvents(page.next, 3), { rows: [], next: page.next });

    // Stored in an order their times do not follow: the export keeps the stored order.
    const times = [5, 1, 9, 3, 7];
    const records = times.map((t, i) =>
      request(`r${i}`, `2026-01-01T00:00:0${t}.000Z`, {
        ttft_ms: i,
        error: i === 2 ? "x" : null,
        key_id: i === 3 ? "k1" : null,
      })
    );
    await store.addRequests(records.slice(0, 2));
    await store.addRequests(records.slice(2));
    const rows = [];
    let after = 0;
    for (;;) {
      const p = await store.exportRequests(after, 2);
      rows.push(...p.rows);
      if (p.rows.length < 2) break;
      assert.ok(p.next > after);
      after = p.next;
    }
    assert.deepEqual(rows, records);
  });

  test("a key copied in whole keeps its uses, last use, revocation and limits", async (store) => {
    const revoked: ApiKeyRecord = {
      id: "k-old",
      name: "old laptop",
      prefix: "oc_old1",
      hash: "h-old",
      scope: "client" as const,
      created_at: "2025-12-01T00:00:00.000Z",
      last_used_at: "2025-12-24T10:00:00.000Z",
      uses: 1234,
      revoked_at: "2025-12-25T00:00:00.000Z",
      limits: { requests_per_minute: 10, tokens_per_minute: null, concurrent: 1, weight: 2 },
    };
    const admin: ApiKeyRecord = {
      ...revoked,
      id: "k-admin",
      name: "ops",
      prefix: "oc_adm1",
      hash: "h-admin",
      scope: "admin" as const,
      created_at: "2025-12-02T00:00:00.000Z",
      uses: 7,
      revoked_at: null,
      limits: { ...NO_LIMITS },
    };
    await store.insertKey(revoked);
    await store.insertKey(admin);
    assert.deepEqual(await store.listKeys(), [admin, revoked]);
    const s = await store.load();
    assert.deepEqual(s.keys, [admin]);
    // A revoked client key still means "client keys were in use": auth stays on.
    assert.equal(s.clientKeysEver, true);
  });

  test("a failed call is a StoreError and the store goes on", async (store) => {
    const a = agent();
    await store.putAgent(a);
    // The same machine and address twice breaks a uniqueness rule: a bug, not an outage.
    const error = await store.putAgent({ ...a, id: "other" }).catch((e) => e);
    assert.ok(error instanceof StoreError, String(error));
    assert.equal(error.unavailable, false);
    assert.equal(error.conflict, true);
    assert.equal((await store.load()).agents.length, 1);
  });
}

Deno.test("store (sqlite file) - coordinators opening a fresh file together migrate it once", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const stores = await Promise.all(
      Array.from({ length: 4 }, () => openStore(`sqlite://${dir}/c.db`)),
    );
    await stores[0].setSetting("k", "v");
    for (const s of stores) assert.equal((await s.load()).settings.k, "v");
    await Promise.all(stores.map((s) => s.close()));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("store (sqlite file) - a full disk fails writes as unavailable; writes resume once space is back", async () => {
  const disk = await smallDisk("1m");
  if (!disk) {
    console.log("Disk-full test skipped: this machine cannot mount a tmpfs (needs root)");
    return;
  }
  try {
    const store = await openStore(`sqlite://${disk.dir}/c.db`);
    const filler = await fillDisk(disk.dir);
    let failure: unknown;
    for (let i = 0; i < 200 && failure === undefined; i++) {
      const batch = Array.from(
        { length: 50 },
        (_, j) => request(`r${i}-${j}`, new Date().toISOString(), { error: "x".repeat(500) }),
      );
      await store.addRequests(batch).catch((e) => failure = e);
    }
    assert.ok(failure instanceof StoreError, `expected a StoreError, got ${failure}`);
    assert.equal(failure.unavailable, true);
    assert.match(failure.message, /full|disk|I\/O/i);
    // Still readable while full.
    assert.ok((await store.counts()).requests >= 0);
    // Space comes back: the same write now succeeds.
    await Deno.remove(filler);
    await store.addRequests([request("after", new Date().toISOString())]);
    assert.ok((await store.requests({ limit: 10_000 })).some((r) => r.id === "after"));
    await store.close();
  } finally {
    await disk.unmount();
  }
});

Deno.test({
  name:
    "store (postgres) - coordinators starting together migrate once; a database away is unavailable",
  ignore: !postgres,
  async fn() {
    const url = await postgres!.createDatabase("together");
    const stores = await Promise.all(Array.from({ length: 4 }, () => openStore(url)));
    try {
      await stores[0].setSetting("k", "v");
      for (const s of stores) assert.equal((await s.load()).settings.k, "v");
      // The server stops: calls fail fast as unavailable, and work again once it is back.
      await postgres!.shutdown();
      const error = await stores[1].setSetting("k", "w").catch((e) => e);
      assert.ok(error instanceof StoreError, String(error));
      assert.equal(error.unavailable, true);
      await postgres!.start();
      let ok = false;
      for (let i = 0; i < 50 && !ok; i++) {
        ok = await stores[1].setSetting("k", "w").then(() => true, () => false);
        if (!ok) await new Promise((r) => setTimeout(r, 100));
      }
      assert.ok(ok, "the store did not come back with the database");
      assert.equal((await stores[2].load()).settings.k, "w");
    } finally {
      await Promise.all(stores.map((s) => s.close()));
    }
  },
});

Deno.test("store - a database URL in a log line hides its password", () => {
  assert.equal(
    redactUrl("postgres://oc:s3cr@t/x@db.example:5432/fleet"),
    "postgres://oc:***@db.example:5432/fleet",
  );
  assert.equal(redactUrl("postgresql://oc@db/fleet"), "postgresql://oc@db/fleet");
  assert.equal(redactUrl("sqlite://coordinator.db"), "sqlite://coordinator.db");
});
