import assert from "node:assert/strict";
import type { RegisterRequest } from "@oc/shared";
import { FakeClock, memoryRegistry, registration } from "../testing/app.ts";
import { type Lease, type NoAgentError, type Policy, Scheduler } from "./mod.ts";
import { SpeedTable } from "./speeds.ts";

const MODEL = "llama3.2";

/** Marks `n` requests for llama3.2 in flight on an agent, as leases would. */
function occupy(agent: { inFlight: number; inFlightByModel: Map<string, number> }, n: number) {
  agent.inFlight = n;
  agent.inFlightByModel.set("registry.ollama.ai/library/llama3.2:latest", n);
}
const GB = 1_000_000_000;

async function setup(
  options: {
    policy?: Policy;
    random?: () => number;
    queueMaxLength?: number;
    queueTimeoutMs?: number;
  } = {},
) {
  const clock = new FakeClock();
  const { registry, close } = await memoryRegistry({ now: clock.now });
  const scheduler = new Scheduler(registry, {
    now: clock.now,
    random: options.random ?? (() => 0),
    ...options,
  });
  const add = async (name: string, extra: Partial<RegisterRequest> = {}) =>
    (await registry.register(registration({ machine_name: name, parallel: 2, ...extra }))).agent;
  return { clock, close, registry, scheduler, add };
}

Deno.test("scheduler - prefers an agent with the model loaded", async () => {
  const { scheduler, add, close } = await setup();
  await add("cold");
  const warm = await add("warm", { loaded_models: [{ name: "llama3.2:latest" }] });
  const lease = await scheduler.acquire(MODEL);
  assert.equal(lease.agent.id, warm.id);
  await close();
});

Deno.test("scheduler - among loaded agents, the lowest load relative to capacity wins", async () => {
  const { scheduler, add, close } = await setup();
  const loaded = [{ name: "llama3.2:latest" }];
  const small = await add("small", { parallel: 1, loaded_models: loaded });
  const big = await add("big", { parallel: 4, loaded_models: loaded });
  occupy(big, 1);
  assert.equal((await scheduler.acquire(MODEL)).agent.id, small.id);
  // small is now full (1/1); big at 1/4 takes the next one even though it has more requests.
  assert.equal((await scheduler.acquire(MODEL)).agent.id, big.id);
  await close();
});

Deno.test("scheduler - a loaded agent that is full loses to one that must load", async () => {
  const { scheduler, add, close } = await setup();
  const warm = await add("warm", { parallel: 1, loaded_models: [{ name: "llama3.2:latest" }] });
  const cold = await add("cold", { parallel: 1 });
  occupy(warm, 1);
  assert.equal((await scheduler.acquire(MODEL)).agent.id, cold.id);
  await close();
});

Deno.test("scheduler - the faster measured agent wins at equal load; unmeasured get a fair trial", async () => {
  const { scheduler, add, close } = await setup();
  const loaded = [{ name: "llama3.2:latest" }];
  const slow = await add("slow", { loaded_models: loaded });
  const fast = await add("fast", { loaded_models: loaded });
  scheduler.speeds.record(slow.id, "registry.ollama.ai/library/llama3.2:latest", {
    tokensPerSecond: 20,
  });
  scheduler.speeds.record(fast.id, "registry.ollama.ai/library/llama3.2:latest", {
    tokensPerSecond: 90,
  });
  assert.equal(scheduler.choose(MODEL, [slow, fast])?.id, fast.id);
  const fresh = await add("fresh", { loaded_models: loaded });
  // No measurement yet: it ranks with the best measured agent, and the random tie-break decides.
  const picks = new Set<string>();
  for (const r of [0, 0.99]) {
    const s = new Scheduler(scheduler.registry, { random: () => r });
    s.speeds.record(slow.id, "registry.ollama.ai/library/llama3.2:latest", { tokensPerSecond: 20 });
    s.speeds.record(fast.id, "registry.ollama.ai/library/llama3.2:latest", { tokensPerSecond: 90 });
    picks.add(s.choose(MODEL, [slow, fast, fresh])!.machineName);
  }
  assert.deepEqual([...picks].sort(), ["fast", "fresh"]);
  await close();
});

