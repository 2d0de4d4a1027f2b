import assert from "node:assert/strict";
import type { BusMessage } from "../../telemetry/bus.ts";
import { startFleet, testApp } from "../../testing/app.ts";
import type { PullProgress } from "./models.ts";

/** Collects progress messages until a pull of each id is done. */
function progressUntilDone(bus: { subscribe(fn: (m: BusMessage) => void): () => void }) {
  const seen: PullProgress[] = [];
  let resolve!: () => void;
  const wanted = new Set<string>();
  const finished = new Promise<void>((r) => resolve = r);
  const stop = bus.subscribe((m) => {
    if (m.type !== "progress") return;
    seen.push(m.progress as unknown as PullProgress);
    const done = new Set(seen.filter((p) => p.done).map((p) => p.id));
    if (wanted.size && [...wanted].every((id) => done.has(id))) resolve();
  });
  return {
    seen,
    async wait(ids: string[]) {
      ids.forEach((id) => wanted.add(id));
      if (ids.every((id) => seen.some((p) => p.id === id && p.done))) resolve();
      await finished;
      stop();
    },
  };
}

Deno.test("models API - the fleet view shows where each model is installed and loaded", async () => {
  await using fleet = await startFleet([
    { name: "a", models: ["llama3.2:latest", "qwen2.5:7b"], loaded: ["llama3.2:latest"] },
    { name: "b", models: ["llama3.2:latest"] },
  ]);
  const models = await (await fetch(`${fleet.url}/api/models`, { headers: fleet.adminHeaders }))
    .json();
  assert.deepEqual(models.map((m: { name: string }) => m.name), ["llama3.2:latest", "qwen2.5:7b"]);
  const llama = models[0];
  assert.deepEqual(llama.installed.map((c: { agent_name: string }) => c.agent_name).sort(), [
    "a",
    "b",
  ]);
  assert.deepEqual(llama.loaded.map((c: { agent_name: string }) => c.agent_name), ["a"]);
  assert.ok(llama.size > 0);
  assert.equal(typeof llama.quantization, "string");
});

Deno.test("models API - a pull streams progress on the bus and the agent then lists the model", async () => {
  await using fleet = await startFleet([{ name: "a" }, { name: "b" }]);
  const { ctx } = fleet.coordinator;
  const progress = progressUntilDone(ctx.bus);
  const res = await fetch(`${fleet.url}/api/models/pull`, {
    method: "POST",
    headers: fleet.adminHeaders,
    body: JSON.stringify({ model: "phi3:mini", agents: [fleet.ids.a] }),
  });
  assert.equal(res.status, 202);
  const { pulls } = await res.json();
  assert.equal(pulls.length, 1);
  assert.equal(pulls[0].agent_id, fleet.ids.a);
  await progress.wait([pulls[0].id]);
  const mine = progress.seen.filter((p) => p.id === pulls[0].id);
  assert.ok(mine.length >= 2, "a start and an end at least");
  assert.equal(mine[0].status, "starting");
  const last = mine.at(-1)!;
  assert.deepEqual([last.done, last.status, last.error, last.model], [
    true,
    "success",
    undefined,
    "phi3:mini",
  ]);
  assert.ok(ctx.registry.get(fleet.ids.a)!.modelKeys.has("registry.ollama.ai/library/phi3:mini"));
  assert.ok(!ctx.registry.get(fleet.ids.b)!.modelKeys.has("registry.ollama.ai/library/phi3:mini"));
  const recent =
    await (await fetch(`${fleet.url}/api/models/pulls`, { headers: fleet.adminHeaders })).json();
  assert.equal(recent[0].id, pulls[0].id);
  assert.ok((await ctx.registry.events({ agentId: fleet.ids.a })).some((e) => e.kind === "pulled"));
});

Deno.test("models API - pulling onto all reaches every agent that is not offline", async () => {
  await using fleet = await startFleet([{ name: "a" }, { name: "b" }]);
  const { ctx } = fleet.coordinator;
  const progress = progressUntilDone(ctx.bus);
  const res = await fetch(`${fleet.url}/api/models/pull`, {
    method: "POST",
    headers: fleet.adminHeaders,
    body: JSON.stringify({ model: "qwen2.5:7b", agents: "all" }),
  });
  assert.equal(res.status, 202);
  const { pulls } = await res.json();
  assert.equal(pulls.length, 2);
  await progress.wait(pulls.map((p: { id: string }) => p.id));
  for (const id of Object.values(fleet.ids)) {
    assert.ok(ctx.registry.get(id)!.modelKeys.has("registry.ollama.ai/library/qwen2.5:7b"));
  }
});

