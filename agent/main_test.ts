import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { startSimulator } from "@oc/simulator";
import { AGENT_VERSION, configFrom } from "./config.ts";
import { createMemoryLogger } from "./log.ts";
import { type AgentEvent, runAgent } from "./main.ts";
import type { MetricsSampler } from "./metrics.ts";
import { isOllamaUp, ollamaUrl } from "./ollama_api.ts";
import { OllamaNotFoundError } from "./supervisor.ts";
import { startFakeCoordinator } from "./testing.ts";
import { readLines } from "./util.ts";
import type { RegisterRequest } from "@oc/shared";

const FAKE_OLLAMA = fileURLToPath(new URL("../scripts/fake-ollama", import.meta.url));
const MAIN = fileURLToPath(new URL("./main.ts", import.meta.url));

const fastTiming = {
  ollamaReadyTimeoutMs: 30_000,
  ollamaProbeIntervalMs: 20,
  restartBackoffMinMs: 10,
  stopGraceMs: 10_000,
  progressPostMs: 0,
  progressLogMs: 0,
  unauthorizedRetryMs: 20,
  requestTimeoutMs: 5_000,
};

/** Fixed metrics, so tests do not depend on the machine. */
const metrics: MetricsSampler = {
  sample: () =>
    Promise.resolve({
      cpu_usage: 12.5,
      memory_usage: 50,
      memory_used: 4e9,
      memory_total: 8e9,
      gpus: [{ name: "Test GPU", vendor: "nvidia", utilization: 5 }],
      disk_free: 3e11,
      disk_total: 1e12,
    }),
};

function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  listener.close();
  return port;
}

function events() {
  const list: AgentEvent[] = [];
  const waiters = new Set<
    { match: (e: AgentEvent) => boolean; resolve: (e: AgentEvent) => void }
  >();
  return {
    list,
    onEvent(event: AgentEvent) {
      list.push(event);
      for (const w of waiters) {
        if (w.match(event)) {
          waiters.delete(w);
          w.resolve(event);
        }
      }
    },
    waitFor(match: (e: AgentEvent) => boolean): Promise<AgentEvent> {
      const found = list.find(match);
      if (found) return Promise.resolve(found);
      return new Promise((resolve) => waiters.add({ match, resolve }));
    },
  };
}

Deno.test("agent - registers, heartbeats, re-registers on 404 and survives a coordinator restart", async () => {
  const sim = await startSimulator({
    models: ["llama3.2", "qwen3:0.6b"],
    loaded: ["llama3.2"],
    quiet: true,
  });
  const coord = await startFakeCoordinator({ token: "tok", secret: "sec" });
  const logger = createMemoryLogger();
  const controller = new AbortController();
  const config = configFrom({
    coordinatorUrls: [coord.url],
    ollamaPort: sim.port,
    ollamaBin: "/nonexistent/ollama",
    machineName: "test-box",
    heartbeatIntervalSecs: 0.02,
    registerRetrySecs: 0.02,
    agentToken: "tok",
    numParallel: 2,
    timing: fastTiming,
  });
  const run = runAgent(config, { signal: controller.signal, logger, metrics });
  try {
    await coord.waitFor(() => coord.heartbeats.length >= 2);
    const reg = coord.registrations[0];
    assert.equal(reg.auth, "Bearer tok");
    assert.equal(reg.body.machine_name, "test-box");
    assert.equal(reg.body.ip_address, "127.0.0.1");
    assert.equal(reg.body.ollama_version, "0.12.6");
    assert.equal(reg.body.ollama_port, sim.port);
    assert.equal(reg.body.agent_version, AGENT_VERSION);
    assert.equal(reg.body.os, Deno.build.os);
    assert.equal(reg.body.parallel, 2);
    assert.equal(reg.body.memory_total, 8e9);
    assert.ok(reg.body.cpu_cores! >= 1);
    assert.deepEqual(reg.body.models?.map((m) => m.name).sort(), [
      "llama3.2:latest",
      "qwen3:0.6b",
    ]);
    assert.deepEqual(reg.body.loaded_models?.map((m) => m.name), ["llama3.2:latest"]);
    assert.deepEqual(reg.body.gpus, [{ name: "Test GPU", vendor: "nvidia", utilization: 5 }]);
    const hb = coord.heartbeats[0];
    assert.equal(hb.auth, "Bearer sec");
    assert.equal(hb.body.ollama_up, true);
    assert.equal(hb.body.active_requests, 0);
    assert.equal(hb.body.cpu_usage, 12.5);
    assert.equal(hb.body.memory_used, 4e9);
    assert.equal(hb.body.parallel, 2);
    assert.equal(hb.body.models?.length, 2);
    assert.deepEqual([hb.body.disk_free, hb.body.disk_total], [3e11, 1e12]);

    // The coordinator forgot the agent: the next heartbeat gets 404 and the agent registers again.
    coord.forget();
    await coord.waitFor(() => coord.registrations.length === 2);
    let beats = coord.heartbeats.length;
    await coord.waitFor(() => coord.heartbeats.length > beats);

    // The coordinator goes away and comes back (with an empty memory).
    await coord.stop();
    await logger.waitFor((l) => l.msg === "Coordinator is unreachable; retrying quietly");
    await coord.restart();
    await coord.waitFor(() => coord.registrations.length === 3);
    beats = coord.heartbeats.length;
    await coord.waitFor(() => coord.heartbeats.length > beats);
    await logger.waitFor((l) => l.msg === "Coordinator is reachable again");
    assert.equal(
      logger.lines.filter((l) => l.msg.startsWith("Coordinator is unreachable")).length,
      1,
    );
    assert.deepEqual(coord.invalid, []);
  } finally {
    controller.abort();
    await run;
    await coord.close();
  }
  // The agent did not start this Ollama, so it must still be running.
  assert.equal(await isOllamaUp(sim.url), true);
  await sim.close();
});

