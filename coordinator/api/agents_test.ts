import assert from "node:assert/strict";
import { TEST_AGENT_TOKEN } from "../config.ts";
import { countRows, FakeClock, registration, testApp } from "../testing/app.ts";
import { HealthRequest } from "@oc/shared";
import { HealthBody } from "./agents.ts";

const beat = (agent_id: string, extra: Record<string, unknown> = {}) => ({
  agent_id,
  cpu_usage: 1,
  memory_usage: 1,
  active_requests: 0,
  ...extra,
});

Deno.test("agents API - register, re-register with the same id, list and get", async () => {
  const t = await testApp();
  const first = await t.request("/api/agents", {
    json: registration(),
    headers: { authorization: `Bearer ${TEST_AGENT_TOKEN}` },
  });
  assert.equal(first.status, 201);
  const a = await first.json();
  assert.equal(a.status, "registered");
  assert.match(a.agent_id, /^[0-9a-f-]{36}$/);
  const again = await t.request("/api/agents", {
    json: registration({ ollama_version: "0.13.1" }),
    headers: { authorization: `Bearer ${TEST_AGENT_TOKEN}` },
  });
  assert.equal(again.status, 200);
  const body = await again.json();
  assert.equal(body.agent_id, a.agent_id);
  assert.equal(body.status, "updated");
  const list = await (await t.admin("/api/agents")).json();
  assert.equal(list.length, 1);
  for (
    const key of [
      "id",
      "machine_name",
      "display_name",
      "labels",
      "ip_address",
      "ollama_version",
      "ollama_port",
      "status",
      "registered_at",
      "last_seen",
      "metrics",
    ]
  ) {
    assert.ok(key in list[0], key);
  }
  assert.equal(list[0].ollama_version, "0.13.1");
  const one = await t.admin(`/api/agents/${a.agent_id}`);
  assert.equal((await one.json()).status, "online");
  assert.equal((await t.admin(`/api/agents/${crypto.randomUUID()}`)).status, 404);
  await t.close();
});

Deno.test("agents API - a heartbeat updates metrics; a removed agent must register again", async () => {
  const t = await testApp();
  const { agent_id, agent_secret } = await t.register(registration());
  const hb = await t.heartbeat(
    agent_secret,
    beat(agent_id, { cpu_usage: 45.5, memory_usage: 60.2, active_requests: 3 }),
  );
  assert.equal(hb.status, 200);
  const view = await (await t.admin(`/api/agents/${agent_id}`)).json();
  assert.deepEqual(
    [view.metrics.cpu_usage, view.metrics.memory_usage, view.metrics.active_requests],
    [45.5, 60.2, 3],
  );
  // Removed while it keeps running: its secret no longer works, so it registers again.
  await t.ctx.registry.remove(agent_id);
  const gone = await t.heartbeat(agent_secret, beat(agent_id));
  assert.equal(gone.status, 404);
  assert.match((await gone.json()).error, /not registered/);
  await t.close();
});

Deno.test("agents API - a silent agent is offline, then online on its next heartbeat", async () => {
  const clock = new FakeClock();
  const t = await testApp({}, { now: clock.now });
  const { agent_id, agent_secret } = await t.register(registration());
  clock.advance(21_000);
  t.ctx.registry.sweep();
  assert.equal((await (await t.admin(`/api/agents/${agent_id}`)).json()).status, "offline");
  await t.heartbeat(agent_secret, beat(agent_id));
  assert.equal((await (await t.admin(`/api/agents/${agent_id}`)).json()).status, "online");
  const events = await (await t.admin("/api/events?limit=10")).json();
  assert.deepEqual(
    events.map((e: { kind: string }) => e.kind),
    ["status", "status", "registered"],
  );
  await t.close();
});

Deno.test("agents API - patch and delete", async () => {
  const t = await testApp();
  const { agent_id } = await t.register(registration());
  const patched = await t.admin(`/api/agents/${agent_id}`, {
    method: "PATCH",
    json: { display_name: "Desk GPU", labels: ["gpu", "fast"], drain: true },
  });
  assert.equal(patched.status, 200);
  const view = await patched.json();
  assert.equal(view.display_name, "Desk GPU");
  assert.equal(view.status, "draining");
  const empty = await t.admin(`/api/agents/${agent_id}`, { method: "PATCH", json: {} });
  assert.equal(empty.status, 400);
  const unknownField = await t.admin(`/api/agents/${agent_id}`, {
    method: "PATCH",
    json: { status: "online" },
  });
  assert.equal(unknownField.status, 400);
  assert.equal((await t.admin(`/api/agents/${agent_id}`, { method: "DELETE" })).status, 204);
  assert.equal((await t.admin(`/api/agents/${agent_id}`, { method: "DELETE" })).status, 404);
  assert.equal(await countRows(t.ctx, "agents"), 0);
  await t.close();
});

