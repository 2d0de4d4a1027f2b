import assert from "node:assert/strict";
import { hostname } from "node:os";
import { startSimulator } from "@oc/simulator";
import { TEST_AGENT_TOKEN, testConfig } from "../config.ts";
import { startCoordinator } from "../server.ts";
import { registration } from "../testing/app.ts";
import { freePort } from "../testing/process.ts";

/** A guard, not a measurement: the built-in heartbeats must end once an agent takes over. */
const GUARD_MS = 10_000;

function guarded<T>(what: string, promise: Promise<T>): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const guard = new Promise<never>((_, reject) =>
    timer = setTimeout(() => reject(new Error(`${what} within ${GUARD_MS} ms`)), GUARD_MS)
  );
  return Promise.race([promise, guard]).finally(() => clearTimeout(timer));
}

/** An address of one of this machine's interfaces other than loopback, if it has one. */
function lanAddress(): string | undefined {
  return Deno.networkInterfaces().find((i) => i.family === "IPv4" && !i.address.startsWith("127."))
    ?.address;
}

Deno.test("local ollama - an agent beside the auto-registered Ollama takes its entry over, and keeps it at the next start", async () => {
  const dir = await Deno.makeTempDir();
  const sim = await startSimulator({ quiet: true, models: ["llama3.2"] });
  const config = testConfig({
    databaseUrl: `sqlite://${dir}/c.db`,
    autoRegisterLocal: true,
    localOllamaUrl: sim.url,
    healthCheckInterval: 3600,
    heartbeatInterval: 0.02,
  });
  try {
    // The README's steps: Ollama runs, the coordinator starts and registers it.
    const first = await startCoordinator(config);
    let id: string;
    try {
      assert.equal(first.localOllama?.found, "registered");
      const [local] = first.ctx.registry.all();
      assert.equal(local.machineName, `${hostname()} (local)`);
      id = local.id;
      await first.ctx.registry.patch(id, { labels: ["gpu"] });
      // Then an agent starts on the same machine and registers the same Ollama, under the
      // machine's LAN address where it has one (as an agent detects it), else loopback.
      const res = await fetch(`${first.url}/api/agents`, {
        method: "POST",
        headers: { authorization: `Bearer ${TEST_AGENT_TOKEN}` },
        body: JSON.stringify(registration({
          machine_name: "gpu-box",
          ip_address: lanAddress() ?? "127.0.0.1",
          ollama_port: sim.port,
          agent_version: "0.1.0",
        })),
      });
      const reply = await res.json();
      assert.equal(res.status, 200, JSON.stringify(reply));
      assert.equal(reply.status, "updated");
      // One Ollama, one agent: the entry's id, labels and history stay.
      assert.equal(reply.agent_id, id);
      const agents = first.ctx.registry.all();
      assert.equal(agents.length, 1);
      assert.equal(agents[0].machineName, "gpu-box");
      assert.equal(agents[0].agentVersion, "0.1.0");
      assert.deepEqual(agents[0].labels, ["gpu"]);
      const events = await first.ctx.events.query({ agentId: id });
      assert.match(events[0].message, /"gpu-box" registered the Ollama known as ".* \(local\)"/);
      assert.equal(events.at(-1)!.kind, "registered");
      // The built-in heartbeats for it end: they are the agent's now.
      await guarded("The built-in heartbeats did not end", first.localOllama!.done);
    } finally {
      await first.stop();
    }
    // The next start finds the agent serving that Ollama and makes no second entry.
    const second = await startCoordinator(config);
    try {
      assert.equal(second.localOllama?.found, "agent");
      assert.equal(second.localOllama?.agent, "gpu-box");
      assert.deepEqual(second.ctx.registry.all().map((a) => a.id), [id]);
    } finally {
      await second.stop();
    }
  } finally {
    await sim.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("local ollama - an agent elsewhere on the same port does not take the local entry over", async () => {
  const sim = await startSimulator({ quiet: true, models: ["llama3.2"] });
  const coordinator = await startCoordinator(testConfig({
    autoRegisterLocal: true,
    localOllamaUrl: sim.url,
    healthCheckInterval: 3600,
  }));
  try {
    const res = await fetch(`${coordinator.url}/api/agents`, {
      method: "POST",
      headers: { authorization: `Bearer ${TEST_AGENT_TOKEN}` },
      body: JSON.stringify(registration({ ip_address: "192.0.2.10", ollama_port: sim.port })),
    });
    assert.equal(res.status, 201, await res.text());
    const names = coordinator.ctx.registry.all().map((a) => a.machineName);
    assert.deepEqual(names, [`${hostname()} (local)`, "gpu-01"]);
  } finally {
    await coordinator.stop();
    await sim.close();
  }
});

Deno.test("local ollama - nothing answering is reported as such", async () => {
  const url = `http://127.0.0.1:${freePort()}`;
  const coordinator = await startCoordinator(testConfig({
    autoRegisterLocal: true,
    localOllamaUrl: url,
    healthCheckInterval: 3600,
  }));
  try {
    assert.equal(coordinator.localOllama?.found, "none");
    assert.equal(coordinator.localOllama?.url, url);
    assert.equal(coordinator.ctx.registry.all().length, 0);
  } finally {
    await coordinator.stop();
  }
});
