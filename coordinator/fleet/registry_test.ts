import assert from "node:assert/strict";
import { openDatabase } from "../store/sqlite/mod.ts";
import { Bus, type BusMessage } from "../telemetry/bus.ts";
import { FakeClock, registration } from "../testing/app.ts";
import { Registry } from "./registry.ts";
import { checkFleet } from "../health/monitor.ts";

function setup() {
  const clock = new FakeClock();
  const bus = new Bus();
  const seen: BusMessage[] = [];
  bus.subscribe((m) => seen.push(m));
  const db = openDatabase("sqlite::memory:");
  const registry = new Registry(db, { agentTimeoutMs: 20_000, now: clock.now, bus });
  return { clock, registry, db, seen };
}

Deno.test("registry - re-registering the same machine and address keeps the id", () => {
  const { registry, db } = setup();
  const a = registry.register(registration());
  const b = registry.register(registration({ ollama_version: "0.13.0" }));
  assert.equal(a.created, true);
  assert.equal(b.created, false);
  assert.equal(b.agent.id, a.agent.id);
  assert.equal(registry.get(a.agent.id)?.ollamaVersion, "0.13.0");
  const other = registry.register(registration({ ollama_port: 11435 }));
  assert.notEqual(other.agent.id, a.agent.id);
  assert.equal(registry.all().length, 2);
  db.close();
});

Deno.test("registry - a silent agent goes offline and comes back on its next heartbeat", () => {
  const { registry, clock, db, seen } = setup();
  const { agent } = registry.register(registration());
  clock.advance(19_000);
  assert.deepEqual(registry.sweep(), []);
  clock.advance(2_000);
  assert.deepEqual(registry.sweep().map((a) => a.id), [agent.id]);
  assert.equal(agent.status, "offline");
  assert.match(agent.statusReason ?? "", /No heartbeat/);
  registry.heartbeat({ agent_id: agent.id, cpu_usage: 10, memory_usage: 20, active_requests: 0 });
  assert.equal(agent.status, "online");
  const kinds = registry.events().map((e) => e.message);
  assert.match(kinds[0], /is online.*was offline/);
  assert.match(kinds[1], /is offline.*was online/);
  assert.ok(seen.some((m) => m.type === "event" && m.event.kind === "status"));
  db.close();
});

Deno.test("registry - heartbeats update metrics and models", () => {
  const { registry, db } = setup();
  const { agent } = registry.register(registration());
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
  assert.equal(
    registry.heartbeat({
      agent_id: crypto.randomUUID(),
      cpu_usage: 1,
      memory_usage: 1,
      active_requests: 0,
    }),
    undefined,
  );
  db.close();
});

Deno.test("registry - withModel follows registrations, model changes and removals", () => {
  const { registry, db } = setup();
  const LLAMA = "registry.ollama.ai/library/llama3.2:latest";
  const QWEN = "registry.ollama.ai/library/qwen3:8b";
  const ids = (key: string) => registry.withModel(key).map((a) => a.machineName);
  const a = registry.register(registration({ machine_name: "a" })).agent;
  assert.deepEqual(ids(LLAMA), ["a"]);
  assert.deepEqual(ids(QWEN), []);
  registry.register(registration({ machine_name: "b", models: [{ name: "qwen3:8b" }] }));
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
  registry.register(registration({ machine_name: "b", models: [{ name: "llama3.2" }] }));
  assert.deepEqual(ids(QWEN), ["a"]);
  assert.deepEqual(ids(LLAMA), ["a", "b"]);
  registry.remove(a.id);
  assert.deepEqual(ids(LLAMA), ["b"]);
  assert.deepEqual(ids(QWEN), []);
  db.close();
});

Deno.test("registry - an agent's changes are published by id, only when someone listens", () => {
  const db = openDatabase("sqlite::memory:");
  const bus = new Bus();
  const registry = new Registry(db, { agentTimeoutMs: 20_000, bus });
  const events: BusMessage[] = [];
  bus.subscribe((m) => events.push(m), ["event"]);
  const { agent } = registry.register(registration());
  const beat = { agent_id: agent.id, cpu_usage: 1, memory_usage: 1, active_requests: 0 };
  registry.heartbeat(beat);
  assert.ok(events.every((m) => m.type === "event"));
  const agents: BusMessage[] = [];
  bus.subscribe((m) => agents.push(m), ["agent"]);
  registry.heartbeat(beat);
  assert.deepEqual(agents, [{ type: "agent", id: agent.id }]);
  db.close();
});

Deno.test("registry - drain and enable change the status and record events", () => {
  const { registry, db } = setup();
  const { agent } = registry.register(registration());
  registry.patch(agent.id, { drain: true, display_name: "Big box", labels: ["gpu", "gpu"] });
  assert.equal(agent.status, "draining");
  assert.deepEqual(agent.labels, ["gpu"]);
  assert.equal(registry.find("Big box")?.id, agent.id);
  registry.patch(agent.id, { drain: false });
  assert.equal(agent.status, "online");
  assert.deepEqual(registry.events().slice(0, 2).map((e) => e.kind), ["status", "enable"]);
  assert.equal(registry.remove(agent.id), true);
  assert.equal(registry.remove(agent.id), false);
  db.close();
});

Deno.test("registry - survives a restart", () => {
  const path = Deno.makeTempFileSync({ suffix: ".db" });
  const clock = new FakeClock();
  let db = openDatabase(`sqlite://${path}`);
  let registry = new Registry(db, { agentTimeoutMs: 20_000, now: clock.now });
  const { agent } = registry.register(registration());
  registry.patch(agent.id, { labels: ["fast"], display_name: "A" });
  registry.heartbeat({ agent_id: agent.id, cpu_usage: 5, memory_usage: 6, active_requests: 0 });
  registry.flush(); // as a stopping coordinator does
  db.close();
  db = openDatabase(`sqlite://${path}`);
  registry = new Registry(db, { agentTimeoutMs: 20_000, now: clock.now });
  const again = registry.get(agent.id);
  assert.equal(again?.displayName, "A");
  assert.deepEqual(again?.labels, ["fast"]);
  assert.equal(again?.metrics?.cpu_usage, 5);
  assert.ok(again?.modelKeys.has("registry.ollama.ai/library/llama3.2:latest"));
  assert.ok(registry.events().length >= 1);
  db.close();
  for (const s of ["", "-wal", "-shm"]) {
    try {
      Deno.removeSync(path + s);
    } catch { /* not there */ }
  }
});

Deno.test("monitor - a dead Ollama behind a live agent takes it offline until it answers", async () => {
  const { registry, db } = setup();
  const { agent } = registry.register(registration());
  let up = false;
  const probe = () => Promise.resolve(up);
  await checkFleet(registry, { probeTimeoutMs: 100, probe });
  assert.equal(agent.status, "offline");
  assert.equal(agent.statusReason, "Ollama is not answering");
  up = true;
  await checkFleet(registry, { probeTimeoutMs: 100, probe });
  assert.equal(agent.status, "online");
  db.close();
});

Deno.test("monitor - a healthy agent is probed at most once per probe interval", async () => {
  const { registry, db, clock } = setup();
  const { agent } = registry.register(registration());
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
  db.close();
});