Deno.test("scheduler - ties are broken by the random source", async () => {
  const { registry, add, close } = await setup();
  await add("a");
  await add("b");
  await add("c");
  const names = [0, 0.4, 0.9].map((r) =>
    new Scheduler(registry, { random: () => r }).choose(MODEL, registry.all())!.machineName
  );
  assert.deepEqual(names, ["a", "b", "c"]);
  await close();
});

Deno.test("scheduler - cold start prefers the agent where the model fits in free VRAM", async () => {
  const { scheduler, registry, add, close } = await setup();
  const models = [{ name: "llama3.2:latest", size: 4 * GB }];
  const tight = await add("tight", { models });
  const roomy = await add("roomy", { models });
  registry.heartbeat({
    agent_id: tight.id,
    cpu_usage: 0,
    memory_usage: 0,
    active_requests: 0,
    gpus: [{ name: "small", memory_total: 8 * GB, memory_used: 6 * GB }],
  });
  registry.heartbeat({
    agent_id: roomy.id,
    cpu_usage: 0,
    memory_usage: 0,
    active_requests: 0,
    gpus: [{ name: "big", memory_total: 24 * GB, memory_used: 2 * GB }],
  });
  assert.equal((await scheduler.acquire(MODEL)).agent.id, roomy.id);
  await close();
});

Deno.test("scheduler - only online, non-draining agents that have the model are candidates", async () => {
  const { scheduler, registry, add, clock, close } = await setup();
  const drained = await add("drained");
  await registry.patch(drained.id, { drain: true });
  await add("other-model", { models: [{ name: "qwen3:8b" }] });
  const silent = await add("silent");
  clock.advance(15_000);
  const ok = await add("ok");
  clock.advance(10_000);
  registry.sweep();
  assert.equal(silent.status, "offline");
  assert.deepEqual(scheduler.candidates(MODEL).map((a) => a.id), [ok.id]);
  await assert.rejects(
    scheduler.acquire("mistral"),
    (e: NoAgentError) => e.status === 404 && /not found/.test(e.message),
  );
  await registry.patch(ok.id, { drain: true });
  await assert.rejects(
    scheduler.acquire(MODEL),
    (e: NoAgentError) => e.status === 503 && e.retryAfter! > 0,
  );
  await close();
});

Deno.test("scheduler - a full fleet queues requests first come, first served", async () => {
  const { scheduler, add, close } = await setup();
  const a = await add("a", { parallel: 1 });
  const first = await scheduler.acquire(MODEL);
  const order: string[] = [];
  const second = scheduler.acquire(MODEL).then((l) => (order.push("second"), l));
  const third = scheduler.acquire(MODEL).then((l) => (order.push("third"), l));
  assert.deepEqual(scheduler.queueDepths(), { "registry.ollama.ai/library/llama3.2:latest": 2 });
  scheduler.release(first, { result: "ok" });
  const l2 = await second;
  assert.equal(l2.agent.id, a.id);
  assert.deepEqual(order, ["second"]);
  scheduler.release(l2, { result: "ok" });
  await third;
  assert.deepEqual(order, ["second", "third"]);
  assert.deepEqual(scheduler.queueDepths(), {});
  await close();
});

Deno.test("scheduler - the queue is bounded in length and in time", async () => {
  const { scheduler, add, close } = await setup({ queueMaxLength: 1, queueTimeoutMs: 20 });
  await add("a", { parallel: 1 });
  await scheduler.acquire(MODEL);
  const waiting = scheduler.acquire(MODEL);
  await assert.rejects(
    scheduler.acquire(MODEL),
    (e: NoAgentError) => e.status === 503 && /queue/.test(e.message),
  );
  await assert.rejects(waiting, (e: NoAgentError) => e.status === 503 && e.retryAfter! > 0);
  await close();
});

Deno.test("scheduler - a client that leaves the queue frees its place", async () => {
  const { scheduler, add, close } = await setup();
  await add("a", { parallel: 1 });
  await scheduler.acquire(MODEL);
  const ac = new AbortController();
  const waiting = scheduler.acquire(MODEL, { signal: ac.signal });
  ac.abort();
  await assert.rejects(waiting);
  assert.deepEqual(scheduler.queueDepths(), {});
  await close();
});

