import assert from "node:assert/strict";
import { type InstalledModel, type LoadedModel, normalizeModelName } from "@oc/shared";
import { Bus } from "../telemetry/bus.ts";
import { FakeClock, memoryRegistry, registration } from "../testing/app.ts";
import type { Agent } from "../fleet/registry.ts";
import { type ChoreState, DISK_MARGIN, plan, type PlanInput } from "./plan.ts";
import { PlacementRule } from "./rules.ts";
import { PullTracker, retryDelay } from "./tracker.ts";

const GB = 1e9;

interface Member {
  name: string;
  labels?: string[];
  models?: InstalledModel[];
  loaded?: LoadedModel[];
  disk_free?: number;
  drain?: boolean;
}

/** A registry with these agents, a tracker on a bus, and a plan over them. */
async function setup(members: Member[]) {
  const clock = new FakeClock();
  const bus = new Bus();
  const reg = await memoryRegistry({ now: clock.now, bus });
  const agents: Record<string, Agent> = {};
  for (const m of members) {
    const { agent } = await reg.registry.register(registration({
      machine_name: m.name,
      models: m.models ?? [],
      loaded_models: m.loaded ?? [],
    }));
    if (m.labels || m.drain) {
      await reg.registry.patch(agent.id, { labels: m.labels, drain: m.drain });
    }
    if (m.disk_free !== undefined) {
      reg.registry.heartbeat({
        agent_id: agent.id,
        cpu_usage: 0,
        memory_usage: 0,
        active_requests: 0,
        disk_free: m.disk_free,
      });
    }
    agents[m.name] = agent;
  }
  const pulls = new PullTracker(bus, { now: clock.now });
  const chores = new Map<string, ChoreState>();
  const run = (rules: unknown[], limits = { maxPulls: 2, maxPullsPerAgent: 1 }) =>
    plan(
      {
        rules: rules.map((r) => PlacementRule.parse(r)),
        agents: reg.registry.all(),
        now: clock.now(),
        pulls,
        chore: (kind, agentId, key) => chores.get(`${kind} ${agentId} ${key}`),
        limits,
        name: (a) => reg.registry.label(a),
      } satisfies PlanInput,
    );
  const progress = (agent: string, model: string, p: Record<string, unknown>) =>
    bus.publish({
      type: "progress",
      progress: { agent_id: agents[agent].id, model, status: "pulling", ...p },
    });
  const close = async () => {
    pulls.close();
    await reg.close();
  };
  return {
    clock,
    registry: reg.registry,
    agents,
    pulls,
    chores,
    run,
    progress,
    [Symbol.asyncDispose]: close,
  };
}

const pulled = (p: ReturnType<typeof plan>) =>
  p.actions.filter((a) => a.type === "pull").map((a) => a.agent.machineName);
const cell = (p: ReturnType<typeof plan>, agent: string, rule = 0) =>
  p.rules[rule].agents.find((c) => c.agent_name === agent)!;

Deno.test("placement plan - a label rule wants every labelled agent, within the pull limits", async () => {
  await using t = await setup([
    { name: "a", labels: ["gpu"] },
    { name: "b", labels: ["gpu"] },
    { name: "c", labels: ["gpu"] },
    { name: "d" },
    { name: "e", labels: ["gpu"], models: [{ name: "qwen3:8b", size: 5 * GB }] },
  ]);
  const rules = [{ model: "qwen3:8b", on: { label: "gpu" } }];
  const p = t.run(rules);
  assert.deepEqual(pulled(p), ["a", "b"], "two at once in the fleet");
  assert.equal(p.rules[0].met, false);
  assert.deepEqual(p.rules[0].counts, {
    wanted: 4,
    ok: 1,
    pulling: 0,
    warm: 0,
    warm_wanted: 0,
    unwanted: 0,
  });
  assert.equal(cell(p, "c").state, "missing");
  assert.match(cell(p, "c").reason!, /waiting for a pull slot \(2 at once in the fleet\)/);
  assert.equal(cell(p, "d"), undefined, "an agent without the label is not concerned");
  assert.equal(cell(p, "e").state, "ok");
  assert.deepEqual(p.rules[0].drift, ["missing on a, b, c"]);

  // Once a and b are pulling, nothing more starts; a second model waits for a per-agent slot.
  t.progress("a", "qwen3:8b", { status: "pulling manifest" });
  t.progress("b", "qwen3:8b", { status: "pulling 6a0", completed: 1, total: 4 });
  const busy = t.run([...rules, { model: "phi4", on: { agents: ["a"] } }], {
    maxPulls: 5,
    maxPullsPerAgent: 1,
  });
  assert.deepEqual(pulled(busy), ["c"]);
  assert.equal(cell(busy, "b").state, "pulling");
  assert.deepEqual(cell(busy, "b").progress, { status: "pulling 6a0", completed: 1, total: 4 });
  assert.match(cell(busy, "a", 1).reason!, /1 at once per agent/);
  assert.deepEqual(busy.rules[0].drift, ["pulling on a, b", "missing on c"]);
});