Deno.test("agent - a rejected heartbeat secret makes the agent register again", async () => {
  const sim = await startSimulator({ quiet: true });
  const coord = await startFakeCoordinator({ secret: "old" });
  const logger = createMemoryLogger();
  const controller = new AbortController();
  const config = configFrom({
    coordinatorUrls: [coord.url],
    ollamaPort: sim.port,
    heartbeatIntervalSecs: 0.02,
    timing: fastTiming,
  });
  const run = runAgent(config, { signal: controller.signal, logger, metrics });
  try {
    await coord.waitFor(() => coord.heartbeats.length >= 1);
    coord.setSecret("new");
    await coord.waitFor(() => coord.heartbeats.some((h) => h.auth === "Bearer new"));
    assert.equal(coord.registrations.length, 2);
    assert.ok(logger.lines.some((l) => l.level === "error" && /AGENT_TOKEN/.test(l.msg)));
  } finally {
    controller.abort();
    await run;
    await coord.close();
    await sim.close();
  }
});

Deno.test("agent - carries out pull and delete commands and reports their progress", async () => {
  const sim = await startSimulator({ models: ["llama3.2"], quiet: true });
  const coord = await startFakeCoordinator();
  const controller = new AbortController();
  const log = events();
  const config = configFrom({
    coordinatorUrls: [coord.url],
    ollamaPort: sim.port,
    advertiseAddress: "10.9.8.7",
    heartbeatIntervalSecs: 0.02,
    timing: fastTiming,
  });
  const run = runAgent(config, { signal: controller.signal, metrics, onEvent: log.onEvent });
  try {
    await log.waitFor((e) => e.type === "registered");
    assert.equal(coord.registrations[0].body.ip_address, "10.9.8.7");
    coord.queueCommand({ id: "cmd-1", type: "pull", model: "qwen3:0.6b" });
    await coord.waitFor(() =>
      coord.progress.some((p) => p.body.command_id === "cmd-1" && p.body.done)
    );
    const reports = coord.progress.filter((p) => p.body.command_id === "cmd-1").map((p) => p.body);
    // The first update is always sent at once; later ones may be merged into the final report.
    assert.deepEqual(reports[0], { command_id: "cmd-1", status: "pulling manifest" });
    assert.deepEqual(reports.at(-1), { command_id: "cmd-1", status: "success", done: true });
    assert.equal(reports.filter((r) => r.done).length, 1);
    const beats = coord.heartbeats.length;
    await coord.waitFor(() => coord.heartbeats.length > beats);
    assert.ok(coord.heartbeats.at(-1)!.body.models?.some((m) => m.name === "qwen3:0.6b"));

    coord.queueCommand({ id: "cmd-2", type: "delete", model: "llama3.2" });
    coord.queueCommand({ id: "cmd-3", type: "delete", model: "not-there" });
    await coord.waitFor(() =>
      ["cmd-2", "cmd-3"].every((id) =>
        coord.progress.some((p) => p.body.command_id === id && p.body.done)
      )
    );
    const done = (id: string) =>
      coord.progress.find((p) => p.body.command_id === id && p.body.done)!.body;
    assert.deepEqual(done("cmd-2"), { command_id: "cmd-2", status: "success", done: true });
    assert.equal(done("cmd-3").status, "error");
    assert.match(done("cmd-3").error!, /not found/);
    assert.deepEqual(coord.invalid, []);
  } finally {
    controller.abort();
    await run;
    await coord.close();
    await sim.close();
  }
});