Deno.test("scheduler - repeated failures open the circuit, then a half-open trial closes it", async () => {
  const { scheduler, add, clock, close } = await setup();
  const flaky = await add("flaky");
  const tripped: string[] = [];
  scheduler.onTrip = (a) => tripped.push(a.id);
  for (let i = 0; i < 3; i++) {
    scheduler.release(await scheduler.acquire(MODEL), { result: "failed" });
  }
  assert.deepEqual(tripped, [flaky.id]);
  assert.equal(scheduler.breakers.state(flaky.id), "open");
  assert.deepEqual(scheduler.candidates(MODEL), []);
  clock.advance(10_001);
  assert.equal(scheduler.breakers.state(flaky.id), "half_open");
  const trial = await scheduler.acquire(MODEL);
  // Only one trial at a time while half-open.
  assert.deepEqual(scheduler.candidates(MODEL), []);
  scheduler.release(trial, { result: "ok" });
  assert.equal(scheduler.breakers.state(flaky.id), "closed");
  await close();
});

Deno.test("scheduler - a failed half-open trial reopens the circuit for longer", async () => {
  const { scheduler, add, clock, close } = await setup();
  const flaky = await add("flaky");
  for (let i = 0; i < 3; i++) {
    scheduler.release(await scheduler.acquire(MODEL), { result: "failed" });
  }
  clock.advance(10_001);
  scheduler.release(await scheduler.acquire(MODEL), { result: "failed" });
  assert.equal(scheduler.breakers.state(flaky.id), "open");
  clock.advance(10_001);
  assert.equal(scheduler.breakers.state(flaky.id), "open");
  clock.advance(10_000);
  assert.equal(scheduler.breakers.state(flaky.id), "half_open");
  await close();
});

Deno.test("scheduler - a busy answer marks the agent full for a moment, not dead", async () => {
  const { scheduler, add, clock, close } = await setup();
  const busy = await add("busy", { loaded_models: [{ name: "llama3.2:latest" }] });
  const other = await add("other");
  scheduler.release(await scheduler.acquire(MODEL), { result: "busy" });
  assert.equal(scheduler.breakers.state(busy.id), "closed");
  assert.equal((await scheduler.acquire(MODEL)).agent.id, other.id);
  clock.advance(1_001);
  assert.equal(scheduler.choose(MODEL, scheduler.candidates(MODEL))?.id, busy.id);
  await close();
});

Deno.test("scheduler - a continued conversation prefers the agent that served it", async () => {
  const { scheduler, add, close } = await setup();
  const loaded = [{ name: "llama3.2:latest" }];
  const a = await add("a", { loaded_models: loaded });
  const b = await add("b", { loaded_models: loaded });
  const first = await scheduler.acquire(MODEL, { affinity: "conv-1" });
  assert.equal(first.agent.id, a.id);
  scheduler.release(first, { result: "ok" }, "conv-1");
  occupy(b, 0);
  occupy(a, 1); // a is a little busier, not clearly busier
  assert.equal((await scheduler.acquire(MODEL, { affinity: "conv-1" })).agent.id, a.id);
  assert.equal((await scheduler.acquire(MODEL, { affinity: "other" })).agent.id, b.id);
  await close();
});

Deno.test("scheduler - least_connections and round_robin policies", async () => {
  const lc = await setup({ policy: "least_connections" });
  const x = await lc.add("x", { loaded_models: [{ name: "llama3.2:latest" }] });
  const y = await lc.add("y");
  occupy(x, 1);
  assert.equal((await lc.scheduler.acquire(MODEL)).agent.id, y.id);
  await lc.close();
  const rr = await setup({ policy: "round_robin" });
  await rr.add("p", { parallel: 10 });
  await rr.add("q", { parallel: 10 });
  const names = [];
  for (let i = 0; i < 4; i++) names.push((await rr.scheduler.acquire(MODEL)).agent.machineName);
  assert.deepEqual(names, ["p", "q", "p", "q"]);
  await rr.close();
});

Deno.test("scheduler - an admin weight of 0 keeps an agent out; a pinned agent is honoured", async () => {
  const { scheduler, registry, add, close } = await setup();
  const a = await add("a");
  const b = await add("b");
  await registry.patch(a.id, { weight: 0 });
  assert.deepEqual(scheduler.candidates(MODEL).map((x) => x.id), [b.id]);
  await registry.patch(a.id, { weight: 1 });
  assert.equal((await scheduler.acquire(MODEL, { agentId: a.id })).agent.id, a.id);
  await close();
});

