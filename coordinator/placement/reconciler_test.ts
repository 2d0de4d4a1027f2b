import assert from "node:assert/strict";
import { normalizeModelName } from "@oc/shared";
import { type SimModel, type Simulator, startSimulator } from "@oc/simulator";
import { testConfig } from "../config.ts";
import type { Config } from "../config.ts";
import { startCoordinator } from "../server.ts";
import { FakeClock, registration, testApp } from "../testing/app.ts";
import { spawnAgent } from "../testing/process.ts";
import type { PlacementStatus } from "../dashboard/wire.ts";
import { retryDelay } from "./tracker.ts";
import type { BusMessage } from "../telemetry/bus.ts";

interface Member {
  name: string;
  labels?: string[];
  models?: (string | SimModel)[];
  pullMs?: number;
  pullError?: string;
}

/**
 * An in-process coordinator on a fake clock whose reconciler acts (no timer: each test runs the
 * rounds), with simulated Ollamas registered as agents (no agent program: the coordinator pulls).
 */
async function setup(overrides: Partial<Config> = {}) {
  const clock = new FakeClock(Date.now());
  const t = await testApp(overrides, { now: clock.now });
  const { placement, registry, bus } = t.ctx;
  placement.activate(true);
  const sims: Record<string, Simulator> = {};
  const agents: Record<string, { id: string; secret: string }> = {};

  /** A simulated machine joins (registers, then an admin labels it). */
  const join = async (m: Member) => {
    const sim = await startSimulator({
      quiet: true,
      models: m.models ?? [],
      pullMs: m.pullMs,
      pullError: m.pullError,
    });
    sims[m.name] = sim;
    const tags = await (await fetch(`${sim.url}/api/tags`)).json();
    const reply = await t.register(registration({
      machine_name: m.name,
      ollama_port: sim.port,
      models: tags.models,
    }));
    agents[m.name] = { id: reply.agent_id, secret: reply.agent_secret };
    if (m.labels) {
      const res = await t.admin(`/api/agents/${reply.agent_id}`, {
        method: "PATCH",
        json: { labels: m.labels },
      });
      assert.equal(res.status, 200);
    }
    return sim;
  };
  /** A heartbeat, with the simulator's current model lists unless told otherwise. */
  const heartbeat = async (name: string, extra: Record<string, unknown> = {}) => {
    const sim = sims[name];
    const [tags, ps] = await Promise.all([
      fetch(`${sim.url}/api/tags`).then((r) => r.json()),
      fetch(`${sim.url}/api/ps`).then((r) => r.json()),
    ]);
    const res = await t.heartbeat(agents[name].secret, {
      agent_id: agents[name].id,
      cpu_usage: 1,
      memory_usage: 1,
      active_requests: 0,
      models: tags.models,
      loaded_models: ps.models,
      ...extra,
    });
    assert.equal(res.status, 200);
  };
  /** Resolves once `check()` holds, looked at after every progress message (a guard ends it). */
  const until = (check: () => boolean, what: string) =>
    new Promise<void>((resolve, reject) => {
      if (check()) return resolve();
      const guard = setTimeout(() => {
        stop();
        reject(new Error(`Gave up waiting: ${what}`));
      }, 20_000);
      const stop = bus.subscribe(() => {
        if (!check()) return;
        clearTimeout(guard);
        stop();
        resolve();
      }, ["progress", "agent"]);
    });
  const has = (name: string, model: string) =>
    registry.get(agents[name].id)!.modelKeys.has(normalizeModelName(model));
  const status = async () =>
    await (await t.admin("/api/admin/placements/status")).json() as PlacementStatus;
  const rule = async (body: unknown) => {
    const res = await t.admin("/api/admin/placements", { method: "PUT", json: body });
    assert.equal(res.status, 200, await res.clone().text());
  };
  const cell = (s: PlacementStatus, name: string) =>
    s.rules[0].agents.find((c) => c.agent_name === name);
  const close = async () => {
    await placement.settled();
    await Promise.all(Object.values(sims).map((s) => s.close()));
    await t.close();
  };
  return {
    ...t,
    clock,
    placement,
    sims,
    agents,
    join,
    heartbeat,
    until,
    has,
    status,
    rule,
    cell,
    [Symbol.asyncDispose]: close,
  };
}