Deno.test("agent - starts its own Ollama, pulls the default models and stops Ollama on exit", async () => {
  const coord = await startFakeCoordinator();
  const port = freePort();
  const controller = new AbortController();
  const log = events();
  const config = configFrom({
    coordinatorUrls: [coord.url],
    ollamaPort: port,
    ollamaBindHost: "127.0.0.1",
    ollamaBin: FAKE_OLLAMA,
    defaultModels: ["llama3.2", "tinyllama"],
    heartbeatIntervalSecs: 0.02,
    timing: fastTiming,
  });
  const run = runAgent(config, { signal: controller.signal, metrics, onEvent: log.onEvent });
  try {
    const done = await log.waitFor((e) => e.type === "default-models-done");
    // The simulator starts with llama3.2 installed, so only tinyllama is pulled.
    assert.deepEqual(done, { type: "default-models-done", pulled: ["tinyllama"], failed: [] });
    await coord.waitFor(() =>
      coord.heartbeats.some((h) => h.body.models?.some((m) => m.name === "tinyllama:latest"))
    );
    assert.equal(await isOllamaUp(ollamaUrl(port)), true);
  } finally {
    controller.abort();
    await run;
    await coord.close();
  }
  assert.equal(await isOllamaUp(ollamaUrl(port)), false);
  assert.ok(log.list.some((e) => e.type === "ollama" && e.event.type === "stopped"));
});

Deno.test("agent - a missing Ollama binary stops start-up with the clear error", async () => {
  const config = configFrom({
    ollamaPort: freePort(),
    ollamaBin: "/nonexistent/ollama",
    timing: fastTiming,
  });
  await assert.rejects(
    runAgent(config, { signal: new AbortController().signal, metrics }),
    (error: unknown) => {
      assert.ok(error instanceof OllamaNotFoundError);
      assert.match(error.message, /https:\/\/ollama\.com\/download or set OLLAMA_BIN/);
      return true;
    },
  );
});

Deno.test("agent - the command line shows help and rejects a bad setting in one line", async () => {
  const run = (args: string[], env: Record<string, string> = {}) =>
    new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--allow-net",
        "--allow-read",
        "--allow-env",
        "--allow-sys",
        "--allow-run",
        MAIN,
        ...args,
      ],
      env,
      stdout: "piped",
      stderr: "piped",
    }).output();
  const dec = new TextDecoder();
  const help = await run(["--help"]);
  assert.equal(help.code, 0);
  assert.match(dec.decode(help.stdout), /--coordinator-url\s+COORDINATOR_URL/);
  const bad = await run([], { OLLAMA_PORT: "eleven" });
  assert.equal(bad.code, 2);
  assert.equal(
    dec.decode(bad.stderr),
    'Invalid OLLAMA_PORT "eleven": expected an integer from 1 to 65535\n',
  );
});

