/**
 * The fault suite (`deno task test:faults`): real processes on loopback, killed and frozen
 * while serving. Counts are asserted, not timings.
 */
import assert from "node:assert/strict";
import { startCoordinator, testConfig } from "../mod.ts";
import {
  adminCookie,
  type Child,
  pool,
  registerSim,
  spawnAgent,
  spawnCoordinator,
  spawnSimulator,
} from "./process.ts";

const chat = (stream: boolean, content: string) =>
  JSON.stringify({ model: "llama3.2", messages: [{ role: "user", content }], stream });

async function stopAll(children: Child[]) {
  await Promise.all(children.map((c) => c.stop()));
}

Deno.test("faults - an agent killed during 1,000 non-streaming requests at concurrency 16 fails none", async () => {
  const coordinator = await startCoordinator(testConfig({ healthCheckInterval: 3600 }));
  const sims = await Promise.all(
    [1, 2, 3].map(() => spawnSimulator(["--tps", "2000", "--models", "llama3.2"])),
  );
  try {
    for (const [i, sim] of sims.entries()) await registerSim(coordinator.url, `sim-${i}`, sim);
    let done = 0;
    const results = await pool(1000, 16, async (i) => {
      if (++done === 200) sims[0].kill("SIGKILL");
      const res = await fetch(`${coordinator.url}/api/chat`, {
        method: "POST",
        body: chat(false, `q${i}`),
      });
      const body = await res.json();
      return res.status === 200 && body.done === true;
    });
    const failed = results.filter((ok) => !ok).length;
    console.log(`faults: 1000 requests, ${failed} failed, agent killed after 200`);
    assert.equal(failed, 0);
    assert.ok(
      (await coordinator.ctx.registry.events()).some((e) =>
        e.kind === "failure" || e.kind === "circuit_open"
      ),
    );
  } finally {
    await stopAll(sims);
    await coordinator.stop();
  }
});

Deno.test("faults - agents killed mid-stream end each affected stream with a clean error", async () => {
  const coordinator = await startCoordinator(
    testConfig({ healthCheckInterval: 3600, idleTimeout: 5 }),
  );
  const sims = await Promise.all(
    [1, 2].map(() => spawnSimulator(["--tps", "40", "--models", "llama3.2", "--parallel", "8"])),
  );
  try {
    for (const [i, sim] of sims.entries()) await registerSim(coordinator.url, `sim-${i}`, sim, 8);
    const streams = await Promise.all(Array.from({ length: 12 }, async (_, i) => {
      const res = await fetch(`${coordinator.url}/api/chat`, {
        method: "POST",
        body: JSON.stringify({
          model: "llama3.2",
          messages: [{ role: "user", content: `s${i}` }],
          options: { num_predict: 200 },
        }),
      });
      return { agent: res.headers.get("x-coordinator-agent"), body: res.text() };
    }));
    sims[0].kill("SIGKILL");
    let broken = 0, complete = 0;
    for (const s of streams) {
      const lines = (await s.body).trim().split("\n").map((l) => JSON.parse(l));
      const last = lines.at(-1);
      if (s.agent === "sim-0") {
        assert.ok(
          typeof last.error === "string",
          "a stream on the killed agent ends with an error line",
        );
        broken++;
      } else {
        assert.equal(last.done, true);
        complete++;
      }
    }
    console.log(`faults: ${broken} streams broken cleanly, ${complete} completed`);
    assert.ok(broken > 0 && complete > 0);
    assert.equal(coordinator.ctx.registry.all().reduce((n, a) => n + a.inFlight, 0), 0);
  } finally {
    await stopAll(sims);
    await coordinator.stop();
  }
});