Deno.test("placement plan - a count rule keeps its holders and picks agents with room first", async () => {
  await using t = await setup([
    { name: "full", disk_free: 1 * GB },
    { name: "roomy", disk_free: 500 * GB },
    { name: "some", disk_free: 50 * GB },
    { name: "has", models: [{ name: "llama3.1:8b", size: 5 * GB }] },
  ]);
  const p = t.run([{ model: "llama3.1:8b", on: { count: 3 } }], {
    maxPulls: 10,
    maxPullsPerAgent: 1,
  });
  assert.deepEqual(pulled(p), ["roomy", "some"]);
  assert.equal(cell(p, "full"), undefined, "not needed: the others can take it");
  // A bigger count reaches the full agent, which cannot take it, and says so.
  const more = t.run([{ model: "llama3.1:8b", on: { count: 5 } }], {
    maxPulls: 10,
    maxPullsPerAgent: 1,
  });
  assert.equal(cell(more, "full").state, "no_disk");
  assert.equal(cell(more, "full").reason, `needs ${(5 * DISK_MARGIN).toFixed(1)} GB, 1.0 GB free`);
  assert.match(more.rules[0].drift.join("; "), /only 4 online agents can take it/);
  assert.match(more.rules[0].drift.join("; "), /not enough disk on full/);
  // Enough holders: nothing to do, spare copies are left alone.
  const one = t.run([{ model: "llama3.1:8b", on: { count: 1 } }]);
  assert.deepEqual(one.actions, []);
  assert.equal(one.rules[0].met, true);
});

Deno.test("placement plan - named agents, by id, display or machine name; unknown ones are drift", async () => {
  await using t = await setup([{ name: "a" }, { name: "b" }]);
  await t.registry.patch(t.agents.b.id, { display_name: "Bee" });
  const p = t.run([{ model: "phi4", on: { agents: [t.agents.a.id, "Bee", "ghost"] } }], {
    maxPulls: 5,
    maxPullsPerAgent: 1,
  });
  assert.deepEqual(pulled(p), ["a", "b"]);
  assert.deepEqual(p.rules[0].drift, ['agent "ghost" is not registered', "missing on a, Bee"]);
});

Deno.test("placement plan - deletes only where never_on forbids, and never pulls there", async () => {
  const model = { name: "llama3.3:70b", size: 40 * GB };
  await using t = await setup([
    { name: "big", labels: ["gpu-large"], models: [model] },
    { name: "laptop", labels: ["laptop"], models: [model] },
    { name: "spare", models: [model] },
    { name: "laptop2", labels: ["laptop"] },
  ]);
  const p = t.run([{ model: "llama3.3:70b", on: { count: 4 }, never_on: { label: "laptop" } }]);
  const deletes = p.actions.filter((a) => a.type === "delete");
  assert.deepEqual(deletes.map((a) => a.agent.machineName), ["laptop"]);
  assert.deepEqual(pulled(p), []);
  assert.equal(cell(p, "laptop").state, "unwanted");
  assert.equal(cell(p, "laptop").wanted, false);
  assert.equal(cell(p, "laptop2"), undefined);
  assert.deepEqual(p.rules[0].drift, [
    "wanted on at least 4 agents, but only 2 online agents can take it",
    'still on laptop (never on "laptop")',
  ]);
  // Without never_on nothing is ever deleted, wherever the model is.
  const keep = t.run([{ model: "llama3.3:70b", on: { label: "gpu-large" } }]);
  assert.deepEqual(keep.actions, []);
  assert.equal(cell(keep, "spare").wanted, false);
  assert.equal(cell(keep, "spare").state, "ok");
  assert.equal(keep.rules[0].met, true);
});