Deno.test("agents API - bad input is a 4xx with an error and stores nothing", async () => {
  const t = await testApp();
  const bad: [string, BodyInit, number][] = [
    ["malformed JSON", "{not json", 400],
    ["empty body", "", 400],
    ["an array", "[]", 400],
    ["missing machine_name", JSON.stringify({ ...registration(), machine_name: undefined }), 400],
    [
      "wrong type of port",
      JSON.stringify(registration({ ollama_port: "11434" as unknown as number })),
      400,
    ],
    ["port out of range", JSON.stringify(registration({ ollama_port: 70000 })), 400],
    ["empty machine name", JSON.stringify(registration({ machine_name: "  " })), 400],
    ["a metadata address", JSON.stringify(registration({ ip_address: "169.254.169.254" })), 400],
    ["an address with a scheme", JSON.stringify(registration({ ip_address: "http://evil/" })), 400],
    ["a huge string", JSON.stringify(registration({ machine_name: "x".repeat(100_000) })), 400],
    [
      "a body over the size limit",
      JSON.stringify({ ...registration(), pad: "x".repeat(2_000_000) }),
      413,
    ],
  ];
  for (const [what, body, status] of bad) {
    const res = await t.request("/api/agents", {
      method: "POST",
      body,
      headers: { "content-type": "application/json", authorization: `Bearer ${TEST_AGENT_TOKEN}` },
    });
    assert.equal(res.status, status, what);
    const err = await res.json();
    assert.equal(typeof err.error, "string", what);
    assert.ok(err.error.length > 0, what);
  }
  const { agent_id, agent_secret } = await t.register(registration({ machine_name: "real" }));
  const agentsBefore = await countRows(t.ctx, "agents");
  const eventsBefore = await countRows(t.ctx, "events");
  assert.equal((await t.heartbeat(agent_secret, beat("not-a-uuid"))).status, 400);
  assert.equal((await t.heartbeat(agent_secret, beat(agent_id, { cpu_usage: 101 }))).status, 400);
  assert.equal((await t.heartbeat(agent_secret, "{")).status, 400);
  assert.equal(await countRows(t.ctx, "agents"), agentsBefore);
  assert.equal(await countRows(t.ctx, "events"), eventsBefore);
  assert.equal((await t.admin("/api/events?limit=abc")).status, 400);
  await t.close();
});

Deno.test("agents API - commands ride on the heartbeat reply and progress is published", async () => {
  const t = await testApp();
  const { agent_id, agent_secret } = await t.register(registration());
  const cmd = t.ctx.commands.add(agent_id, "pull", "qwen3:0.6b");
  const progress: unknown[] = [];
  t.ctx.bus.subscribe((m) => m.type === "progress" && progress.push(m.progress));
  const hb = await (await t.heartbeat(agent_secret, beat(agent_id))).json();
  assert.deepEqual(hb.commands, [cmd]);
  const res = await t.request(`/api/agents/${agent_id}/progress`, {
    json: { command_id: cmd.id, status: "pulling", completed: 5, total: 10 },
    headers: { authorization: `Bearer ${agent_secret}` },
  });
  assert.equal(res.status, 200);
  assert.equal(progress.length, 1);
  const next = await (await t.heartbeat(agent_secret, beat(agent_id))).json();
  assert.equal(next.commands, undefined);
  await t.close();
});

Deno.test("agents API - pins are set, listed, persisted and removed by admins", async () => {
  const t = await testApp();
  const put = await t.admin("/api/admin/pins", {
    method: "PUT",
    json: { model: "llama3.3:70b", label: "gpu-large" },
  });
  assert.equal(put.status, 200);
  assert.deepEqual(await put.json(), [{ model: "llama3.3:70b", label: "gpu-large" }]);
  assert.equal(
    (await t.admin("/api/admin/pins", { method: "PUT", json: { model: "x", label: "bad label" } }))
      .status,
    400,
  );
  assert.equal((await t.request("/api/admin/pins")).status, 401);
  assert.match(t.ctx.security.setting("model_pins") ?? "", /gpu-large/);
  const del = await t.admin("/api/admin/pins", {
    method: "DELETE",
    json: { model: "llama3.3:70b" },
  });
  assert.deepEqual(await del.json(), []);
  assert.equal(
    (await t.admin("/api/admin/pins", { method: "DELETE", json: { model: "llama3.3:70b" } }))
      .status,
    404,
  );
  await t.close();
});