Deno.test("agent - SIGTERM stops the agent and the Ollama it started", async () => {
  const coord = await startFakeCoordinator();
  const port = freePort();
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-net", "--allow-read", "--allow-env", "--allow-sys", "--allow-run", MAIN],
    env: {
      COORDINATOR_URL: coord.url,
      OLLAMA_PORT: String(port),
      AGENT_OLLAMA_BIND: "127.0.0.1",
      OLLAMA_BIN: FAKE_OLLAMA,
      HEARTBEAT_INTERVAL: "0.05",
      LOG_FORMAT: "json",
    },
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const lines: string[] = [];
  // Read all along, so a full pipe never blocks the agent.
  const reading = (async () => {
    for await (const line of readLines(child.stderr)) lines.push(line);
  })();
  try {
    await coord.waitFor(() => coord.heartbeats.length >= 1);
    assert.equal(await isOllamaUp(ollamaUrl(port)), true);
    child.kill("SIGTERM");
    const status = await child.status;
    await reading;
    assert.equal(status.code, 0);
    assert.equal(await isOllamaUp(ollamaUrl(port)), false);
    const messages = lines.map((l) => JSON.parse(l).msg);
    assert.ok(messages.includes("Stopping Ollama"));
    assert.equal(messages.at(-1), "Agent stopped");
  } finally {
    try {
      child.kill("SIGKILL");
    } catch {
      // Already exited.
    }
    await child.status;
    await reading;
    await coord.close();
  }
});

Deno.test("agent - heartbeats carry the model lists only when they changed, and a periodic resync", async () => {
  const sim = await startSimulator({ models: ["llama3.2"], quiet: true });
  const coord = await startFakeCoordinator({ token: "tok", secret: "sec" });
  const controller = new AbortController();
  const config = configFrom({
    coordinatorUrls: [coord.url],
    ollamaPort: sim.port,
    ollamaBin: "/nonexistent/ollama",
    machineName: "quiet-box",
    heartbeatIntervalSecs: 0.01,
    registerRetrySecs: 0.02,
    agentToken: "tok",
    timing: fastTiming,
  });
  const run = runAgent(config, {
    signal: controller.signal,
    logger: createMemoryLogger(),
    metrics,
  });
  try {
    await coord.waitFor(() => coord.heartbeats.length >= 6);
    const withModels = () => coord.heartbeats.filter((h) => h.body.models !== undefined).length;
    // The first heartbeat sends the lists; the next ones, unchanged, do not.
    assert.ok(coord.heartbeats[0].body.models);
    assert.equal(coord.heartbeats.slice(1, 6).filter((h) => h.body.models).length, 0);
    // A change is sent with the next heartbeat.
    sim.update({ models: ["llama3.2", "phi4:14b"] });
    const seen = coord.heartbeats.length;
    await coord.waitFor(() =>
      coord.heartbeats.slice(seen).some((h) => h.body.models?.some((m) => m.name === "phi4:14b"))
    );
    // Unchanged lists are still re-sent now and then, so a coordinator that missed one catches up.
    const before = withModels();
    await coord.waitFor(() => coord.heartbeats.length >= seen + 30);
    assert.ok(withModels() > before + 1);
    assert.deepEqual(coord.invalid, []);
  } finally {
    controller.abort();
    await run;
    await coord.close();
    await sim.close();
  }
});

Deno.test("agent - moves to the next coordinator when the one in use stops answering, keeping its id", async () => {
  const sim = await startSimulator({ quiet: true });
  const agents = new Map<string, string>(); // the database both coordinators share
  const a = await startFakeCoordinator({ agents, token: "tok", secret: "sec-a" });
  const b = await startFakeCoordinator({ agents, token: "tok", secret: "sec-b" });
  const logger = createMemoryLogger();
  const controller = new AbortController();
  const config = configFrom({
    coordinatorUrls: [a.url, b.url],
    ollamaPort: sim.port,
    ollamaBin: "/nonexistent/ollama",
    machineName: "ha-box",
    agentToken: "tok",
    heartbeatIntervalSecs: 0.02,
    registerRetrySecs: 0.02,
    timing: fastTiming,
  });
  const run = runAgent(config, { signal: controller.signal, logger, metrics });
  try {
    await a.waitFor(() => a.heartbeats.length >= 2);
    assert.equal(b.registrations.length, 0); // the first that answers is the one used
    const id = a.heartbeats[0].body.agent_id;

    await a.stop();
    // Staying with the stopped coordinator would end in the line about none being reachable.
    const unreachable = logger.waitFor((l) => l.msg.startsWith("Coordinator is unreachable"));
    const moved = await Promise.race([
      b.waitFor(() => b.heartbeats.length >= 2).then(() => true),
      unreachable.then(() => false),
    ]);
    assert.ok(moved, "the agent kept to the coordinator that stopped answering");
    await logger.waitFor((l) => l.msg === `Coordinator ${a.url} stopped answering; using ${b.url}`);
    const identity = (
      r: { body: RegisterRequest },
    ) => [r.body.machine_name, r.body.ip_address, r.body.ollama_port];
    assert.deepEqual(identity(b.registrations[0]), identity(a.registrations[0]));
    assert.equal(b.registrations[0].auth, "Bearer tok");
    assert.ok(b.heartbeats.every((h) => h.body.agent_id === id && h.auth === "Bearer sec-b"));

    // Round the list: the first one is back, the second goes away.
    await a.restart();
    const beats = a.heartbeats.length;
    await b.stop();
    await a.waitFor(() => a.heartbeats.length >= beats + 2);
    await logger.waitFor((l) => l.msg === `Coordinator ${b.url} stopped answering; using ${a.url}`);
    assert.ok(a.heartbeats.slice(beats).every((h) => h.body.agent_id === id));
    assert.equal(agents.size, 1);
    assert.deepEqual([...a.invalid, ...b.invalid], []);
  } finally {
    controller.abort();
    await run;
    await a.close();
    await b.close();
    await sim.close();
  }
});