Deno.test("placement plan - a failed pull waits out its back-off, then is tried again", async () => {
  await using t = await setup([{ name: "a", labels: ["gpu"] }]);
  const rules = [{ model: "nosuch:1b", on: { label: "gpu" } }];
  t.progress("a", "nosuch:1b", { status: "pulling manifest" });
  t.progress("a", "nosuch:1b", { status: "error", done: true, error: "file does not exist" });
  let p = t.run(rules);
  assert.deepEqual(pulled(p), []);
  assert.equal(cell(p, "a").state, "failed");
  assert.equal(cell(p, "a").error, "file does not exist");
  assert.equal(cell(p, "a").failures, 1);
  assert.equal(cell(p, "a").retry_at, new Date(t.clock.now() + retryDelay(1)).toISOString());
  t.clock.advance(retryDelay(1) - 1);
  assert.deepEqual(pulled(t.run(rules)), []);
  t.clock.advance(1);
  p = t.run(rules);
  assert.deepEqual(pulled(p), ["a"]);
  assert.match(cell(p, "a").reason!, /trying again \(1 failed\)/);
  assert.equal(cell(p, "a").error, "file does not exist", "the last error stays visible");
  // A second failure waits twice as long.
  t.progress("a", "nosuch:1b", { status: "error", done: true, error: "file does not exist" });
  assert.equal(
    t.pulls.get(t.agents.a.id, "registry.ollama.ai/library/nosuch:1b")!.retryAt,
    t.clock.now() + 2 * retryDelay(1),
  );
});

Deno.test("placement plan - no pull where the model does not fit; pulls running there take room", async () => {
  await using t = await setup([
    { name: "src", models: [{ name: "big:1", size: 10 * GB }, { name: "small:1", size: 2 * GB }] },
    { name: "a", labels: ["x"], disk_free: 11 * GB + 1 },
    { name: "b", labels: ["x"], disk_free: 10 * GB },
    { name: "c", labels: ["x"] },
  ]);
  const rules = [{ model: "big:1", on: { label: "x" } }];
  const p = t.run(rules, { maxPulls: 10, maxPullsPerAgent: 1 });
  assert.deepEqual(pulled(p), ["a", "c"], "c reports no disk: it is not held back");
  assert.equal(cell(p, "b").state, "no_disk");
  assert.equal(cell(p, "b").disk_free, 10 * GB);
  // While a pulls small:1, big:1 no longer fits beside it.
  t.progress("a", "small:1", { status: "pulling" });
  const q = t.run(rules, { maxPulls: 10, maxPullsPerAgent: 5 });
  assert.equal(cell(q, "a").state, "no_disk");
  assert.match(cell(q, "a").reason!, /needs 11\.0 GB, 9\.0 GB free/);
  // An unknown model (no agent has it yet) has no known size: it is pulled.
  const r = t.run([{ model: "new:1", on: { label: "x" } }], { maxPulls: 10, maxPullsPerAgent: 1 });
  assert.deepEqual(pulled(r), ["b", "c"]);
});

Deno.test("placement plan - offline and draining agents wait; a count rule counts a rebooting holder", async () => {
  await using t = await setup([
    { name: "a", labels: ["gpu"], models: [{ name: "m:1", size: GB }] },
    { name: "b", labels: ["gpu"], drain: true },
    { name: "c", labels: ["gpu"] },
  ]);
  // c goes silent and offline.
  t.clock.advance(25_000);
  t.registry.heartbeat({
    agent_id: t.agents.a.id,
    cpu_usage: 0,
    memory_usage: 0,
    active_requests: 0,
  });
  t.registry.heartbeat({
    agent_id: t.agents.b.id,
    cpu_usage: 0,
    memory_usage: 0,
    active_requests: 0,
  });
  t.registry.sweep();
  assert.equal(t.agents.c.status, "offline");
  const p = t.run([{ model: "m:1", on: { label: "gpu" } }]);
  assert.deepEqual(pulled(p), []);
  assert.equal(cell(p, "b").state, "missing");
  assert.match(cell(p, "b").reason!, /draining/);
  assert.equal(cell(p, "c").state, "offline");

  // a holder goes offline: for a while it still counts, then another agent gets a copy.
  t.clock.advance(25_000);
  t.registry.heartbeat({
    agent_id: t.agents.b.id,
    cpu_usage: 0,
    memory_usage: 0,
    active_requests: 0,
  });
  await t.registry.patch(t.agents.b.id, { drain: false });
  t.registry.sweep();
  assert.equal(t.agents.a.status, "offline");
  assert.deepEqual(pulled(t.run([{ model: "m:1", on: { count: 1 } }])), []);
  t.clock.advance(10 * 60_000);
  t.registry.heartbeat({
    agent_id: t.agents.b.id,
    cpu_usage: 0,
    memory_usage: 0,
    active_requests: 0,
  });
  assert.deepEqual(pulled(t.run([{ model: "m:1", on: { count: 1 } }])), ["b"]);
});