Deno.test("faults - a frozen Ollama times out and the request is served elsewhere", async () => {
  const coordinator = await startCoordinator(
    testConfig({ healthCheckInterval: 3600, firstByteTimeout: 1 }),
  );
  const frozen = await spawnSimulator(["--models", "llama3.2", "--loaded", "llama3.2"]);
  const fine = await spawnSimulator(["--models", "llama3.2"]);
  try {
    await registerSim(coordinator.url, "frozen", frozen);
    await registerSim(coordinator.url, "fine", fine);
    frozen.kill("SIGSTOP");
    for (const stream of [false, true]) {
      const res = await fetch(`${coordinator.url}/api/chat`, {
        method: "POST",
        body: chat(stream, "hello"),
      });
      assert.equal(res.status, 200);
      assert.equal(res.headers.get("x-coordinator-agent"), "fine");
      await res.text();
    }
  } finally {
    frozen.kill("SIGCONT");
    await stopAll([frozen, fine]);
    await coordinator.stop();
  }
});

Deno.test("faults - SIGTERM under load lets every in-flight stream complete", async () => {
  const sim = await spawnSimulator(["--tps", "50", "--models", "llama3.2", "--parallel", "16"]);
  const dbDir = await Deno.makeTempDir();
  const coordinator = await spawnCoordinator({ DATABASE_URL: `sqlite://${dbDir}/c.db` });
  try {
    await registerSim(coordinator.url, "sim", sim, 16);
    const streams = await Promise.all(Array.from({ length: 10 }, async (_, i) => {
      const res = await fetch(`${coordinator.url}/api/generate`, {
        method: "POST",
        body: JSON.stringify({ model: "llama3.2", prompt: `p${i}`, options: { num_predict: 60 } }),
      });
      const reader = res.body!.getReader();
      await reader.read(); // the stream has started
      return reader;
    }));
    coordinator.kill("SIGTERM");
    let completed = 0;
    for (const reader of streams) {
      let text = "";
      const decoder = new TextDecoder();
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        text += decoder.decode(value);
      }
      const last = JSON.parse(text.trim().split("\n").at(-1)!);
      if (last.done === true) completed++;
    }
    const status = await coordinator.process.status;
    console.log(
      `faults: SIGTERM with 10 streams in flight, ${completed} completed, exit ${status.code}`,
    );
    assert.equal(completed, 10);
    assert.equal(status.code, 0);
    // New connections are refused once it stopped.
    await assert.rejects(fetch(coordinator.url));
  } finally {
    await stopAll([sim, coordinator]);
    await Deno.remove(dbDir, { recursive: true });
  }
});

