import assert from "node:assert/strict";
import { Bus, type BusMessage } from "../telemetry/bus.ts";
import { FakeClock, memoryRegistry, registration } from "../testing/app.ts";
import { checkFleet } from "../health/monitor.ts";
import { StoreError } from "../store/mod.ts";

async function setup() {
  const clock = new FakeClock();
  const bus = new Bus();
  const seen: BusMessage[] = [];
  bus.subscribe((m) => seen.push(m));
  const services = await memoryRegistry({ now: clock.now, bus });
  return { clock, seen, ...services };
}

Deno.test("registry - re-registering the same machine and address keeps the id", async () => {
  await using t = await setup();
  const { registry } = t;
  const a = await registry.register(registration());
  const b = await registry.register(registration({ ollama_version: "0.13.0" }));
  assert.equal(a.created, true);
  assert.equal(b.created, false);
  assert.equal(b.agent.id, a.agent.id);
  assert.equal(registry.get(a.agent.id)?.ollamaVersion, "0.13.0");
  const other = await registry.register(registration({ ollama_port: 11435 }));
  assert.notEqual(other.agent.id, a.agent.id);
  assert.equal(registry.all().length, 2);
});

Deno.test("registry - the same agent registering twice at once is stored once", async () => {
  await using t = await setup();
  const [a, b] = await Promise.all([
    t.registry.register(registration()),
    t.registry.register(registration()),
  ]);
  assert.equal(a.agent.id, b.agent.id);
  assert.equal((await t.store.counts()).agents, 1);
});

Deno.test("registry - a silent agent goes offline and comes back on its next heartbeat", async () => {
  await using t = await setup();
  const { registry, clock, seen } = t;
  const { agent } = await registry.register(registration());
  clock.advance(19_000);
  assert.deepEqual(registry.sweep(), []);
  clock.advance(2_000);
  assert.deepEqual(registry.sweep().map((a) => a.id), [agent.id]);
  assert.equal(agent.status, "offline");
  assert.match(agent.statusReason ?? "", /No heartbeat/);
  registry.heartbeat({ agent_id: agent.id, cpu_usage: 10, memory_usage: 20, active_requests: 0 });
  assert.equal(agent.status, "online");
  const kinds = (await registry.events()).map((e) => e.message);
  assert.match(kinds[0], /is online.*was offline/);
  assert.match(kinds[1], /is offline.*was online/);
  assert.ok(seen.some((m) => m.type === "event" && m.event.kind === "status"));
});

Deno.test("registry - heartbeats update metrics and models", async () => {
  await using t = await setup();
  const { registry } = t;
  const { agent } = await registry.register(registration());
  registry.heartbeat({
    agent_id: agent.id,
    cpu_usage: 45.5,
    memory_usage: 60.2,
    active_requests: 3,
    gpus: [{ name: "RTX 4090", memory_used: 1, memory_total: 2 }],
    loaded_models: [{ name: "llama3.2:latest" }],
  });
  assert.equal(agent.metrics?.cpu_usage, 45.5);
  assert.equal(agent.metrics?.gpus[0].name, "RTX 4090");
  assert.ok(agent.loadedKeys.has("registry.ollama.ai/library/llama3.2:latest"));
  assert.equal(agent.metrics?.disk_free, undefined);
  assert.ok(!("disk_free" in agent.metrics!), "absent, not undefined, from agents that omit it");
  registry.heartbeat({
    agent_id: agent.id,
    cpu_usage: 1,
    memory_usage: 1,
    active_requests: 0,
    disk_free: 5e9,
    disk_total: 5e11,
  });
  assert.deepEqual([agent.metrics?.disk_free, agent.metrics?.disk_total], [5e9, 5e11]);
  assert.equal(registry.view(agent).metrics?.disk_free, 5e9);
  assert.equal(
    registry.heartbeat({
      agent_id: crypto.randomUUID(),
      cpu_usage: 1,
      memory_usage: 1,
      active_requests: 0,
    }),
    undefined,
  );
});

Deno.test("registry - withModel follows registrations, model changes and removals", async () => {
  await using t = await setup();
  const { registry } = t;
  const LLAMA = "registry.ollama.ai/library/llama3.2:latest";
  const QWEN = "registry.ollama.ai/library/qwen3:8b";
  const ids = (key: string) => registry.withModel(key).map((a) => a.machineName);
  const a = (await registry.register(registration({ machine_name: "a" }))).agent;
  assert.deepEqual(ids(LLAMA), ["a"]);
  assert.deepEqual(ids(QWEN), []);
  await registry.register(registration({ machine_name: "b", models: [{ name: "qwen3:8b" }] }));
  assert.deepEqual(ids(QWEN), ["b"]);
  // A heartbeat with a new model list, then registering again with another one.
  registry.heartbeat({
    agent_id: a.id,
    cpu_usage: 1,
    memory_usage: 1,
    active_requests: 0,
    models: [{ name: "qwen3:8b" }, { name: "llama3.2" }],
  });
  assert.deepEqual(ids(QWEN), ["a", "b"]);
  await registry.register(registration({ machine_name: "b", models: [{ name: "llama3.2" }] }));
  assert.deepEqual(ids(QWEN), ["a"]);
  assert.deepEqual(ids(LLAMA), ["a", "b"]);
  await registry.remove(a.id);
  assert.deepEqual(ids(LLAMA), ["b"]);
  assert.deepEqual(ids(QWEN), []);
});