Deno.test("placement - an agent joining gets the models its labels call for, others none", async () => {
  await using t = await setup();
  await t.join({ name: "gpu-1", labels: ["gpu"] });
  await t.join({ name: "cpu-1" });
  await t.rule({ model: "qwen3:0.6b", on: { label: "gpu" } });
  assert.deepEqual(t.placement.tick().map((a) => [a.type, a.agent.machineName]), [
    ["pull", "gpu-1"],
  ]);
  await t.until(() => t.has("gpu-1", "qwen3:0.6b"), "gpu-1 has the model");
  let s = await t.status();
  assert.equal(s.active, true);
  assert.equal(s.rules[0].met, true);
  assert.equal(t.cell(s, "gpu-1")?.state, "ok");
  assert.equal(t.cell(s, "cpu-1"), undefined);

  // A machine joins later and is labelled: the next round pulls onto it, and only onto it.
  await t.join({ name: "gpu-2", labels: ["gpu"] });
  s = await t.status();
  assert.equal(s.rules[0].met, false);
  assert.deepEqual(s.rules[0].drift, ["missing on gpu-2"]);
  assert.deepEqual(t.placement.tick().map((a) => a.agent.machineName), ["gpu-2"]);
  await t.until(() => t.has("gpu-2", "qwen3:0.6b"), "gpu-2 has the model");
  assert.equal((await t.status()).rules[0].met, true);
  assert.deepEqual(t.placement.tick(), []);
  assert.ok(!t.has("cpu-1", "qwen3:0.6b"));
  const tags = await (await fetch(`${t.sims["gpu-2"].url}/api/tags`)).json();
  assert.deepEqual(tags.models.map((m: { name: string }) => m.name), ["qwen3:0.6b"]);
});

Deno.test("placement - a wiped agent is refilled; nothing is deleted without a rule saying so", async () => {
  await using t = await setup();
  const sim = await t.join({ name: "a", labels: ["gpu"], models: ["llama3.2:3b", "phi4:14b"] });
  await t.rule({ model: "llama3.2:3b", on: { label: "gpu" } });
  assert.deepEqual(t.placement.tick(), [], "already there");
  // The disk is wiped: the agent's next report lists nothing.
  sim.update({ models: [] });
  await t.heartbeat("a");
  assert.ok(!t.has("a", "llama3.2:3b"));
  assert.deepEqual(t.placement.tick().map((a) => [a.type, a.model]), [["pull", "llama3.2:3b"]]);
  await t.until(() => t.has("a", "llama3.2:3b"), "refilled");
  const names = (await (await fetch(`${sim.url}/api/tags`)).json()).models.map((
    m: { name: string },
  ) => m.name);
  assert.deepEqual(names, ["llama3.2:3b"], "only what a rule asks for comes back");
  // A model no rule mentions stays where it is.
  sim.update({ models: ["llama3.2:3b", "mistral:7b"] });
  await t.heartbeat("a");
  t.placement.tick();
  await t.placement.settled();
  assert.ok(t.has("a", "mistral:7b"));
});

Deno.test("placement - a failed pull is shown, retried with back-off, then succeeds", async () => {
  await using t = await setup();
  const sim = await t.join({
    name: "a",
    labels: ["gpu"],
    pullError: "pull model manifest: file does not exist",
  });
  await t.rule({ model: "qwen3:0.6b", on: { label: "gpu" } });
  const attempt = async () => {
    const before = sim.stats.requests;
    const started = t.placement.tick();
    if (started.length) {
      await t.until(() => !t.placement.pulls.running().length, "the pull ended");
    }
    return { started: started.length, requests: sim.stats.requests - before };
  };
  assert.equal((await attempt()).started, 1);
  let s = await t.status();
  let a = t.cell(s, "a")!;
  assert.equal(a.state, "failed");
  assert.equal(a.error, "pull model manifest: file does not exist");
  assert.equal(a.failures, 1);
  assert.equal(a.retry_at, new Date(t.clock.now() + retryDelay(1)).toISOString());
  assert.deepEqual(s.rules[0].drift, ["pull failed on a"]);
  assert.ok(
    (await t.ctx.registry.events({ agentId: t.agents.a.id })).some((e) =>
      e.kind === "pull_failed" && /file does not exist/.test(e.message)
    ),
  );

  // Not before its time: no request reaches the agent.
  t.clock.advance(retryDelay(1) - 1);
  assert.deepEqual(await attempt(), { started: 0, requests: 0 });
  t.clock.advance(1);
  assert.equal((await attempt()).started, 1);
  a = t.cell(await t.status(), "a")!;
  assert.equal(a.failures, 2);
  assert.equal(a.retry_at, new Date(t.clock.now() + retryDelay(2)).toISOString());
  assert.equal(retryDelay(2), 2 * retryDelay(1));

  // The registry answers again: the next try after the longer wait succeeds.
  sim.update({ pullError: "" });
  t.clock.advance(retryDelay(1));
  assert.equal((await attempt()).started, 0, "still waiting out the doubled back-off");
  t.clock.advance(retryDelay(1));
  assert.equal((await attempt()).started, 1);
  s = await t.status();
  assert.equal(t.cell(s, "a")!.state, "ok");
  assert.equal(s.rules[0].met, true);
});