Deno.test("faults - the coordinator killed with SIGKILL under load comes back with its agents and data", async () => {
  const dir = await Deno.makeTempDir();
  const env = {
    DATABASE_URL: `sqlite://${dir}/c.db`,
    AGENT_HEARTBEAT_INTERVAL: "1",
    AGENT_TIMEOUT: "5",
  };
  let coordinator = await spawnCoordinator(env);
  const agents = [spawnAgent(coordinator.url, "agent-a"), spawnAgent(coordinator.url, "agent-b")];
  const listAgents = async () => {
    const res = await fetch(`${coordinator.url}/api/agents`, {
      headers: { cookie: await adminCookie(coordinator.url) },
    });
    return await res.json() as { id: string; status: string; last_seen: string }[];
  };
  const waitOnline = async (after: number) => {
    for (let i = 0; i < 300; i++) {
      try {
        const list = await listAgents();
        if (
          list.length === 2 &&
          list.every((a) => a.status === "online" && Date.parse(a.last_seen) > after)
        ) return list;
      } catch { /* restarting */ }
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error("Agents did not come back");
  };
  try {
    const before = await waitOnline(0);
    const ask = (i: number) =>
      fetch(`${coordinator.url}/api/generate`, {
        method: "POST",
        body: JSON.stringify({ model: "llama3.2", prompt: `p${i}`, stream: false }),
      }).then(async (
        r,
      ) => (await r.text(), r.status === 200 ? r.headers.get("x-request-id") : null)).catch(() =>
        null
      );
    // A first wave, given time to be flushed (the log writes a batch every second).
    const flushed = (await pool(100, 8, ask)).filter((id): id is string => id !== null);
    assert.equal(flushed.length, 100);
    await new Promise((r) => setTimeout(r, 1500));
    // A second wave, with the coordinator killed in the middle of it.
    const load = pool(400, 8, async (i) => {
      if (i === 100) coordinator.kill("SIGKILL");
      return await ask(1000 + i);
    });
    await load;
    await coordinator.process.status;
    const restartedAt = Date.now();
    coordinator = await spawnCoordinator(env, coordinator.port);
    const after = await waitOnline(restartedAt);
    const backMs = Date.now() - restartedAt;
    console.log(`faults: agents back ${backMs} ms after the restart (heartbeat interval 1000 ms)`);
    assert.deepEqual(after.map((a) => a.id).sort(), before.map((a) => a.id).sort());
    const { DatabaseSync } = await import("node:sqlite");
    const db = new DatabaseSync(`${dir}/c.db`, { readOnly: true });
    const stored = new Set(db.prepare("SELECT id FROM requests").all().map((r) => String(r.id)));
    db.close();
    const lost = flushed.filter((id) => !stored.has(id));
    console.log(
      `faults: ${stored.size} requests in the log after SIGKILL; ${lost.length} of the flushed wave lost`,
    );
    assert.equal(lost.length, 0);
  } finally {
    await Promise.all([...agents.map((a) => a.stop()), coordinator.stop()]);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("faults - SIGTERM with a stream that never ends: cut at SHUTDOWN_TIMEOUT, logged, database intact", async () => {
  // 2 tokens per second and 100,000 to go: the stream outlives any deadline.
  const sim = await spawnSimulator(["--tps", "2", "--models", "llama3.2"]);
  const dir = await Deno.makeTempDir();
  const coordinator = await spawnCoordinator({
    DATABASE_URL: `sqlite://${dir}/c.db`,
    SHUTDOWN_TIMEOUT: "2",
  });
  try {
    await registerSim(coordinator.url, "sim", sim);
    const completed: string[] = [];
    for (let i = 0; i < 3; i++) {
      const res = await fetch(`${coordinator.url}/api/generate`, {
        method: "POST",
        body: JSON.stringify({
          model: "llama3.2",
          prompt: `short ${i}`,
          stream: false,
          options: { num_predict: 1 },
        }),
      });
      assert.equal((await res.json()).done, true);
      completed.push(res.headers.get("x-request-id")!);
    }
    const res = await fetch(`${coordinator.url}/api/generate`, {
      method: "POST",
      body: JSON.stringify({
        model: "llama3.2",
        prompt: "long",
        options: { num_predict: 100_000 },
      }),
    });
    const reader = res.body!.getReader();
    await reader.read(); // the stream has started
    const signalled = performance.now();
    coordinator.kill("SIGTERM");
    const exited = coordinator.process.status.then((s) => ({
      code: s.code,
      seconds: (performance.now() - signalled) / 1000,
    }));
    // Read until the stream ends, one way or another; it must not hang.
    const decoder = new TextDecoder();
    let text = "";
    let chunksAfterSignal = 0;
    let ending: string;
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) {
          ending = "closed";
          break;
        }
        chunksAfterSignal++;
        text += decoder.decode(value);
      }
    } catch (e) {
      ending = `error: ${(e as Error).message}`;
    }
    const streamSeconds = (performance.now() - signalled) / 1000;
    const { code, seconds } = await exited;
    const lastLine = text.trim().split("\n").at(-1);
    console.log(
      `faults: SIGTERM with SHUTDOWN_TIMEOUT=2 and an endless stream: exit ${code} after ` +
        `${seconds.toFixed(2)} s; the stream got ${chunksAfterSignal} chunks during the grace ` +
        `period and ended after ${streamSeconds.toFixed(2)} s (${ending})`,
    );
    assert.equal(code, 0);
    assert.ok(seconds < 2 + 3, `exited ${seconds} s after SIGTERM`);
    assert.ok(streamSeconds < 2 + 3, `the stream ended ${streamSeconds} s after SIGTERM`);
    // The stream kept flowing during the grace period; at the deadline it was cut with Ollama's
    // in-stream error as its last line and closed cleanly.
    assert.ok(chunksAfterSignal > 0);
    assert.equal(ending, "closed");
    assert.deepEqual(JSON.parse(lastLine!), { error: "The coordinator is shutting down" });
    // What is on disk is a sound database with the requests completed before the signal.
    const { DatabaseSync } = await import("node:sqlite");
    const db = new DatabaseSync(`${dir}/c.db`);
    try {
      assert.equal(db.prepare("PRAGMA integrity_check").get()?.integrity_check, "ok");
      const stored = new Set(db.prepare("SELECT id FROM requests").all().map((r) => r.id));
      assert.deepEqual(completed.filter((id) => !stored.has(id)), []);
      // The cut stream is in the request log too, with why it ended.
      const cut = db.prepare("SELECT status, error FROM requests WHERE id = ?").get(
        res.headers.get("x-request-id")!,
      );
      assert.deepEqual({ ...cut }, { status: 200, error: "The coordinator is shutting down" });
    } finally {
      db.close();
    }
  } finally {
    await stopAll([sim, coordinator]);
    await Deno.remove(dir, { recursive: true });
  }
});

/** Resolves once a server no longer accepts connections (it began to stop). */
async function refusingConnections(url: string): Promise<void> {
  for (;;) {
    try {
      const res = await fetch(`${url}/api/version`);
      await res.body?.cancel();
    } catch {
      return;
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}

Deno.test("faults - a SIGTERM delivered twice within milliseconds still drains: the stream finishes", async () => {
  // 30 tokens at 20 a second: the stream is still running when the signals come.
  const sim = await spawnSimulator(["--tps", "20", "--models", "llama3.2"]);
  const coordinator = await spawnCoordinator({ SHUTDOWN_TIMEOUT: "60" });
  try {
    await registerSim(coordinator.url, "sim", sim);
    const res = await fetch(`${coordinator.url}/api/generate`, {
      method: "POST",
      body: JSON.stringify({ model: "llama3.2", prompt: "p", options: { num_predict: 30 } }),
    });
    const reader = res.body!.getReader();
    await reader.read(); // the stream has started
    // As `deno task`, npx or systemd's control group deliver it: the same signal, twice.
    coordinator.kill("SIGTERM");
    await new Promise((r) => setTimeout(r, 10));
    coordinator.kill("SIGTERM");
    let text = "";
    const decoder = new TextDecoder();
    for (let r = await reader.read(); !r.done; r = await reader.read()) {
      text += decoder.decode(r.value);
    }
    const last = JSON.parse(text.trim().split("\n").at(-1)!);
    assert.equal(last.done, true, text.slice(-300));
    assert.equal((await coordinator.process.status).code, 0);
  } finally {
    await stopAll([sim, coordinator]);
  }
});

Deno.test("faults - a second SIGTERM stops at once, the database sound", async () => {
  const sim = await spawnSimulator(["--tps", "2", "--models", "llama3.2"]);
  const dir = await Deno.makeTempDir();
  const coordinator = await spawnCoordinator({
    DATABASE_URL: `sqlite://${dir}/c.db`,
    SHUTDOWN_TIMEOUT: "60",
  });
  try {
    await registerSim(coordinator.url, "sim", sim);
    const res = await fetch(`${coordinator.url}/api/generate`, {
      method: "POST",
      body: JSON.stringify({ model: "llama3.2", prompt: "long", options: { num_predict: 1e5 } }),
    });
    const reader = res.body!.getReader();
    await reader.read();
    coordinator.kill("SIGTERM");
    // Once the first is handled (no new connections), and past the second within which a
    // repeated signal counts as the same one.
    await refusingConnections(coordinator.url);
    await new Promise((r) => setTimeout(r, 1200));
    const second = performance.now();
    coordinator.kill("SIGTERM");
    const status = await coordinator.process.status;
    const seconds = (performance.now() - second) / 1000;
    await reader.cancel().catch(() => {});
    assert.equal(status.code, 143);
    assert.ok(seconds < 2, `exited ${seconds} s after the second signal`);
    const { DatabaseSync } = await import("node:sqlite");
    const db = new DatabaseSync(`${dir}/c.db`);
    try {
      assert.equal(db.prepare("PRAGMA integrity_check").get()?.integrity_check, "ok");
      assert.equal(db.prepare("SELECT COUNT(*) AS n FROM agents").get()?.n, 1);
    } finally {
      db.close();
    }
  } finally {
    await stopAll([sim, coordinator]);
    await Deno.remove(dir, { recursive: true });
  }
});