Deno.test("scheduler - a model pinned to a label is served only by agents with that label", async () => {
  const { scheduler, registry, add, close } = await setup();
  const small = await add("small");
  const big = await add("big");
  await registry.patch(big.id, { labels: ["gpu-large"] });
  await scheduler.pins.set("llama3.2", "gpu-large");
  assert.deepEqual(scheduler.candidates("llama3.2:latest").map((a) => a.id), [big.id]);
  await registry.patch(big.id, { drain: true });
  await assert.rejects(
    scheduler.acquire(MODEL),
    (e: NoAgentError) =>
      e.status === 503 && /pinned to agents labelled "gpu-large"/.test(e.message),
  );
  await scheduler.pins.remove("llama3.2:latest");
  assert.deepEqual(scheduler.candidates(MODEL).map((a) => a.id), [small.id]);
  await close();
});

Deno.test("scheduler - queued requests are shared fairly between API keys", async () => {
  const { scheduler, add, close } = await setup();
  await add("only", { parallel: 1 });
  const granted: { name: string; lease: Lease }[] = [];
  const ask = (name: string, tenant: string) =>
    scheduler.acquire(MODEL, { tenant }).then((lease) => granted.push({ name, lease }));
  await ask("heavy0", "heavy");
  // The heavy key queues three more requests before the light key's one arrives.
  const pending = [
    ask("heavy1", "heavy"),
    ask("heavy2", "heavy"),
    ask("heavy3", "heavy"),
    ask("light1", "light"),
  ];
  for (let i = 0; i < 4; i++) {
    scheduler.release(granted[i].lease, { result: "ok" });
    await Promise.resolve();
  }
  await Promise.all(pending);
  assert.deepEqual(granted.map((g) => g.name), ["heavy0", "light1", "heavy1", "heavy2", "heavy3"]);
  await close();
});

Deno.test("scheduler - a waiter that cannot go now does not hold up the queue behind it", async () => {
  const { scheduler, add, close } = await setup();
  const a = await add("a", { parallel: 1 });
  const b = await add("b", { parallel: 1 });
  const onA = await scheduler.acquire(MODEL, { agentId: a.id });
  const onB = await scheduler.acquire(MODEL, { agentId: b.id });
  // First in line wants agent a only; second takes anyone.
  let pinnedServed = false;
  const pinned = scheduler.acquire(MODEL, { agentId: a.id }).then((l) => (pinnedServed = true, l));
  const anyone = scheduler.acquire(MODEL);
  scheduler.release(onB, { result: "ok" });
  assert.equal((await anyone).agent.id, b.id);
  assert.equal(pinnedServed, false);
  scheduler.release(onA, { result: "ok" });
  assert.equal((await pinned).agent.id, a.id);
  await close();
});

Deno.test("scheduler - a busy answer to the half-open trial lets another trial go later", async () => {
  const { scheduler, add, clock, close } = await setup();
  const flaky = await add("flaky");
  for (let i = 0; i < 3; i++) {
    scheduler.release(await scheduler.acquire(MODEL), { result: "failed" });
  }
  clock.advance(10_001);
  scheduler.release(await scheduler.acquire(MODEL), { result: "busy" });
  clock.advance(1_001);
  assert.equal(scheduler.breakers.state(flaky.id), "half_open");
  assert.deepEqual(scheduler.candidates(MODEL).map((x) => x.id), [flaky.id]);
  await close();
});

Deno.test("scheduler - waits for a much faster busy agent rather than take a slow free one", async () => {
  const { scheduler, add, close } = await setup();
  const loaded = [{ name: "llama3.2:latest" }];
  const key = "registry.ollama.ai/library/llama3.2:latest";
  const fast = await add("fast", { parallel: 1, loaded_models: loaded });
  const slow = await add("slow", { parallel: 1, loaded_models: loaded });
  scheduler.speeds.record(fast.id, key, { tokensPerSecond: 600 });
  scheduler.speeds.record(slow.id, key, { tokensPerSecond: 10 });
  scheduler.speeds.recordTokens(key, 100);
  const first = await scheduler.acquire(MODEL);
  assert.equal(first.agent.id, fast.id);
  // Fast is full: 100 tokens there after one more answer (~0.33 s) beat 10 s on the free slow one.
  let second: string | undefined;
  const waiting = scheduler.acquire(MODEL).then((l) => (second = l.agent.machineName, l));
  await Promise.resolve();
  assert.equal(second, undefined);
  assert.deepEqual(Object.values(scheduler.queueDepths()), [1]);
  scheduler.release(first, { result: "ok" });
  assert.equal((await waiting).agent.id, fast.id);
  await close();
});

