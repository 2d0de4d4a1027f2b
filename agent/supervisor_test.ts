import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { startSimulator } from "@oc/simulator";
import type { AgentTiming } from "./config.ts";
import { createMemoryLogger } from "./log.ts";
import { isOllamaUp } from "./ollama_api.ts";
import {
  backoffDelay,
  createSupervisor,
  OllamaNotFoundError,
  type SupervisorEvent,
} from "./supervisor.ts";

const FAKE_OLLAMA = fileURLToPath(new URL("../scripts/fake-ollama", import.meta.url));

const timing: Partial<AgentTiming> = {
  ollamaReadyTimeoutMs: 30_000,
  ollamaProbeIntervalMs: 20,
  restartBackoffMinMs: 10,
  restartBackoffMaxMs: 1_000,
  restartResetAfterMs: 600_000,
  stopGraceMs: 10_000,
};

function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  listener.close();
  return port;
}

/** Records supervisor events and waits for the next one that matches. */
function eventLog() {
  const events: SupervisorEvent[] = [];
  const waiters = new Set<{ match: (e: SupervisorEvent) => boolean; resolve: () => void }>();
  return {
    events,
    onEvent(event: SupervisorEvent) {
      events.push(event);
      for (const w of waiters) {
        if (w.match(event)) {
          waiters.delete(w);
          w.resolve();
        }
      }
    },
    next(match: (e: SupervisorEvent) => boolean): Promise<void> {
      return new Promise((resolve) => waiters.add({ match, resolve }));
    },
  };
}

Deno.test("supervisor - backoff doubles from the minimum up to the maximum", () => {
  assert.deepEqual(
    [0, 1, 2, 3, 10, 100].map((n) => backoffDelay(n, 1000, 60_000)),
    [1000, 2000, 4000, 8000, 60_000, 60_000],
  );
});

Deno.test("supervisor - starts ollama when nothing answers, pipes its log, stops it with the agent", async () => {
  const dir = await Deno.makeTempDir();
  // Shows the environment the agent gave it, then becomes the simulator.
  const bin = `${dir}/ollama`;
  await Deno.writeTextFile(
    bin,
    `#!/bin/sh\necho "env OLLAMA_HOST=$OLLAMA_HOST OLLAMA_NUM_PARALLEL=$OLLAMA_NUM_PARALLEL"\n` +
      `exec '${FAKE_OLLAMA}' "$@"\n`,
  );
  await Deno.chmod(bin, 0o755);
  const port = freePort();
  const logger = createMemoryLogger();
  const log = eventLog();
  const supervisor = createSupervisor({
    bin,
    port,
    bindHost: "127.0.0.1",
    numParallel: 3,
    logger,
    timing,
    onEvent: log.onEvent,
  });
  try {
    assert.equal(await supervisor.start(), "started");
    assert.equal(supervisor.managed, true);
    assert.ok(supervisor.pid);
    assert.equal(await isOllamaUp(supervisor.baseUrl), true);
    const env = await logger.waitFor((l) => l.msg.startsWith("ollama: env"));
    assert.equal(env.msg, `ollama: env OLLAMA_HOST=127.0.0.1:${port} OLLAMA_NUM_PARALLEL=3`);
    const line = await logger.waitFor((l) => l.msg.startsWith("ollama: [sim]"));
    assert.match(line.msg, /^ollama: \[sim\] Listening on 127\.0\.0\.1:\d+/);
  } finally {
    await supervisor.stop();
    await Deno.remove(dir, { recursive: true });
  }
  assert.equal(await isOllamaUp(supervisor.baseUrl), false);
  assert.deepEqual(log.events.map((e) => e.type), ["spawned", "ready", "exited", "stopped"]);
  const exited = log.events.find((e) => e.type === "exited");
  assert.equal(exited?.type === "exited" && exited.signal, null); // it stopped cleanly on SIGTERM
});

Deno.test("supervisor - restarts ollama with backoff when it exits", async () => {
  const port = freePort();
  const log = eventLog();
  const supervisor = createSupervisor({
    bin: FAKE_OLLAMA,
    port,
    bindHost: "127.0.0.1",
    timing,
    onEvent: log.onEvent,
  });
  try {
    await supervisor.start();
    const first = supervisor.pid!;
    let ready = log.next((e) => e.type === "ready");
    Deno.kill(first, "SIGKILL");
    await ready;
    const second = supervisor.pid!;
    assert.notEqual(second, first);
    assert.equal(await isOllamaUp(supervisor.baseUrl), true);
    ready = log.next((e) => e.type === "ready");
    Deno.kill(second, "SIGKILL");
    await ready;
    assert.equal(supervisor.restarts, 2);
    const delays = log.events.flatMap((e) => e.type === "restart-scheduled" ? [e.delayMs] : []);
    assert.deepEqual(delays, [10, 20]);
  } finally {
    await supervisor.stop();
  }
  assert.equal(await isOllamaUp(supervisor.baseUrl), false);
});