Deno.test("placement - no pull storm: twenty agents joining at once pull within the fleet limit", async () => {
  await using t = await setup({ placementMaxPulls: 3, placementMaxPullsPerAgent: 1 });
  await t.rule({ model: "qwen3:0.6b", on: { label: "gpu" } });
  await Promise.all(
    Array.from({ length: 20 }, (_, i) => t.join({ name: `n${i}`, labels: ["gpu"], pullMs: 20 })),
  );
  // Pulls as the agents see them: started, and ended (the coordinator's own pull progress).
  const running = new Set<string>();
  let most = 0;
  let starts = 0;
  let ends = 0;
  const stop = t.ctx.bus.subscribe((m: BusMessage) => {
    if (m.type !== "progress") return;
    const p = m.progress as { id: string; status: string; done: boolean };
    if (p.status === "starting") {
      running.add(p.id);
      starts++;
    }
    if (p.done && running.delete(p.id)) ends++;
    most = Math.max(most, running.size);
  });
  const all = () =>
    Array.from({ length: 20 }, (_, i) => `n${i}`).every((n) => t.has(n, "qwen3:0.6b"));
  assert.equal(t.placement.tick().length, 3, "the first round starts three pulls, not twenty");
  const s = await t.status();
  assert.equal(s.rules[0].counts.pulling, 3);
  assert.equal(
    s.rules[0].agents.filter((c) => /waiting for a pull slot/.test(c.reason ?? "")).length,
    17,
  );
  let rounds = 1;
  while (!all()) {
    const before = starts;
    const ended = ends;
    await t.until(() => ends > ended || all(), "a pull ends");
    t.placement.tick();
    rounds++;
    assert.ok(starts - before <= 3);
  }
  stop();
  assert.equal(starts, 20, "one pull per agent");
  assert.ok(most <= 3, `at most 3 pulls at once, saw ${most}`);
  assert.ok(rounds >= 7, "the pulls went in waves");
  assert.equal((await t.status()).rules[0].met, true);
});

