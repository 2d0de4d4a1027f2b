import assert from "node:assert/strict";
import { TEST_AGENT_TOKEN, testConfig } from "../config.ts";
import { startCoordinator } from "../server.ts";
import { registration, startFleet, testApp } from "../testing/app.ts";
import { freePort } from "../testing/process.ts";

const asAgent = { authorization: `Bearer ${TEST_AGENT_TOKEN}`, "content-type": "application/json" };
/** A guard, not a measurement: a request that recursed would otherwise never end. */
const GUARD_MS = 15_000;

function register(url: string, body: unknown): Promise<Response> {
  return fetch(`${url}/api/agents`, {
    method: "POST",
    headers: asAgent,
    body: JSON.stringify(body),
  });
}

const chat = (content: string) =>
  JSON.stringify({ model: "llama3.2", messages: [{ role: "user", content }], stream: false });

Deno.test("loop - a request that already passed through this coordinator is refused with 508", async () => {
  await using t = await testApp({ apiKeys: ["client-key"] });
  const id = t.ctx.instanceId;
  const back = await t.request("/api/tags", { headers: { "x-coordinator-hop": `other, ${id}` } });
  assert.equal(back.status, 508);
  assert.equal(back.headers.get("x-coordinator-instance"), id);
  assert.match((await back.json()).error, /Loop detected/);
  const v1 = await t.request("/v1/models", { headers: { "x-coordinator-hop": id } });
  assert.equal(v1.status, 508);
  assert.equal((await v1.json()).error.type, "api_error");
  const long = Array.from({ length: 8 }, (_, i) => `c${i}`).join(",");
  const tooMany = await t.request("/api/version", { headers: { "x-coordinator-hop": long } });
  assert.equal(tooMany.status, 508);
  assert.equal(tooMany.headers.get("x-coordinator-instance"), null);
  await tooMany.body?.cancel();
  // A chain that does not include this coordinator passes (to access control here).
  const chained = await t.request("/api/version", { headers: { "x-coordinator-hop": "c1, c2" } });
  assert.equal(chained.status, 401);
  await chained.body?.cancel();
});

Deno.test("loop - local auto-registration does not register the coordinator itself", async () => {
  const port = freePort();
  const coordinator = await startCoordinator(testConfig({
    port,
    healthCheckInterval: 3600,
    autoRegisterLocal: true,
    localOllamaUrl: `http://127.0.0.1:${port}`,
  }));
  try {
    assert.equal(coordinator.ctx.registry.all().length, 0);
    const events = await coordinator.ctx.events.query();
    assert.ok(!events.some((e) => e.kind === "registered"));
  } finally {
    await coordinator.stop();
  }
});

Deno.test("loop - an agent advertising the coordinator's own address is refused with 400", async () => {
  await using fleet = await startFleet([]);
  const port = fleet.coordinator.port;
  for (const ip of ["127.0.0.1", "localhost", "[::ffff:127.0.0.1]"]) {
    const res = await register(fleet.url, registration({ ip_address: ip, ollama_port: port }));
    assert.equal(res.status, 400, ip);
    assert.match((await res.json()).error, /is this coordinator itself/, ip);
  }
  assert.equal(fleet.coordinator.ctx.registry.all().length, 0);
  // Another port on the same machine is an agent like any other.
  const other = await register(fleet.url, registration({ ollama_port: freePort() }));
  assert.equal(other.status, 201);
  await other.body?.cancel();
});

Deno.test("loop - a coordinator that is its own agent all the same: fan-outs and inference end", async () => {
  await using fleet = await startFleet([{ name: "fine", models: ["llama3.2"] }]);
  const { ctx } = fleet.coordinator;
  // As a port mapping (Docker, NAT) would hide it from the registration check.
  const { agent: self } = await ctx.registry.register({
    ...registration({ machine_name: "myself", ollama_port: fleet.coordinator.port }),
    models: [{ name: "llama3.2:latest" }],
  });
  const signal = () => AbortSignal.timeout(GUARD_MS);
  const ps = await fetch(`${fleet.url}/api/ps`, { signal: signal() });
  assert.equal(ps.status, 200);
  await ps.body?.cancel();
  const tags = await fetch(`${fleet.url}/api/tags`, { signal: signal() });
  assert.equal(tags.status, 200);
  await tags.body?.cancel();
  // Pinned to itself: the attempt comes back as a loop and fails, clearly.
  const pinned = await fetch(`${fleet.url}/api/chat`, {
    method: "POST",
    body: chat("to myself"),
    headers: { "x-coordinator-agent": "myself" },
    signal: signal(),
  });
  assert.equal(pinned.status, 503);
  assert.match((await pinned.json()).error, /myself.*Loop detected/);
  // Unpinned: the loop is one failed attempt, and another agent serves the request.
  for (let i = 0; i < 3; i++) {
    const res = await fetch(`${fleet.url}/api/chat`, {
      method: "POST",
      body: chat(`q${i}`),
      signal: signal(),
    });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("x-coordinator-agent"), "fine");
    await res.body?.cancel();
  }
  // Server-local routes: a pull sent to itself is refused the same way.
  const pull = await fetch(`${fleet.url}/api/pull`, {
    method: "POST",
    body: JSON.stringify({ model: "tinyllama", stream: false }),
    headers: { "x-coordinator-agent": self.id },
    signal: signal(),
  });
  assert.equal(pull.status, 508);
  await pull.body?.cancel();
});

Deno.test("loop - two coordinators that list each other as agents do not recurse", async () => {
  await using a = await startFleet([]);
  await using b = await startFleet([]);
  const models = [{ name: "llama3.2:latest" }];
  const toB = await register(
    a.url,
    registration({ machine_name: "coordinator-b", ollama_port: b.coordinator.port, models }),
  );
  assert.equal(toB.status, 201); // another coordinator is a valid agent
  await toB.body?.cancel();
  const toA = await register(
    b.url,
    registration({ machine_name: "coordinator-a", ollama_port: a.coordinator.port, models }),
  );
  assert.equal(toA.status, 201);
  await toA.body?.cancel();
  const signal = () => AbortSignal.timeout(GUARD_MS);
  const ps = await fetch(`${a.url}/api/ps`, { signal: signal() });
  assert.deepEqual(await ps.json(), { models: [] });
  const res = await fetch(`${a.url}/api/chat`, {
    method: "POST",
    body: chat("x"),
    signal: signal(),
  });
  assert.equal(res.status, 503);
  assert.match((await res.json()).error, /All agents failed/);
});