Deno.test("agents API - a newly registered agent takes requests waiting in the queue", async () => {
  const t = await testApp();
  await t.register(registration({ machine_name: "busy", parallel: 1 }));
  const first = await t.ctx.scheduler.acquire("llama3.2");
  const waiting = t.ctx.scheduler.acquire("llama3.2");
  assert.deepEqual(Object.values(t.ctx.scheduler.queueDepths()), [1]);
  const fresh = await t.register(registration({ machine_name: "fresh", parallel: 1 }));
  assert.equal((await waiting).agent.id, fresh.agent_id);
  t.ctx.scheduler.release(first, { result: "ok" });
  await t.close();
});

Deno.test("agents API - a heartbeat reads the same with or without a declared length", async () => {
  const t = await testApp();
  const { agent_id, agent_secret } = await t.register(registration());
  const send = (body: string, declared?: number) =>
    t.app.request("/api/health", {
      method: "POST",
      body,
      headers: {
        authorization: `Bearer ${agent_secret}`,
        ...(declared === undefined ? {} : { "content-length": String(declared) }),
      },
    });
  const cpu = async () =>
    (await (await t.admin(`/api/agents/${agent_id}`)).json()).metrics.cpu_usage;
  for (const declared of [true, false]) {
    const body = JSON.stringify(beat(agent_id, { cpu_usage: declared ? 12 : 34 }));
    const res = await send(body, declared ? new TextEncoder().encode(body).length : undefined);
    assert.equal(res.status, 200);
    assert.deepEqual(await res.json(), { ok: true });
    assert.equal(await cpu(), declared ? 12 : 34);
    const broken = await send("{", declared ? 1 : undefined);
    assert.equal(broken.status, 400);
    assert.equal((await broken.json()).error, "Request body is not valid JSON");
    const invalid = JSON.stringify(beat(agent_id, { cpu_usage: 101 }));
    const refused = await send(invalid, declared ? invalid.length : undefined);
    assert.equal(refused.status, 400);
    assert.match((await refused.json()).error, /cpu_usage/);
  }
  const huge = JSON.stringify(beat(agent_id, { pad: "x".repeat(2_000_000) }));
  assert.equal((await send(huge, huge.length)).status, 413);
  assert.equal((await send(huge)).status, 413);
  await t.close();
});

Deno.test("agents API - the compiled heartbeat schema accepts and refuses exactly what zod does", () => {
  const id = crypto.randomUUID();
  const gpu = { name: "RTX 4090", utilization: 30, memory_used: 4e9, memory_total: 24e9 };
  const base = {
    agent_id: id,
    cpu_usage: 12.5,
    memory_usage: 40,
    active_requests: 0,
    memory_used: 8e9,
    memory_total: 16e9,
    ollama_up: true,
    ollama_version: "0.12.6",
    parallel: 4,
    gpus: [gpu],
  };
  const values: unknown[] = [
    undefined,
    null,
    true,
    "1",
    "",
    " x ",
    "x".repeat(65),
    -1,
    0,
    0.5,
    1,
    100,
    100.5,
    101,
    1024,
    1025,
    1_000_000,
    1_000_001,
    2 ** 53 - 1,
    2 ** 53,
    1e308,
    [],
    {},
    [gpu],
    new Array(65).fill(gpu),
    [{ ...gpu, vendor: "nvidia", temperature: 60 }],
    [{ ...gpu, vendor: "intel" }],
    [{ ...gpu, temperature: 301 }],
    [{ name: 5 }],
    [{ name: "a".repeat(257) }],
    [{ name: "  llama3.2  ", size: 1e9, details: { families: null } }],
    [{ name: "   " }],
    [{ name: "m", details: { families: ["x"], format: "gguf", extra: 1 } }],
    [{ name: "m", size_vram: 1e9, context_length: 4096, expires_at: "soon" }],
    "00000000-0000-0000-0000-000000000000",
    id.toUpperCase(),
    id.slice(1),
  ];
  const fields = [...Object.keys(base), "models", "loaded_models", "unknown"];
  let compared = 0;
  for (const field of fields) {
    for (const value of values) {
      const input: Record<string, unknown> = { ...base, [field]: value };
      if (value === undefined) delete input[field];
      const runtime = HealthRequest.safeParse(input);
      const compiled = HealthBody.safeParse(input);
      assert.equal(compiled.success, runtime.success, `${field}=${JSON.stringify(value)}`);
      if (runtime.success) assert.deepEqual(compiled.data, runtime.data);
      else assert.deepEqual(compiled.error?.issues, runtime.error.issues);
      compared++;
    }
  }
  assert.equal(compared, fields.length * values.length);
});