Deno.test("placement - a warm rule loads the model with an empty request and renews it before expiry", async () => {
  await using t = await setup();
  const sim = await t.join({ name: "a", labels: ["gpu"], models: ["llama3.2:3b"] });
  await t.join({ name: "b", labels: ["gpu"], models: ["llama3.2:3b"] });
  await t.rule({ model: "llama3.2:3b", on: { label: "gpu" }, warm: 1, keep_alive: "30m" });
  const loads = () =>
    t.placement.tick().filter((a) => a.type === "load").map((a) => [
      a.agent.machineName,
      a.type === "load" && a.renew,
    ]);
  assert.deepEqual(loads(), [["a", false]]);
  await t.placement.settled();
  const ps = async () => (await (await fetch(`${sim.url}/api/ps`)).json()).models;
  const [loaded] = await ps();
  assert.equal(loaded.name, "llama3.2:3b");
  // Ollama keeps it for the rule's keep_alive (the simulator's clock is the real one).
  const left = Date.parse(loaded.expires_at) - Date.now();
  assert.ok(left > 29 * 60_000 && left <= 30 * 60_000, `kept ${left} ms`);
  let s = await t.status();
  assert.equal(s.rules[0].met, true);
  assert.equal(t.cell(s, "a")!.warm, true);
  assert.equal(t.cell(s, "a")!.loaded, true);
  assert.equal(t.cell(s, "b")!.warm, false);
  assert.ok(
    (await t.ctx.registry.events({ agentId: t.agents.a.id })).some((e) => e.kind === "warm"),
  );

  // Five minutes on: nothing to do. Twenty-one minutes on: under ten left, renewed.
  t.clock.advance(5 * 60_000);
  await t.heartbeat("a");
  assert.deepEqual(loads(), []);
  t.clock.advance(16 * 60_000);
  await t.heartbeat("a");
  await t.heartbeat("b");
  assert.deepEqual(loads(), [["a", true]]);
  await t.placement.settled();
  assert.deepEqual(loads(), [], "renewed: thirty minutes again");
  s = await t.status();
  assert.equal(s.rules[0].counts.warm, 1);
  assert.equal(
    t.cell(s, "a")!.expires_at,
    new Date(t.clock.now() + 30 * 60_000).toISOString(),
  );
  // Ollama let the model go (memory needed elsewhere): loaded again.
  await fetch(`${sim.url}/api/generate`, {
    method: "POST",
    body: JSON.stringify({ model: "llama3.2:3b", keep_alive: 0 }),
  }).then((r) => r.body?.cancel());
  t.clock.advance(60_000);
  await t.heartbeat("a");
  assert.equal((await t.status()).rules[0].met, false);
  assert.equal(loads().length, 1);
});

Deno.test("placement - not enough disk: not pulled, shown; pulled once there is room", async () => {
  await using t = await setup();
  await t.join({ name: "src", models: [{ name: "big:70b", size: 40e9 }] });
  await t.join({ name: "a", labels: ["gpu"] });
  await t.heartbeat("a", { disk_free: 30e9, disk_total: 500e9 });
  await t.rule({ model: "big:70b", on: { label: "gpu" } });
  const before = t.sims.a.stats.requests;
  assert.deepEqual(t.placement.tick(), []);
  const s = await t.status();
  const a = t.cell(s, "a")!;
  assert.equal(a.state, "no_disk");
  assert.equal(a.reason, "needs 44.0 GB, 30.0 GB free");
  assert.equal(a.disk_free, 30e9);
  assert.equal(s.rules[0].size, 40e9);
  assert.deepEqual(s.rules[0].drift, ["not enough disk on a"]);
  assert.equal(t.sims.a.stats.requests, before, "no request reached the agent");

  await t.heartbeat("a", { disk_free: 300e9, disk_total: 500e9 });
  assert.equal(t.placement.tick().length, 1);
  await t.until(() => t.has("a", "big:70b"), "pulled once there is room");
});

Deno.test("placement - a never_on label deletes the model there, and only there", async () => {
  await using t = await setup();
  const laptop = await t.join({ name: "laptop", labels: ["laptop"], models: ["llama3.3:70b"] });
  const big = await t.join({ name: "big", labels: ["gpu"], models: ["llama3.3:70b"] });
  await t.rule({ model: "llama3.3:70b", on: { label: "gpu" }, never_on: { label: "laptop" } });
  assert.deepEqual(t.placement.tick().map((a) => [a.type, a.agent.machineName]), [
    ["delete", "laptop"],
  ]);
  await t.placement.settled();
  const names = async (sim: Simulator) =>
    (await (await fetch(`${sim.url}/api/tags`)).json()).models.map((m: { name: string }) => m.name);
  assert.deepEqual(await names(laptop), []);
  assert.deepEqual(await names(big), ["llama3.3:70b"]);
  assert.ok(!t.has("laptop", "llama3.3:70b"));
  assert.equal((await t.status()).rules[0].met, true);
  assert.ok(
    (await t.ctx.registry.events({ agentId: t.agents.laptop.id })).some((e) =>
      e.kind === "model_deleted" && /never on "laptop"/.test(e.message)
    ),
  );
  // Removing the rule deletes nothing anywhere.
  const res = await t.admin("/api/admin/placements", {
    method: "DELETE",
    json: { model: "llama3.3:70b" },
  });
  assert.equal(res.status, 200);
  assert.deepEqual(t.placement.tick(), []);
  assert.deepEqual(await names(big), ["llama3.3:70b"]);
});