Deno.test("models API - a pull from an agent that stopped answering ends with an error", async () => {
  await using fleet = await startFleet([{ name: "a" }]);
  const { ctx } = fleet.coordinator;
  await fleet.sims.a.setFault({ type: "refuse" });
  const progress = progressUntilDone(ctx.bus);
  const res = await fetch(`${fleet.url}/api/models/pull`, {
    method: "POST",
    headers: fleet.adminHeaders,
    body: JSON.stringify({ model: "phi3:mini", agents: [fleet.ids.a] }),
  });
  const { pulls } = await res.json();
  await progress.wait([pulls[0].id]);
  const last = progress.seen.filter((p) => p.id === pulls[0].id).at(-1)!;
  assert.equal(last.done, true);
  assert.equal(last.status, "error");
  assert.match(last.error!, /unreachable/);
});

Deno.test("models API - delete removes one agent's copy; a second delete is a 404", async () => {
  await using fleet = await startFleet([
    { name: "a", models: ["llama3.2:latest", "qwen2.5:7b"] },
    { name: "b", models: ["qwen2.5:7b"] },
  ]);
  const { ctx } = fleet.coordinator;
  const url = `${fleet.url}/api/models/${fleet.ids.a}/${encodeURIComponent("qwen2.5:7b")}`;
  const res = await fetch(url, { method: "DELETE", headers: fleet.adminHeaders });
  assert.equal(res.status, 200);
  assert.deepEqual(await res.json(), { ok: true });
  assert.ok(!ctx.registry.get(fleet.ids.a)!.modelKeys.has("registry.ollama.ai/library/qwen2.5:7b"));
  assert.ok(ctx.registry.get(fleet.ids.b)!.modelKeys.has("registry.ollama.ai/library/qwen2.5:7b"));
  const again = await fetch(url, { method: "DELETE", headers: fleet.adminHeaders });
  assert.equal(again.status, 404);
  assert.match((await again.json()).error, /does not have it/);
  // The same with a JSON body, and a model name with a slash in it.
  const body = await fetch(`${fleet.url}/api/models`, {
    method: "DELETE",
    headers: fleet.adminHeaders,
    body: JSON.stringify({ agent_id: fleet.ids.b, model: "library/qwen2.5:7b" }),
  });
  assert.equal(body.status, 200);
  await body.body?.cancel();
});

Deno.test("models API - bad input is a 4xx with an error message, never a crash", async () => {
  const t = await testApp();
  const { agent_id } = await t.register({
    machine_name: "x",
    ip_address: "127.0.0.1",
    ollama_version: "0.12.6",
    ollama_port: 9,
  });
  const cases: [RequestInit & { json?: unknown }, number][] = [
    [{ json: "{not json" }, 400],
    [{ json: { model: "llama3.2" } }, 400],
    [{ json: { model: "", agents: "all" } }, 400],
    [{ json: { model: "bad name!", agents: "all" } }, 400],
    [{ json: { model: "llama3.2", agents: [] } }, 400],
    [{ json: { model: "llama3.2", agents: "some" } }, 400],
    [{ json: { model: "llama3.2", agents: ["nobody"] } }, 404],
    [{ json: { model: "llama3.2", agents: "all", extra: 1 } }, 400],
  ];
  for (const [init, status] of cases) {
    const res = await t.admin("/api/models/pull", init);
    assert.equal(res.status, status, JSON.stringify(init.json));
    assert.equal(typeof (await res.json()).error, "string");
  }
  // An agent that is offline cannot pull.
  t.ctx.registry.setOllamaUp(t.ctx.registry.get(agent_id)!, false);
  const offline = await t.admin("/api/models/pull", {
    json: { model: "llama3.2", agents: [agent_id] },
  });
  assert.equal(offline.status, 409);
  assert.match((await offline.json()).error, /offline/);
  const noAgent = await t.admin("/api/models/nobody/llama3.2", { method: "DELETE" });
  assert.equal(noAgent.status, 404);
  const badBody = await t.admin("/api/models", { method: "DELETE", json: { model: "x" } });
  assert.equal(badBody.status, 400);
  await t.close();
});