/** An Ollama whose pulls send their first line, then wait for `release()` to finish. */
function startGatedOllama() {
  let release!: () => void;
  const released = new Promise<void>((resolve) => release = resolve);
  const encoder = new TextEncoder();
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, (req) => {
    const { pathname } = new URL(req.url);
    if (pathname === "/") return new Response("Ollama is running");
    if (pathname === "/api/version") return Response.json({ version: "0.12.6" });
    if (pathname === "/api/tags" || pathname === "/api/ps") return Response.json({ models: [] });
    if (pathname !== "/api/pull") return new Response("404 page not found", { status: 404 });
    const body = new ReadableStream<Uint8Array>({
      async start(stream) {
        stream.enqueue(encoder.encode('{"status":"pulling manifest"}\n'));
        await released;
        try {
          stream.enqueue(encoder.encode('{"status":"success"}\n'));
          stream.close();
        } catch {
          // The agent went away first.
        }
      },
    });
    return new Response(body, { headers: { "content-type": "application/x-ndjson" } });
  });
  return {
    port: server.addr.port,
    release,
    close: async () => {
      release();
      await server.shutdown();
    },
  };
}

Deno.test("agent - progress of a pull goes to the coordinator in use", async () => {
  const ollama = startGatedOllama();
  const agents = new Map<string, string>();
  const a = await startFakeCoordinator({ agents });
  const b = await startFakeCoordinator({ agents });
  const controller = new AbortController();
  const log = events();
  const config = configFrom({
    coordinatorUrls: [a.url, b.url],
    ollamaPort: ollama.port,
    ollamaBin: "/nonexistent/ollama",
    heartbeatIntervalSecs: 0.02,
    registerRetrySecs: 0.02,
    timing: fastTiming,
  });
  const logger = createMemoryLogger();
  const run = runAgent(config, {
    signal: controller.signal,
    logger,
    metrics,
    onEvent: log.onEvent,
  });
  try {
    await log.waitFor((e) => e.type === "registered" && e.url === a.url);
    a.queueCommand({ id: "pull-1", type: "pull", model: "llama3.2" });
    await a.waitFor(() => a.progress.some((p) => p.body.command_id === "pull-1"));
    // The coordinator that handed out the pull goes away while the pull is running.
    await a.stop();
    const moved = await Promise.race([
      log.waitFor((e) => e.type === "heartbeat" && e.url === b.url).then(() => true),
      logger.waitFor((l) => l.msg.startsWith("Coordinator is unreachable")).then(() => false),
    ]);
    assert.ok(moved, "the agent kept to the coordinator that stopped answering");
    ollama.release();
    await b.waitFor(() => b.progress.some((p) => p.body.done));
    const final = b.progress.find((p) => p.body.done)!;
    assert.deepEqual(final.body, { command_id: "pull-1", status: "success", done: true });
    assert.equal(final.agentId, [...agents.values()][0]);
    assert.ok(!a.progress.some((p) => p.body.done));
  } finally {
    controller.abort();
    await run;
    await a.close();
    await b.close();
    await ollama.close();
  }
});