Deno.test("placement - only the leading coordinator acts; the others still show the state", async () => {
  await using t = await setup();
  await t.join({ name: "a", labels: ["gpu"] });
  await t.rule({ model: "qwen3:0.6b", on: { label: "gpu" } });
  const before = t.sims.a.stats.requests;
  t.placement.activate(false);
  assert.deepEqual(t.placement.tick(), []);
  const s = await t.status();
  assert.equal(s.active, false);
  assert.equal(t.cell(s, "a")!.state, "missing");
  assert.equal(t.sims.a.stats.requests, before);
});

Deno.test("placement - a coordinator that does not lead forgets pulls no rule needs", async () => {
  await using t = await setup();
  await t.join({ name: "a", labels: ["gpu"] });
  await t.rule({ model: "qwen3:0.6b", on: { label: "gpu" } });
  t.placement.activate(false);
  const id = t.agents.a.id;
  // Pulls the others started (admins' pulls of any model) end here too, a hundred of them.
  for (let i = 0; i < 100; i++) {
    const model = `other-${i}`;
    t.ctx.bus.publish({ type: "progress", progress: { agent_id: id, model, status: "pulling" } });
    t.ctx.bus.publish({
      type: "progress",
      progress: { agent_id: id, model, status: "error", done: true, error: "refused" },
    });
  }
  // A failed pull of a model with a rule is kept: it shows, with its back-off.
  t.ctx.bus.publish({
    type: "progress",
    progress: { agent_id: id, model: "qwen3:0.6b", status: "error", done: true, error: "no" },
  });
  assert.deepEqual(t.placement.pulls.onAgent(id).map((p) => p.model), ["qwen3:0.6b"]);
  assert.equal(t.cell(await t.status(), "a")!.state, "failed");
});

Deno.test("placement - a real agent pulls through its command, with progress, and reports its disk", async () => {
  const coordinator = await startCoordinator(testConfig({
    heartbeatInterval: 0.2,
    placementInterval: 0.2,
    healthCheckInterval: 3600,
  }));
  const { ctx } = coordinator;
  const agent = spawnAgent(coordinator.url, "box", undefined, { SIM_PULL_MS: "400" });
  const seen: Record<string, unknown>[] = [];
  const stop = ctx.bus.subscribe((m) => {
    if (m.type === "progress") seen.push(m.progress);
  }, ["progress"]);
  try {
    const until = (check: () => boolean, what: string) =>
      new Promise<void>((resolve, reject) => {
        const guard = setTimeout(() => reject(new Error(`Gave up waiting: ${what}`)), 30_000);
        const again = () => {
          if (!check()) return;
          clearTimeout(guard);
          off();
          resolve();
        };
        const off = ctx.bus.subscribe(again, ["agent", "progress"]);
        again();
      });
    const box = () => ctx.registry.all().find((a) => a.machineName === "box");
    await until(() => box()?.metrics?.disk_free !== undefined, "the agent reports its disk");
    assert.ok(box()!.metrics!.disk_free! > 0);
    await ctx.registry.patch(box()!.id, { labels: ["gpu"] });
    await ctx.placement.rules.set({ model: "qwen3:0.6b", on: { label: "gpu" } });
    await until(
      () => box()!.modelKeys.has(normalizeModelName("qwen3:0.6b")),
      "the agent lists the model",
    );
    const mine = seen.filter((p) => p.agent_id === box()!.id && p.model === "qwen3:0.6b");
    assert.ok(mine.every((p) => typeof p.command_id === "string"), "the agent's own pull");
    assert.ok(mine.some((p) => typeof p.completed === "number" && typeof p.total === "number"));
    assert.ok(mine.some((p) => p.done === true && p.status === "success"));
    assert.ok(
      (await ctx.registry.events({ agentId: box()!.id })).some((e) =>
        e.kind === "pulled" && /placement|finished/.test(e.message)
      ),
    );
    assert.equal(ctx.placement.status().rules[0].met, true);
  } finally {
    stop();
    await agent.stop();
    await coordinator.stop();
  }
});
