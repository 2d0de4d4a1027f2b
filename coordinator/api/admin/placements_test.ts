import assert from "node:assert/strict";
import { registration, testApp } from "../../testing/app.ts";
import { MAX_RULES, PlacementRules } from "../../placement/rules.ts";

Deno.test("placements API - rules are set, replaced, listed, persisted and removed by admins", async () => {
  await using t = await testApp();
  const put = (json: unknown) => t.admin("/api/admin/placements", { method: "PUT", json });
  let res = await put({ model: "llama3.2:3b", on: { label: "gpu" }, warm: 1 });
  assert.equal(res.status, 200);
  assert.deepEqual(await res.json(), [{ model: "llama3.2:3b", on: { label: "gpu" }, warm: 1 }]);
  // The same model under another spelling replaces its rule; names are kept short.
  res = await put({ model: "registry.ollama.ai/library/llama3.2:3b", on: { count: 2 } });
  assert.deepEqual(await res.json(), [{ model: "llama3.2:3b", on: { count: 2 } }]);
  await put({ model: "phi4", on: { agents: ["gpu-01"] }, never_on: { label: "laptop" } });
  const list = await (await t.admin("/api/admin/placements")).json();
  assert.deepEqual(list.map((r: { model: string }) => r.model), ["llama3.2:3b", "phi4:latest"]);
  // Kept in the settings, where a restart (or another coordinator) reads them.
  assert.deepEqual(new PlacementRules(t.ctx.security).list(), list);
  const events = await t.ctx.registry.events();
  assert.ok(
    events.some((e) =>
      e.kind === "placement" && e.message === 'Placement of "llama3.2:3b" set: on at least 2 agents'
    ),
  );

  res = await t.admin("/api/admin/placements", { method: "DELETE", json: { model: "phi4" } });
  assert.equal(res.status, 200);
  assert.deepEqual((await res.json()).map((r: { model: string }) => r.model), ["llama3.2:3b"]);
  res = await t.admin("/api/admin/placements", { method: "DELETE", json: { model: "phi4" } });
  assert.equal(res.status, 404);
  assert.deepEqual(await res.json(), { error: 'Model "phi4" has no placement rule' });
});

Deno.test("placements API - bad rules are refused with the reason", async () => {
  await using t = await testApp();
  const put = async (json: unknown) => {
    const res = await t.admin("/api/admin/placements", { method: "PUT", json });
    assert.equal(res.status, 400);
    return (await res.json()).error as string;
  };
  assert.match(await put({ model: "x", on: {} }), /on needs a label/);
  assert.match(await put({ model: "x", on: { label: "gpu" }, warm: -1 }), /warm/);
  assert.match(await put({ model: "x y", on: { label: "gpu" } }), /model name/);
  assert.match(await put({ model: "x@sha256:12ab", on: { label: "gpu" } }), /no @digest/);
  assert.match(await put({ model: "x", on: { label: "gpu" }, keep_alive: "10" }), /duration/);
  assert.match(await put("not json{"), /not valid JSON/);
  assert.deepEqual(await (await t.admin("/api/admin/placements")).json(), []);
});

Deno.test("placements API - admins only, on every route", async () => {
  await using t = await testApp();
  const client = (await t.ctx.security.createKey("app", "client")).key;
  for (
    const [method, path, json] of [
      ["GET", "/api/admin/placements", undefined],
      ["GET", "/api/admin/placements/status", undefined],
      ["PUT", "/api/admin/placements", { model: "x", on: { label: "a" } }],
      ["DELETE", "/api/admin/placements", { model: "x" }],
    ] as const
  ) {
    const anonymous = await t.request(path, { method, json });
    assert.equal(anonymous.status, 401, `${method} ${path} without credentials`);
    const withClientKey = await t.request(path, {
      method,
      json,
      headers: { authorization: `Bearer ${client}` },
    });
    assert.equal(withClientKey.status, 401, `${method} ${path} with a client key`);
  }
  assert.deepEqual(t.ctx.placement.rules.list(), []);
});

Deno.test("placements API - the status shows each agent's state and the drift", async () => {
  await using t = await testApp();
  const { agent_id } = await t.register(registration({ machine_name: "gpu-01", models: [] }));
  await t.admin(`/api/agents/${agent_id}`, { method: "PATCH", json: { labels: ["gpu"] } });
  await t.admin("/api/admin/placements", {
    method: "PUT",
    json: { model: "qwen3:8b", on: { label: "gpu" } },
  });
  const s = await (await t.admin("/api/admin/placements/status")).json();
  assert.equal(s.active, false, "a test context does not lead until told to");
  assert.deepEqual(s.pulls, { running: 0, max: 2, max_per_agent: 1 });
  assert.equal(s.rules.length, 1);
  assert.equal(s.rules[0].met, false);
  assert.deepEqual(s.rules[0].drift, ["missing on gpu-01"]);
  assert.deepEqual(
    s.rules[0].agents.map((c: { agent_name: string; state: string }) => [
      c.agent_name,
      c.state,
    ]),
    [["gpu-01", "missing"]],
  );
});

Deno.test("placements API - past the most rules a new one is a 400; existing ones still change", async () => {
  await using t = await testApp();
  for (let i = 0; i < MAX_RULES; i++) {
    await t.ctx.placement.rules.set({ model: `m${i}`, on: { label: "gpu" } });
  }
  const put = (model: string) =>
    t.admin("/api/admin/placements", { method: "PUT", json: { model, on: { count: 2 } } });
  const refused = await put("one-more");
  assert.equal(refused.status, 400);
  assert.match((await refused.json()).error, /there are 1000 already/);
  assert.equal((await put("m7")).status, 200);
  assert.equal(t.ctx.placement.rules.list().length, MAX_RULES);
});