Deno.test("supervisor - resets the backoff after ollama was healthy for a while", async () => {
  const port = freePort();
  const log = eventLog();
  const supervisor = createSupervisor({
    bin: FAKE_OLLAMA,
    port,
    bindHost: "127.0.0.1",
    timing: { ...timing, restartResetAfterMs: 0 },
    onEvent: log.onEvent,
  });
  try {
    await supervisor.start();
    for (let i = 0; i < 2; i++) {
      const ready = log.next((e) => e.type === "ready");
      Deno.kill(supervisor.pid!, "SIGKILL");
      await ready;
    }
    const delays = log.events.flatMap((e) => e.type === "restart-scheduled" ? [e.delayMs] : []);
    assert.deepEqual(delays, [10, 10]);
  } finally {
    await supervisor.stop();
  }
});

Deno.test("supervisor - an Ollama already running is used, not started nor stopped", async () => {
  const sim = await startSimulator({ quiet: true });
  try {
    const log = eventLog();
    const supervisor = createSupervisor({
      bin: "/nonexistent/ollama",
      port: sim.port,
      timing,
      onEvent: log.onEvent,
    });
    assert.equal(await supervisor.start(), "external");
    assert.equal(supervisor.managed, false);
    assert.equal(supervisor.pid, undefined);
    await supervisor.stop();
    assert.deepEqual(log.events.map((e) => e.type), ["external"]);
    assert.equal(await isOllamaUp(sim.url), true);
  } finally {
    await sim.close();
  }
});

Deno.test("supervisor - a missing binary is one clear error", async () => {
  const supervisor = createSupervisor({ bin: "/nonexistent/ollama", port: freePort(), timing });
  await assert.rejects(supervisor.start(), (error: unknown) => {
    assert.ok(error instanceof OllamaNotFoundError);
    assert.equal(
      error.message,
      'Cannot start Ollama: "/nonexistent/ollama" was not found; install Ollama from ' +
        "https://ollama.com/download or set OLLAMA_BIN to the path of the ollama executable",
    );
    return true;
  });
  await supervisor.stop();
});

Deno.test("supervisor - an Ollama that never answers is given up and killed if SIGTERM is ignored", async () => {
  const dir = await Deno.makeTempDir();
  const bin = `${dir}/stubborn-ollama`;
  // Ignores SIGTERM (the disposition survives exec) and never listens.
  await Deno.writeTextFile(bin, "#!/bin/sh\ntrap '' TERM\nexec sleep 600\n");
  await Deno.chmod(bin, 0o755);
  const log = eventLog();
  const supervisor = createSupervisor({
    bin,
    port: freePort(),
    timing: { ...timing, ollamaReadyTimeoutMs: 100, stopGraceMs: 50 },
    onEvent: log.onEvent,
  });
  try {
    await assert.rejects(supervisor.start(), /Cannot start Ollama: nothing answered on port \d+/);
    const exited = log.events.find((e) => e.type === "exited");
    assert.equal(exited?.type === "exited" && exited.signal, "SIGKILL");
    assert.ok(!log.events.some((e) => e.type === "restart-scheduled"));
  } finally {
    await supervisor.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("supervisor - a child that keeps Ollama's pipes open does not hold up the stop", async () => {
  const dir = await Deno.makeTempDir();
  const bin = `${dir}/ollama`;
  // Like a model runner that outlives Ollama: a background process inherits stdout and stderr.
  await Deno.writeTextFile(
    bin,
    `#!/bin/sh\nsleep 30 &\necho "runner $!"\nexec '${FAKE_OLLAMA}' "$@"\n`,
  );
  await Deno.chmod(bin, 0o755);
  const logger = createMemoryLogger();
  const supervisor = createSupervisor({
    bin,
    port: freePort(),
    bindHost: "127.0.0.1",
    logger,
    timing: { ...timing, pipeDrainMs: 50 },
  });
  let runner: number | undefined;
  try {
    await supervisor.start();
    const line = await logger.waitFor((l) => l.msg.startsWith("ollama: runner "));
    runner = Number(line.msg.split(" ").at(-1));
  } finally {
    await supervisor.stop();
    if (runner) Deno.kill(runner, "SIGKILL");
    await Deno.remove(dir, { recursive: true });
  }
  assert.equal(await isOllamaUp(supervisor.baseUrl), false);
});