Deno.test("placement plan - warm keeps the loaded agents first, loads others and renews before expiry", async () => {
  const model = { name: "llama3.2:3b", size: 2 * GB };
  await using t = await setup([
    { name: "a", labels: ["gpu"], models: [model] },
    { name: "b", labels: ["gpu"], models: [model] },
    { name: "c", labels: ["gpu"] },
  ]);
  const rules = [{ model: "llama3.2:3b", on: { label: "gpu" }, warm: 1, keep_alive: "30m" }];
  let p = t.run(rules);
  const loads = () => p.actions.filter((a) => a.type === "load");
  assert.deepEqual(loads().map((a) => [a.agent.machineName, a.type === "load" && a.renew]), [[
    "a",
    false,
  ]]);
  assert.deepEqual(p.rules[0].drift, ["missing on c", "loaded on 0 of 1 agents"]);
  assert.equal(cell(p, "a").warm, true);

  // b has it loaded (traffic): it is the warm one, nothing to load.
  const expires = (ms: number) => new Date(t.clock.now() + ms).toISOString();
  t.registry.setModels(t.agents.b, [model], [{
    name: "llama3.2:3b",
    expires_at: expires(25 * 60_000),
  }]);
  p = t.run(rules);
  assert.deepEqual(loads(), []);
  assert.equal(cell(p, "b").warm, true);
  assert.equal(cell(p, "b").loaded, true);
  assert.equal(cell(p, "a").warm, false);
  assert.equal(p.rules[0].counts.warm, 1);
  // Under 10 minutes left: renewed, with the rule's keep_alive.
  t.clock.advance(15 * 60_000 + 1);
  p = t.run(rules);
  assert.deepEqual(
    loads().map((
      a,
    ) => [a.agent.machineName, a.type === "load" && a.renew, a.type === "load" && a.keepAlive]),
    [["b", true, "30m"]],
  );
  // A load under way counts for the choice (nothing else is loaded) but not yet as warm.
  t.chores.set(`load ${t.agents.b.id} registry.ollama.ai/library/llama3.2:3b`, {
    running: true,
    failures: 0,
  });
  t.clock.advance(20 * 60_000);
  p = t.run(rules);
  assert.deepEqual(loads(), []);
  assert.equal(p.rules[0].counts.warm, 0);
});

Deno.test("placement rules - the schema says what is wrong in words", () => {
  const bad = (r: unknown) => {
    const res = PlacementRule.safeParse(r);
    assert.equal(res.success, false);
    return res.error!.issues[0].message;
  };
  assert.match(bad({ model: "m", on: {} }), /on needs a label/);
  assert.match(bad({ model: "m", on: { agents: ["a"], label: "x" } }), /on needs a label/);
  assert.match(bad({ model: "m", on: { label: "bad label" } }), /expected a label/);
  assert.match(bad({ model: "m", on: { count: 0 } }), />=1/);
  assert.match(bad({ model: "m", on: { label: "x" }, keep_alive: "5" }), /duration/);
  assert.match(bad({ model: "m", on: { label: "x" }, keep_alive: "30s" }), /at least 1 minute/);
  assert.match(
    bad({ model: "m", on: { label: "x" }, never_on: { label: "x" } }),
    /never_on cannot/,
  );
  assert.match(bad({ model: "m", on: { label: "x" }, extra: 1 }), /Unrecognized key/);
  assert.ok(
    PlacementRule.safeParse({ model: "m", on: { count: 2, label: "x" }, warm: 1, keep_alive: "-1" })
      .success,
  );
});

Deno.test("plan - its work grows with the agents, not with their square", () => {
  const models = ["a", "b", "c"];
  let reads = 0;
  const fleet = (n: number) =>
    Array.from({ length: n }, (_, i) =>
      new Proxy({
        id: `id${i}`,
        machineName: `m${i}`,
        displayName: null,
        labels: ["gpu"],
        status: "online",
        modelKeys: new Set(models.map(normalizeModelName)),
        loadedKeys: new Set(),
        loadedModels: [],
        modelSizes: new Map(models.map((m) => [normalizeModelName(m), GB])),
        metrics: { disk_free: 1000 * GB },
        registeredAt: i,
        lastSeen: 0,
      }, {
        get(target, prop, receiver) {
          reads++;
          return Reflect.get(target, prop, receiver);
        },
      }) as unknown as Agent);
  const readsFor = (agents: Agent[]) => {
    reads = 0;
    plan({
      rules: [
        PlacementRule.parse({ model: "a", on: { label: "gpu" } }),
        PlacementRule.parse({ model: "b", on: { count: agents.length }, warm: 2 }),
        PlacementRule.parse({ model: "c", on: { agents: [`m${agents.length - 1}`] } }),
      ],
      agents,
      now: 0,
      pulls: { get: () => undefined, running: () => [] },
      chore: () => undefined,
      limits: { maxPulls: 2, maxPullsPerAgent: 1 },
      name: (a) => a.machineName,
    });
    return reads;
  };
  const small = readsFor(fleet(100));
  const large = readsFor(fleet(400));
  // Four times the agents: about four times the reads (sixteen times before agents were indexed).
  assert.ok(large < small * 6, `${small} reads for 100 agents, ${large} for 400`);
});