Deno.test("registry - an agent's changes are published by id, only when someone listens", async () => {
  const bus = new Bus();
  await using t = await memoryRegistry({ bus });
  const { registry } = t;
  const events: BusMessage[] = [];
  bus.subscribe((m) => events.push(m), ["event"]);
  const { agent } = await registry.register(registration());
  const beat = { agent_id: agent.id, cpu_usage: 1, memory_usage: 1, active_requests: 0 };
  registry.heartbeat(beat);
  await t.events.flush();
  assert.ok(events.length > 0 && events.every((m) => m.type === "event"));
  const agents: BusMessage[] = [];
  bus.subscribe((m) => agents.push(m), ["agent"]);
  registry.heartbeat(beat);
  assert.deepEqual(agents, [{ type: "agent", id: agent.id }]);
});

Deno.test("registry - drain and enable change the status and record events", async () => {
  await using t = await setup();
  const { registry } = t;
  const { agent } = await registry.register(registration());
  await registry.patch(agent.id, { drain: true, display_name: "Big box", labels: ["gpu", "gpu"] });
  assert.equal(agent.status, "draining");
  assert.deepEqual(agent.labels, ["gpu"]);
  assert.equal(registry.find("Big box")?.id, agent.id);
  await registry.patch(agent.id, { drain: false });
  assert.equal(agent.status, "online");
  assert.deepEqual((await registry.events()).slice(0, 2).map((e) => e.kind), ["status", "enable"]);
  assert.equal(await registry.remove(agent.id), true);
  assert.equal(await registry.remove(agent.id), false);
});

Deno.test("registry - survives a restart", async () => {
  const dir = Deno.makeTempDirSync();
  const url = `sqlite://${dir}/c.db`;
  const clock = new FakeClock();
  try {
    let agentId: string;
    {
      await using t = await memoryRegistry({ now: clock.now, url });
      const { agent } = await t.registry.register(registration());
      agentId = agent.id;
      await t.registry.patch(agent.id, { labels: ["fast"], display_name: "A" });
      t.registry.heartbeat({
        agent_id: agent.id,
        cpu_usage: 5,
        memory_usage: 6,
        active_requests: 0,
      });
    } // closing writes what is batched, as a stopping coordinator does
    await using t = await memoryRegistry({ now: clock.now, url });
    const again = t.registry.get(agentId);
    assert.equal(again?.displayName, "A");
    assert.deepEqual(again?.labels, ["fast"]);
    assert.equal(again?.metrics?.cpu_usage, 5);
    assert.ok(again?.modelKeys.has("registry.ollama.ai/library/llama3.2:latest"));
    assert.ok((await t.registry.events()).length >= 1);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("registry - a change the store refuses leaves memory as it was", async () => {
  await using t = await setup();
  const { registry, store } = t;
  const { agent } = await registry.register(registration());
  const refuse = () => Promise.reject(new StoreError("Cannot update agents: disk full", true));
  const saved = { updateAgents: store.updateAgents, deleteAgent: store.deleteAgent };
  store.updateAgents = refuse;
  store.deleteAgent = refuse;
  await assert.rejects(registry.patch(agent.id, { drain: true, labels: ["x"] }), StoreError);
  assert.equal(agent.drain, false);
  assert.deepEqual(agent.labels, []);
  assert.equal(agent.status, "online");
  await assert.rejects(registry.remove(agent.id), StoreError);
  assert.equal(registry.get(agent.id), agent);
  // Heartbeat state written behind is kept and written once the store takes it again.
  registry.heartbeat({ agent_id: agent.id, cpu_usage: 7, memory_usage: 1, active_requests: 0 });
  await registry.flush();
  Object.assign(store, saved);
  await registry.flush();
  const stored = (await store.load()).agents.find((a) => a.id === agent.id);
  assert.equal(stored?.metrics?.cpu_usage, 7);
});

Deno.test("monitor - a dead Ollama behind a live agent takes it offline until it answers", async () => {
  await using t = await setup();
  const { registry } = t;
  const { agent } = await registry.register(registration());
  let up = false;
  const probe = () => Promise.resolve(up);
  await checkFleet(registry, { probeTimeoutMs: 100, probe });
  assert.equal(agent.status, "offline");
  assert.equal(agent.statusReason, "Ollama is not answering");
  up = true;
  await checkFleet(registry, { probeTimeoutMs: 100, probe });
  assert.equal(agent.status, "online");
});

Deno.test("monitor - a healthy agent is probed at most once per probe interval", async () => {
  await using t = await setup();
  const { registry, clock } = t;
  const { agent } = await registry.register(registration());
  const beat = () =>
    registry.heartbeat({ agent_id: agent.id, cpu_usage: 1, memory_usage: 1, active_requests: 0 });
  let probes = 0;
  const probe = () => (probes++, Promise.resolve(true));
  const lastProbe = new Map<string, number>();
  const opts = { probeTimeoutMs: 100, probe, probeIntervalMs: 30_000, lastProbe, now: clock.now };
  await checkFleet(registry, opts);
  clock.advance(10_000);
  beat();
  await checkFleet(registry, opts);
  assert.equal(probes, 1);
  clock.advance(20_000);
  beat();
  await checkFleet(registry, opts);
  assert.equal(probes, 2);
});
