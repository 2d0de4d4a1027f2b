import assert from "node:assert/strict";
import { countRows, FakeClock, registration, testApp } from "../testing.ts";

Deno.test("agents API - register, re-register with the same id, list and get", async () => {
  const t = testApp();
  const first = await t.request("/api/agents", { json: registration() });
  assert.equal(first.status, 201);
  const a = await first.json();
  assert.equal(a.status, "registered");
  assert.match(a.agent_id, /^[0-9a-f-]{36}$/);
  const again = await t.request("/api/agents", {
    json: registration({ ollama_version: "0.13.1" }),
  });
  assert.equal(again.status, 200);
  assert.deepEqual(await again.json(), {
    agent_id: a.agent_id,
    status: "updated",
    heartbeat_interval: 5,
  });
  const list = await (await t.request("/api/agents")).json();
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
  const one = await t.request(`/api/agents/${a.agent_id}`);
  assert.equal((await one.json()).status, "online");
  assert.equal((await t.request(`/api/agents/${crypto.randomUUID()}`)).status, 404);
  t.close();
});

Deno.test("agents API - a heartbeat updates metrics; an unknown agent gets 404", async () => {
  const t = testApp();
  const { agent_id } = await (await t.request("/api/agents", { json: registration() })).json();
  const hb = await t.request("/api/health", {
    json: { agent_id, cpu_usage: 45.5, memory_usage: 60.2, active_requests: 3 },
  });
  assert.equal(hb.status, 200);
  const view = await (await t.request(`/api/agents/${agent_id}`)).json();
  assert.deepEqual(
    [view.metrics.cpu_usage, view.metrics.memory_usage, view.metrics.active_requests],
    [45.5, 60.2, 3],
  );
  const unknown = await t.request("/api/health", {
    json: { agent_id: crypto.randomUUID(), cpu_usage: 1, memory_usage: 1, active_requests: 0 },
  });
  assert.equal(unknown.status, 404);
  assert.match((await unknown.json()).error, /not registered/);
  t.close();
});

Deno.test("agents API - a silent agent is offline, then online on its next heartbeat", async () => {
  const clock = new FakeClock();
  const t = testApp({}, { now: clock.now });
  const { agent_id } = await (await t.request("/api/agents", { json: registration() })).json();
  clock.advance(21_000);
  t.ctx.registry.sweep();
  assert.equal((await (await t.request(`/api/agents/${agent_id}`)).json()).status, "offline");
  await t.request("/api/health", {
    json: { agent_id, cpu_usage: 1, memory_usage: 1, active_requests: 0 },
  });
  assert.equal((await (await t.request(`/api/agents/${agent_id}`)).json()).status, "online");
  const events = await (await t.request("/api/events?limit=10")).json();
  assert.deepEqual(events.map((e: { kind: string }) => e.kind), ["status", "status", "registered"]);
  t.close();
});

Deno.test("agents API - patch and delete", async () => {
  const t = testApp();
  const { agent_id } = await (await t.request("/api/agents", { json: registration() })).json();
  const patched = await t.request(`/api/agents/${agent_id}`, {
    method: "PATCH",
    json: { display_name: "Desk GPU", labels: ["gpu", "fast"], drain: true },
  });
  assert.equal(patched.status, 200);
  const view = await patched.json();
  assert.equal(view.display_name, "Desk GPU");
  assert.equal(view.status, "draining");
  const empty = await t.request(`/api/agents/${agent_id}`, { method: "PATCH", json: {} });
  assert.equal(empty.status, 400);
  const unknownField = await t.request(`/api/agents/${agent_id}`, {
    method: "PATCH",
    json: { status: "online" },
  });
  assert.equal(unknownField.status, 400);
  assert.equal((await t.request(`/api/agents/${agent_id}`, { method: "DELETE" })).status, 204);
  assert.equal((await t.request(`/api/agents/${agent_id}`, { method: "DELETE" })).status, 404);
  assert.equal(countRows(t.ctx, "agents"), 0);
  t.close();
});

Deno.test("agents API - bad input is a 4xx with an error and stores nothing", async () => {
  const t = testApp();
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
      headers: { "content-type": "application/json" },
    });
    assert.equal(res.status, status, what);
    const err = await res.json();
    assert.equal(typeof err.error, "string", what);
    assert.ok(err.error.length > 0, what);
  }
  const hb = await t.request("/api/health", {
    json: { agent_id: "not-a-uuid", cpu_usage: 1, memory_usage: 1, active_requests: 0 },
  });
  assert.equal(hb.status, 400);
  const hb2 = await t.request("/api/health", {
    json: { agent_id: crypto.randomUUID(), cpu_usage: 101, memory_usage: 1, active_requests: 0 },
  });
  assert.equal(hb2.status, 400);
  assert.equal(countRows(t.ctx, "agents"), 0);
  assert.equal(countRows(t.ctx, "events"), 0);
  assert.equal((await t.request("/api/events?limit=abc")).status, 400);
  t.close();
});

Deno.test("agents API - the agent token is required when one is set", async () => {
  const t = testApp({ agentToken: "s3cret" });
  assert.equal((await t.request("/api/agents", { json: registration() })).status, 401);
  assert.equal(
    (await t.request("/api/agents", {
      json: registration(),
      headers: { authorization: "Bearer wrong" },
    })).status,
    401,
  );
  assert.equal(countRows(t.ctx, "agents"), 0);
  const ok = await t.request("/api/agents", {
    json: registration(),
    headers: { authorization: "Bearer s3cret" },
  });
  assert.equal(ok.status, 201);
  t.close();
});

Deno.test("agents API - commands ride on the heartbeat reply and progress is published", async () => {
  const t = testApp();
  const { agent_id } = await (await t.request("/api/agents", { json: registration() })).json();
  const cmd = t.ctx.commands.add(agent_id, "pull", "qwen3:0.6b");
  const progress: unknown[] = [];
  t.ctx.bus.subscribe((m) => m.type === "progress" && progress.push(m.progress));
  const hb = await (await t.request("/api/health", {
    json: { agent_id, cpu_usage: 1, memory_usage: 1, active_requests: 0 },
  })).json();
  assert.deepEqual(hb.commands, [cmd]);
  const res = await t.request(`/api/agents/${agent_id}/progress`, {
    json: { command_id: cmd.id, status: "pulling", completed: 5, total: 10 },
  });
  assert.equal(res.status, 200);
  assert.equal(progress.length, 1);
  const next = await (await t.request("/api/health", {
    json: { agent_id, cpu_usage: 1, memory_usage: 1, active_requests: 0 },
  })).json();
  assert.equal(next.commands, undefined);
  t.close();
});
