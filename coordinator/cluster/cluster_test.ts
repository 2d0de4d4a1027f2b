/**
 * Several coordinators on one PostgreSQL act as one: what one stores, the others apply within a
 * second; one of them leads the chores and another takes over when it goes.
 */
import assert from "node:assert/strict";
import { TEST_AGENT_TOKEN, testConfig } from "../config.ts";
import { type Coordinator, startCoordinator } from "../server.ts";
import { postgresTestsEnabled, startPostgres } from "../testing/postgres.ts";
import { registration } from "../testing/app.ts";
import type { BusMessage } from "../telemetry/bus.ts";
import { openStore } from "../store/open.ts";
import { type Store, type StoreCluster, StoreError } from "../store/mod.ts";

const postgres = postgresTestsEnabled() ? await startPostgres() : undefined;
let databases = 0;

/** Polls `check` until it holds; returns how long that took, or throws after `ms`. */
async function within(ms: number, what: string, check: () => boolean | Promise<boolean>) {
  const t0 = performance.now();
  while (!(await check())) {
    if (performance.now() - t0 > ms) throw new Error(`${what}: not seen within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
  return performance.now() - t0;
}

async function cluster(n: number, overrides = {}) {
  const url = await postgres!.createDatabase(`cluster_${++databases}`);
  // The agents' Ollama: it answers the leader's probes, so an agent goes offline only when it
  // falls silent (a port where nothing listens would take it offline at the first probe, in a
  // race with what each test checks).
  const ollama = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    () =>
      new Response(
        "Ollama is running",
      ),
  );
  const nodes: Coordinator[] = [];
  for (let i = 0; i < n; i++) {
    nodes.push(
      await startCoordinator(
        testConfig({ databaseUrl: url, healthCheckInterval: 1, ...overrides }),
      ),
    );
  }
  const keys = await Promise.all(
    nodes.map(async (c) => (await c.ctx.security.createKey(`admin-${c.port}`, "admin")).key),
  );
  const admin = (i: number) => ({ authorization: `Bearer ${keys[i]}` });
  const close = async () => {
    await Promise.all(nodes.map((c) => c.stop()));
    await ollama.shutdown();
  };
  const register = (c: Coordinator, name: string) => registerOn(c, name, ollama.addr.port);
  return { url, nodes, keys, admin, register, close, [Symbol.asyncDispose]: close };
}

async function registerOn(c: Coordinator, name: string, ollamaPort: number) {
  const res = await fetch(`${c.url}/api/agents`, {
    method: "POST",
    headers: { authorization: `Bearer ${TEST_AGENT_TOKEN}` },
    body: JSON.stringify(registration({ machine_name: name, ollama_port: ollamaPort })),
  });
  assert.equal(res.status, 201);
  return await res.json() as { agent_id: string; agent_secret: string };
}

Deno.test({
  name:
    "cluster - a registration, drain, pin, alias, placement rule and key revocation on one is seen on the others within 1 s",
  ignore: !postgres,
  async fn() {
    await using c = await cluster(3);
    const [a, b, third] = c.nodes;
    const seen: Record<string, number> = {};
    const reg = await c.register(a, "gpu-01");
    seen.registration = await within(
      1000,
      "registration on B",
      () => !!b.ctx.registry.get(reg.agent_id),
    );
    await within(1000, "registration on C", () => !!third.ctx.registry.get(reg.agent_id));
    // The agent's secret works on every coordinator (it fails over to another).
    const beat = await fetch(`${b.url}/api/health`, {
      method: "POST",
      headers: { authorization: `Bearer ${reg.agent_secret}` },
      body: JSON.stringify({
        agent_id: reg.agent_id,
        cpu_usage: 1,
        memory_usage: 2,
        active_requests: 0,
      }),
    });
    assert.equal(beat.status, 200, await beat.text());

    const drain = await fetch(`${a.url}/api/agents/${reg.agent_id}`, {
      method: "PATCH",
      headers: c.admin(0),
      body: JSON.stringify({ drain: true }),
    });
    assert.equal(drain.status, 200);
    seen.drain = await within(
      1000,
      "drain on B",
      () => b.ctx.registry.get(reg.agent_id)?.status === "draining",
    );

    const pin = await fetch(`${b.url}/api/admin/pins`, {
      method: "PUT",
      headers: c.admin(1),
      body: JSON.stringify({ model: "llama3.2", label: "gpu" }),
    });
    assert.equal(pin.status, 200);
    seen.pin = await within(1000, "pin on A", () => a.ctx.scheduler.pins.list().length === 1);

    const alias = await fetch(`${third.url}/api/admin/aliases`, {
      method: "PUT",
      headers: c.admin(2),
      body: JSON.stringify({ alias: "gpt-4o-mini", model: "llama3.2" }),
    });
    assert.equal(alias.status, 200);
    seen.alias = await within(
      1000,
      "alias on B",
      () => b.ctx.aliases.resolve("gpt-4o-mini")?.model === "llama3.2",
    );

    const rule = await fetch(`${b.url}/api/admin/placements`, {
      method: "PUT",
      headers: c.admin(1),
      body: JSON.stringify({ model: "llama3.2", on: { label: "gpu" }, warm: 1 }),
    });
    assert.equal(rule.status, 200);
    seen.placement = await within(
      1000,
      "placement rule on C",
      () => third.ctx.placement.rules.list()[0]?.warm === 1,
    );

    const created = await (await fetch(`${a.url}/api/keys`, {
      method: "POST",
      headers: c.admin(0),
      body: JSON.stringify({ name: "laptop" }),
    })).json();
    const asClient = { authorization: `Bearer ${created.key}` };
    await within(1000, "new key on C", async () => {
      const r = await fetch(`${third.url}/api/tags`, { headers: asClient });
      await r.body?.cancel();
      return r.status === 200;
    });
    const revoke = await fetch(`${a.url}/api/keys/${created.id}`, {
      method: "DELETE",
      headers: c.admin(0),
    });
    assert.equal(revoke.status, 204);
    seen.revocation = await within(1000, "revocation on C", async () => {
      const r = await fetch(`${third.url}/api/tags`, { headers: asClient });
      await r.body?.cancel();
      return r.status === 401;
    });

    const removed = await fetch(`${third.url}/api/agents/${reg.agent_id}`, {
      method: "DELETE",
      headers: c.admin(2),
    });
    assert.equal(removed.status, 204);
    seen.removal = await within(1000, "removal on A", async () => {
      const r = await fetch(`${a.url}/api/health`, {
        method: "POST",
        headers: { authorization: `Bearer ${reg.agent_secret}` },
        body: JSON.stringify({
          agent_id: reg.agent_id,
          cpu_usage: 1,
          memory_usage: 2,
          active_requests: 0,
        }),
      });
      await r.body?.cancel();
      return r.status === 401;
    });
    console.log(
      `cluster: seen on the others after ${
        Object.entries(seen).map(([k, v]) => `${k} ${v.toFixed(0)} ms`).join(", ")
      }`,
    );
  },
});

Deno.test({
  name:
    "cluster - a session made on one works on the other; events of one reach the other's live bus",
  ignore: !postgres,
  async fn() {
    await using c = await cluster(2);
    const [a, b] = c.nodes;
    const events: BusMessage[] = [];
    b.ctx.bus.subscribe((m) => events.push(m), ["event"]);
    const login = await fetch(`${a.url}/login`, {
      method: "POST",
      body: new URLSearchParams({ password: "test-admin-password" }),
      redirect: "manual",
    });
    await login.body?.cancel();
    const cookie = login.headers.get("set-cookie")!.split(";")[0];
    await within(1000, "session on B", async () => {
      const r = await fetch(`${b.url}/api/agents`, { headers: { cookie } });
      await r.body?.cancel();
      return r.status === 200;
    });
    await c.register(a, "gpu-02");
    await within(
      1000,
      "event on B",
      () => events.some((m) => m.type === "event" && /gpu-02/.test(m.event.message)),
    );
    // Each event once, though B also hears of its own.
    await c.register(b, "gpu-03");
    await within(
      1000,
      "B's own event",
      () => events.some((m) => m.type === "event" && /gpu-03/.test(m.event.message)),
    );
    await new Promise((r) => setTimeout(r, 300));
    const gpu3 = events.filter((m) =>
      m.type === "event" && /"gpu-03" registered/.test(m.event.message)
    );
    assert.equal(gpu3.length, 1);
  },
});

Deno.test({
  name: "cluster - one coordinator leads; when it stops, another marks a silent agent offline",
  ignore: !postgres,
  async fn() {
    await using c = await cluster(2, { agentTimeout: 3 });
    const leaders = () => c.nodes.filter((n) => n.leading);
    await within(3000, "a leader", () => leaders().length === 1);
    const [leader] = leaders();
    const other = c.nodes.find((n) => n !== leader)!;
    const reg = await c.register(other, "gpu-04");
    await leader.stop();
    await within(5000, "a new leader", () => other.leading === true);
    // Silent for longer than AGENT_TIMEOUT: the new leader's monitor takes it offline.
    const t = await within(
      8000,
      "offline",
      () => other.ctx.registry.get(reg.agent_id)?.status === "offline",
    );
    assert.match(other.ctx.registry.get(reg.agent_id)!.statusReason ?? "", /No heartbeat/);
    console.log(`cluster: silent agent offline ${t.toFixed(0)} ms after the leader stopped`);
  },
});

Deno.test({
  name: "cluster - requests in flight through one coordinator weigh on the other's choices",
  ignore: !postgres,
  async fn() {
    await using c = await cluster(2);
    const [a, b] = c.nodes;
    const reg = await c.register(a, "gpu-05");
    await within(1000, "agent on B", () => !!b.ctx.registry.get(reg.agent_id));
    const agentOnA = a.ctx.registry.get(reg.agent_id)!;
    const lease = await a.ctx.scheduler.acquire("llama3.2");
    assert.equal(lease.agent.id, agentOnA.id);
    await within(1000, "load on B", () => b.ctx.registry.get(reg.agent_id)?.remoteInFlight === 1);
    a.ctx.scheduler.release(lease, { result: "ok" });
    await within(
      1500,
      "release on B",
      () => b.ctx.registry.get(reg.agent_id)?.remoteInFlight === 0,
    );
  },
});

Deno.test({
  name:
    "cluster - the same agent registering at two coordinators at once is stored once, never a 500",
  ignore: !postgres,
  async fn() {
    await using c = await cluster(2);
    const [a, b] = c.nodes;
    const body = JSON.stringify(registration({ machine_name: "gpu-06", ollama_port: 9 }));
    const post = (node: Coordinator) =>
      fetch(`${node.url}/api/agents`, {
        method: "POST",
        headers: { authorization: `Bearer ${TEST_AGENT_TOKEN}` },
        body,
      }).then(async (r) => (await r.body?.cancel(), r.status));
    const statuses = await Promise.all([post(a), post(b), post(a), post(b)]);
    assert.ok(statuses.every((s) => s === 200 || s === 201 || s === 503), String(statuses));
    assert.ok(statuses.includes(201));
    assert.equal((await a.ctx.store.counts()).agents, 1);
  },
});

Deno.test({
  name: "cluster - a coordinator that stops while it catches up with the others logs no error",
  ignore: !postgres,
  async fn() {
    const url = await postgres!.createDatabase(`cluster_${++databases}`);
    const errors: string[] = [];
    const original = console.error;
    console.error = (...args: unknown[]) => void errors.push(args.map(String).join(" "));
    try {
      // Stopped at several moments of its start-up: before, during and after its first catch-up.
      for (const ms of [0, 5, 10, 20, 40, 80]) {
        const c = await startCoordinator(testConfig({ databaseUrl: url }));
        await new Promise((r) => setTimeout(r, ms));
        await c.stop();
      }
    } finally {
      console.error = original;
    }
    assert.deepEqual(errors.filter((e) => /Cannot apply/.test(e)), []);
  },
});

Deno.test({
  name: "cluster - /metrics says which coordinator leads and how many others each hears",
  ignore: !postgres,
  async fn() {
    await using c = await cluster(3);
    const scrape = async (i: number) => {
      const text = await (await fetch(`${c.nodes[i].url}/metrics`, { headers: c.admin(i) }))
        .text();
      const value = (name: string) => Number(new RegExp(`\\n${name} (\\S+)\\n`).exec(text)?.[1]);
      return {
        leader: value("ollama_coordinator_cluster_leader"),
        peers: value("ollama_coordinator_cluster_peers"),
      };
    };
    await within(5000, "one leader, two peers each", async () => {
      const all = await Promise.all([0, 1, 2].map(scrape));
      return all.filter((m) => m.leader === 1).length === 1 &&
        all.every((m) => m.peers === 2 && (m.leader === 0 || m.leader === 1));
    });
    // One goes: the others stop counting it (it falls silent for more than 3 s).
    await c.nodes[2].stop();
    await within(6000, "one peer each", async () => {
      const all = await Promise.all([0, 1].map(scrape));
      return all.every((m) => m.peers === 1);
    });
  },
});

Deno.test({
  name: "cluster - a create through one coordinator goes where the blob went through another",
  ignore: !postgres,
  async fn() {
    await using c = await cluster(2);
    const [a, b] = c.nodes;
    // Two Ollamas that note what reaches them.
    const reached: { server: string; method: string; path: string }[] = [];
    const servers = ["first", "second"].map((server) =>
      Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (req) => {
        const path = new URL(req.url).pathname;
        reached.push({ server, method: req.method, path });
        await req.body?.cancel();
        const upload = req.method === "POST" && path.startsWith("/api/blobs/");
        return upload
          ? new Response(null, { status: 201 })
          : Response.json({ status: "success", models: [] });
      })
    );
    try {
      for (const [i, server] of servers.entries()) {
        const res = await fetch(`${a.url}/api/agents`, {
          method: "POST",
          headers: { authorization: `Bearer ${TEST_AGENT_TOKEN}` },
          body: JSON.stringify(
            registration({ machine_name: `gpu-${i}`, ollama_port: server.addr.port }),
          ),
        });
        assert.equal(res.status, 201);
      }
      await within(1000, "both agents on B", () => b.ctx.registry.all().length === 2);
      const digest = `sha256:${"ab".repeat(32)}`;
      // The upload goes through A to the second agent (the one a create would not pick by itself).
      const upload = await fetch(`${a.url}/api/blobs/${digest}`, {
        method: "POST",
        headers: { ...c.admin(0), "x-coordinator-agent": "gpu-1" },
        body: "GGUF…",
      });
      await upload.body?.cancel();
      assert.equal(upload.status, 201);
      assert.deepEqual(reached.at(-1), {
        server: "second",
        method: "POST",
        path: `/api/blobs/${digest}`,
      });
      await within(
        1000,
        "the blob's agent on B",
        () => b.ctx.scheduler.placement.createTarget({ files: [digest] }).machineName === "gpu-1",
      );
      const create = await fetch(`${b.url}/api/create`, {
        method: "POST",
        headers: c.admin(1),
        body: JSON.stringify({ model: "mine", files: { "model.gguf": digest } }),
      });
      await create.body?.cancel();
      assert.equal(create.status, 200);
      assert.deepEqual(
        reached.filter((r) => r.path === "/api/create").map((r) => r.server),
        ["second"],
      );
    } finally {
      await Promise.all(servers.map((s) => s.shutdown()));
    }
  },
});

Deno.test({
  name:
    "cluster - coordinators starting together on an empty database print one agent token and one password, which work on all",
  ignore: !postgres,
  async fn() {
    const url = await postgres!.createDatabase(`cluster_${++databases}`);
    // Nothing configured: the first start generates the secrets. Both read the empty database
    // before either writes (they start in the same moment), as replicas of a deployment do.
    const nodes = await Promise.all(
      [0, 1].map(() =>
        startCoordinator(testConfig({ databaseUrl: url, agentToken: "", adminPassword: "" }))
      ),
    );
    try {
      const tokens = nodes.map((n) => n.firstStart.agentToken).filter((t) => t !== undefined);
      const passwords = nodes.map((n) => n.firstStart.adminPassword).filter((p) => p);
      assert.equal(tokens.length, 1, "each coordinator printed a token of its own");
      assert.equal(passwords.length, 1, "each coordinator printed a password of its own");
      for (const n of nodes) {
        const res = await fetch(`${n.url}/api/agents`, {
          method: "POST",
          headers: { authorization: `Bearer ${tokens[0]}` },
          body: JSON.stringify(registration({ machine_name: `gpu-${n.port}`, ollama_port: 9 })),
        });
        await res.body?.cancel();
        assert.equal(res.status, 201);
        const login = await fetch(`${n.url}/login`, {
          method: "POST",
          body: new URLSearchParams({ password: passwords[0]! }),
          redirect: "manual",
        });
        await login.body?.cancel();
        assert.equal(login.status, 303);
      }
    } finally {
      await Promise.all(nodes.map((n) => n.stop()));
    }
  },
});

Deno.test({
  name: "cluster - each coordinator enforces its share of a key's limits; a change applies on all",
  ignore: !postgres,
  async fn() {
    await using c = await cluster(2);
    const [a, b] = c.nodes;
    const created = await (await fetch(`${a.url}/api/keys`, {
      method: "POST",
      headers: c.admin(0),
      body: JSON.stringify({ name: "shared", limits: { requests_per_minute: 4 } }),
    })).json();
    // An agent answers (its Ollama says "Ollama is running" to anything): a request that
    // reached an agent counts against the key; one refused before any agent would not.
    await c.register(a, "gpu-quota");
    await within(1000, "the agent on B", () => b.ctx.registry.all().length === 1);
    const ask = async (node: Coordinator) => {
      const res = await fetch(`${node.url}/api/generate`, {
        method: "POST",
        headers: { authorization: `Bearer ${created.key}` },
        body: JSON.stringify({ model: "llama3.2", prompt: "x" }),
      });
      const text = await res.text();
      return { status: res.status, body: res.status === 200 ? text : JSON.parse(text) };
    };
    await within(1000, "the key on B", () => !!b.ctx.security.keyById(created.id));
    // Each hears the other's load within a second: two coordinators, two requests each.
    await within(
      3000,
      "two coordinators",
      () => a.ctx.quotas.coordinators === 2 && b.ctx.quotas.coordinators === 2,
    );
    assert.equal((await ask(b)).status, 200);
    assert.equal((await ask(b)).status, 200);
    const refused = await ask(b);
    assert.equal(refused.status, 429);
    assert.match(refused.body.error, /4 requests per minute \(2 on each of 2 coordinators\)/);
    assert.equal((await ask(a)).status, 200);
    // Raised on A, the limit applies on B at once (the key notice carries it).
    const patch = await fetch(`${a.url}/api/keys/${created.id}`, {
      method: "PATCH",
      headers: c.admin(0),
      body: JSON.stringify({ limits: { requests_per_minute: 100 } }),
    });
    assert.equal(patch.status, 200);
    const seen = await within(
      1000,
      "the new limit on B",
      () => b.ctx.security.keyById(created.id)?.limits.requests_per_minute === 100,
    );
    assert.equal((await ask(b)).status, 200);
    console.log(`cluster: a key's new limits applied on the other after ${seen.toFixed(0)} ms`);
  },
});