Deno.test("scheduler - a long queue for the fast agent spills over to slower ones", async () => {
  const { scheduler, add, close } = await setup();
  const loaded = [{ name: "llama3.2:latest" }];
  const key = "registry.ollama.ai/library/llama3.2:latest";
  const fast = await add("fast", { parallel: 1, loaded_models: loaded });
  const slow = await add("slow", { parallel: 1, loaded_models: loaded });
  scheduler.speeds.record(fast.id, key, { tokensPerSecond: 100 });
  scheduler.speeds.record(slow.id, key, { tokensPerSecond: 40 });
  scheduler.speeds.recordTokens(key, 100);
  occupy(fast, 1);
  // Right behind the running answer, fast (1 s + 1 s) beats slow (2.5 s); three deep, it does not.
  assert.equal(scheduler.choose(MODEL, [fast, slow], undefined, 0), undefined);
  assert.equal(scheduler.choose(MODEL, [fast, slow], undefined, 3)?.id, slow.id);
  await close();
});

Deno.test("scheduler - candidates follow model changes; one open circuit keeps out only its agent", async () => {
  const { scheduler, registry, add, close } = await setup();
  const a = await add("a");
  const b = await add("b", { models: [{ name: "qwen3:8b" }] });
  assert.deepEqual(scheduler.candidates(MODEL).map((x) => x.id), [a.id]);
  registry.setModels(b, [{ name: "llama3.2" }], []);
  assert.deepEqual(scheduler.candidates(MODEL).map((x) => x.id), [a.id, b.id]);
  assert.deepEqual(scheduler.candidates("qwen3:8b"), []);
  for (let i = 0; i < 3; i++) {
    scheduler.release(await scheduler.acquire(MODEL, { agentId: b.id }), { result: "failed" });
  }
  assert.equal(scheduler.breakers.state(b.id), "open");
  assert.deepEqual(scheduler.candidates(MODEL).map((x) => x.id), [a.id]);
  assert.deepEqual(scheduler.candidates(MODEL, { exclude: new Set([a.id]) }), []);
  await close();
});

Deno.test("scheduler - speeds are kept per model for every agent and forgotten with the agent", () => {
  const table = new SpeedTable();
  const LLAMA = "registry.ollama.ai/library/llama3.2:latest";
  table.record("a", LLAMA, { tokensPerSecond: 40 });
  table.record("b", LLAMA, { tokensPerSecond: 80, ttftMs: 100 });
  table.record("a", "qwen", { ttftMs: 50 });
  assert.deepEqual([...table.forModel(LLAMA)!.keys()], ["a", "b"]);
  assert.equal(table.forModel(LLAMA)!.get("b"), table.get("b", LLAMA));
  assert.equal(table.forModel("qwen")!.get("a")?.tokensPerSecond, null);
  table.forget("a");
  assert.equal(table.get("a", LLAMA), undefined);
  assert.deepEqual([...table.forModel(LLAMA)!.keys()], ["b"]);
  assert.equal(table.forModel("qwen"), undefined);
});

Deno.test("scheduler - a decision after a larger one sees only its own candidates", async () => {
  const { scheduler, add, close } = await setup({ random: () => 0.999 });
  const loaded = [{ name: "llama3.2:latest" }];
  const agents = await Promise.all(
    Array.from({ length: 100 }, (_, i) => add(`n${i}`, { loaded_models: loaded })),
  );
  // The pool of near-ties is all 100 agents: the random source picks the last one.
  assert.equal(scheduler.choose(MODEL, scheduler.candidates(MODEL))?.id, agents[99].id);
  // A smaller decision after a larger one sees only its own candidates.
  assert.equal(scheduler.choose(MODEL, agents.slice(0, 3))?.id, agents[2].id);
  occupy(agents[2], 2);
  assert.equal(scheduler.choose(MODEL, agents.slice(0, 3))?.id, agents[1].id);
  await close();
});