/** The store at `url` with some of its cluster's reads replaced (to inject faults). */
async function wrappedStore(
  url: string,
  overrides: (real: Store) => Partial<StoreCluster>,
): Promise<Store> {
  const real = await openStore(url);
  const cluster = { ...real.cluster!, ...overrides(real) };
  return new Proxy(real, {
    get(target, key) {
      if (key === "cluster") return cluster;
      const value = Reflect.get(target, key, target);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
}

Deno.test({
  name: "cluster - a reload that fails after the feed connects is tried again",
  ignore: !postgres,
  async fn() {
    await using c = await cluster(1);
    const [a] = c.nodes;
    // B's database refuses the reload's first reads, as a server busy or just back may.
    let refusals = 2;
    const store = await wrappedStore(c.url, (real) => ({
      lastEventId: () =>
        refusals-- > 0
          ? Promise.reject(
            new StoreError("Cannot read events: timeout exceeded when trying to connect", true),
          )
          : real.cluster!.lastEventId(),
    }));
    const b = await startCoordinator(testConfig({ databaseUrl: c.url }), { store });
    try {
      await within(5000, "B's reload retried", () => refusals < 0);
      const events: BusMessage[] = [];
      b.ctx.bus.subscribe((m) => events.push(m), ["event"]);
      await c.register(a, "gpu-09");
      await within(
        1000,
        "A's event on B",
        () => events.some((m) => m.type === "event" && /gpu-09/.test(m.event.message)),
      );
    } finally {
      await b.stop();
    }
  },
});

Deno.test({
  name: "cluster - what changes on a coordinator while it reloads survives the reload",
  ignore: !postgres,
  async fn() {
    await using c = await cluster(1);
    const [a] = c.nodes;
    const created = await (await fetch(`${a.url}/api/keys`, {
      method: "POST",
      headers: c.admin(0),
      body: JSON.stringify({ name: "laptop" }),
    })).json();
    // B's first reload reads the stored state, then waits until the test has changed things on
    // B.
    let reads = 0;
    let opened!: () => void;
    const gate = new Promise<void>((r) => opened = r);
    let reloaded = false;
    const store = await wrappedStore(c.url, (real) => ({
      async agentIds() {
        const ids = await real.cluster!.agentIds();
        if (++reads === 1) await gate;
        return ids;
      },
      // The first reload ends by asking where the event feed starts.
      lastEventId: () => real.cluster!.lastEventId().finally(() => reloaded = true),
    }));
    const b = await startCoordinator(testConfig({ databaseUrl: c.url }), { store });
    try {
      await within(5000, "B's reload reading", () => reads === 1);
      const admin = { authorization: `Bearer ${c.keys[0]}` };
      const login = await fetch(`${b.url}/login`, {
        method: "POST",
        body: new URLSearchParams({ password: "test-admin-password" }),
        redirect: "manual",
      });
      await login.body?.cancel();
      const cookie = login.headers.get("set-cookie")!.split(";")[0];
      const revoked = await fetch(`${b.url}/api/keys/${created.id}`, {
        method: "DELETE",
        headers: admin,
      });
      assert.equal(revoked.status, 204);
      const reg = await c.register(b, "gpu-07");
      opened();
      await within(5000, "B's reload done", () => reloaded);
      const agents = await fetch(`${b.url}/api/agents`, { headers: { cookie } });
      await agents.body?.cancel();
      assert.equal(agents.status, 200, "the session made during the reload");
      const tags = await fetch(`${b.url}/api/tags`, {
        headers: { authorization: `Bearer ${created.key}` },
      });
      await tags.body?.cancel();
      assert.equal(tags.status, 401, "the key revoked during the reload");
      assert.ok(b.ctx.registry.get(reg.agent_id), "the agent registered during the reload");
    } finally {
      opened();
      await b.stop();
    }
  },
});
