import assert from "node:assert/strict";
import type { CommandProgress, RegisterRequest } from "@oc/shared";
import {
  CoordinatorClient,
  CoordinatorHttpError,
  createProgressReporter,
  detectAdvertiseAddress,
  progressBody,
  registerWithRetry,
  registrationAddress,
} from "./coordinator_client.ts";
import { createMemoryLogger } from "./log.ts";
import { startFakeCoordinator } from "./testing.ts";

const body: RegisterRequest = {
  machine_name: "box",
  ip_address: "127.0.0.1",
  ollama_version: "0.12.6",
  ollama_port: 11434,
};
/** Lets every pending promise callback run. */
const tick = () => new Promise((resolve) => setTimeout(resolve, 0));

const health = { cpu_usage: 1, memory_usage: 2, active_requests: 0 };

Deno.test("coordinator client - registers with the token, then heartbeats with the secret", async () => {
  const coord = await startFakeCoordinator({ token: "tok", secret: "sec", heartbeatInterval: 2 });
  try {
    const client = new CoordinatorClient({ baseUrl: coord.url + "/", token: "tok" });
    const reply = await client.register(body);
    assert.equal(reply.status, "registered");
    assert.equal(client.agentId, reply.agent_id);
    assert.equal(client.heartbeatIntervalSecs, 2);
    assert.equal(coord.registrations[0].auth, "Bearer tok");
    await client.heartbeat(health);
    assert.equal(coord.heartbeats[0].auth, "Bearer sec");
    assert.equal(coord.heartbeats[0].body.agent_id, reply.agent_id);
    await client.progress({ command_id: "c1", status: "success", done: true });
    assert.equal(coord.progress[0].auth, "Bearer sec");
    assert.equal(coord.progress[0].agentId, reply.agent_id);
    assert.deepEqual(coord.invalid, []);
  } finally {
    await coord.close();
  }
});

Deno.test("coordinator client - without a secret heartbeats keep the token", async () => {
  const coord = await startFakeCoordinator();
  try {
    const client = new CoordinatorClient({ baseUrl: coord.url, token: "tok" });
    await client.register(body);
    await client.heartbeat(health);
    assert.equal(coord.heartbeats[0].auth, "Bearer tok");
    const anonymous = new CoordinatorClient({ baseUrl: coord.url });
    await anonymous.register({ ...body, machine_name: "other" });
    await anonymous.heartbeat(health);
    assert.equal(coord.heartbeats[1].auth, null);
  } finally {
    await coord.close();
  }
});

Deno.test("coordinator client - an unknown agent's heartbeat is a 404 error", async () => {
  const coord = await startFakeCoordinator();
  try {
    const client = new CoordinatorClient({ baseUrl: coord.url });
    await client.register(body);
    coord.forget();
    await assert.rejects(client.heartbeat(health), (error: unknown) => {
      assert.ok(error instanceof CoordinatorHttpError);
      assert.equal(error.status, 404);
      assert.match(error.message, /status 404: Unknown agent/);
      return true;
    });
  } finally {
    await coord.close();
  }
});

Deno.test("coordinator client - registration retries until the coordinator answers", async () => {
  const coord = await startFakeCoordinator();
  await coord.stop();
  const logger = createMemoryLogger();
  const client = new CoordinatorClient({ baseUrl: coord.url, logger });
  let attempts = 0;
  const registered = registerWithRetry(client, () => {
    attempts++;
    // Bring the coordinator back once the agent has failed twice.
    if (attempts === 3) return coord.restart().then(() => body);
    return Promise.resolve(body);
  }, { retryMs: 0, maxRetries: 0, unauthorizedRetryMs: 0, logger });
  try {
    const reply = await registered;
    assert.ok(reply?.agent_id);
    assert.equal(attempts, 3);
    assert.equal(coord.registrations.length, 1);
    // Gone once, back once: nothing logged for the attempts in between.
    assert.deepEqual(
      logger.lines.filter((l) => l.msg.startsWith("Coordinator is")).map((l) => l.msg),
      ["Coordinator is unreachable; retrying quietly", "Coordinator is reachable again"],
    );
  } finally {
    await coord.close();
  }
});

Deno.test("coordinator client - registration gives up after the configured retries", async () => {
  const coord = await startFakeCoordinator();
  await coord.stop();
  const client = new CoordinatorClient({ baseUrl: coord.url });
  let attempts = 0;
  await assert.rejects(
    registerWithRetry(client, () => {
      attempts++;
      return Promise.resolve(body);
    }, { retryMs: 0, maxRetries: 2, unauthorizedRetryMs: 0 }),
    /Cannot register with the coordinator at http:\/\/127\.0\.0\.1:\d+ after 3 attempts/,
  );
  assert.equal(attempts, 3);
});

Deno.test("coordinator client - a rejected token is a clear error about AGENT_TOKEN", async () => {
  const coord = await startFakeCoordinator({ token: "right" });
  const logger = createMemoryLogger();
  try {
    const client = new CoordinatorClient({ baseUrl: coord.url, token: "wrong", logger });
    await assert.rejects(
      registerWithRetry(client, () => Promise.resolve(body), {
        retryMs: 0,
        maxRetries: 1,
        unauthorizedRetryMs: 0,
        logger,
      }),
      /rejected the token \(status 401\); set AGENT_TOKEN/,
    );
    const errors = logger.lines.filter((l) => l.level === "error");
    assert.equal(errors.length, 2);
    assert.match(errors[0].msg, /set AGENT_TOKEN to a token the coordinator accepts/);
  } finally {
    await coord.close();
  }
});

Deno.test("coordinator client - a 403 shows the coordinator's reason, not a token problem", async () => {
  // A coordinator's host allow-list answers a name it does not know with 403 (issue 16).
  const reason = 'Host "coordinator.example" is not allowed; add it to COORDINATOR_ALLOWED_HOSTS';
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    async (req) => {
      await req.body?.cancel();
      return Response.json({ error: reason }, { status: 403 });
    },
  );
  const logger = createMemoryLogger();
  try {
    const client = new CoordinatorClient({
      baseUrl: `http://127.0.0.1:${server.addr.port}`,
      token: "right",
      logger,
    });
    const retry = { retryMs: 0, maxRetries: 1, unauthorizedRetryMs: 0, logger };
    const rejected = await registerWithRetry(client, () => Promise.resolve(body), retry).then(
      () => assert.fail("registered"),
      (e: Error) => e.message,
    );
    assert.match(
      rejected,
      /the coordinator refused it \(status 403\): Host "coordinator\.example"/,
    );
    assert.doesNotMatch(rejected, /token/);
    const errors = logger.lines.filter((l) => l.level === "error").map((l) => l.msg);
    assert.equal(errors.length, 2);
    assert.ok(errors.every((msg) => msg.includes("COORDINATOR_ALLOWED_HOSTS")), errors[0]);
  } finally {
    await server.shutdown();
  }
});

/** What the client said about coordinators going and coming, in order. */
const moves = (logger: ReturnType<typeof createMemoryLogger>) =>
  logger.lines.filter((l) => l.msg.startsWith("Coordinator ")).map((l) => l.msg);

Deno.test("coordinator client - several coordinators: registers with the first that answers", async () => {
  const down = await startFakeCoordinator();
  await down.stop();
  const up = await startFakeCoordinator();
  const logger = createMemoryLogger();
  try {
    const client = new CoordinatorClient({ baseUrl: [down.url, up.url + "/"], logger });
    assert.equal(client.baseUrl, down.url);
    let attempts = 0;
    const reply = await registerWithRetry(client, () => {
      attempts++;
      return Promise.resolve(body);
    }, { retryMs: 0, maxRetries: 1, unauthorizedRetryMs: 0, logger });
    assert.ok(reply?.agent_id);
    assert.equal(attempts, 2);
    assert.equal(client.baseUrl, up.url);
    assert.equal(up.registrations.length, 1);
    // One line for the move, none about the coordinators being unreachable.
    assert.deepEqual(moves(logger), [`Coordinator ${down.url} stopped answering; using ${up.url}`]);
    // Heartbeats and progress reports go to the coordinator in use.
    await client.heartbeat(health);
    await client.progress({ command_id: "c1", status: "success", done: true });
    assert.equal(up.heartbeats.length, 1);
    assert.equal(up.progress.length, 1);
  } finally {
    await up.close();
  }
});

Deno.test("coordinator client - several coordinators: a 5xx moves on, a rejected token does not", async () => {
  const failing = await startFakeCoordinator({ token: "right" });
  const other = await startFakeCoordinator(); // would accept any token
  try {
    failing.failWith(503);
    const logger = createMemoryLogger();
    const client = new CoordinatorClient({
      baseUrl: [failing.url, other.url],
      token: "right",
      logger,
    });
    const retry = { retryMs: 0, maxRetries: 1, unauthorizedRetryMs: 0, logger };
    assert.ok(await registerWithRetry(client, () => Promise.resolve(body), retry));
    assert.equal(other.registrations.length, 1);
    assert.ok(logger.lines.some((l) => /status 503: Failing with 503/.test(l.msg)));
    assert.deepEqual(moves(logger), [
      `Coordinator ${failing.url} stopped answering; using ${other.url}`,
    ]);

    failing.failWith(undefined);
    const wrong = new CoordinatorClient({ baseUrl: [failing.url, other.url], token: "wrong" });
    await assert.rejects(
      registerWithRetry(wrong, () => Promise.resolve(body), retry),
      /after 2 attempts: Cannot register agent: the coordinator rejected the token \(status 401\)/,
    );
    assert.equal(wrong.baseUrl, failing.url);
    assert.equal(other.registrations.length, 1);
  } finally {
    await failing.close();
    await other.close();
  }
});

Deno.test("coordinator client - several coordinators: all gone is logged once, the return once", async () => {
  const a = await startFakeCoordinator();
  const b = await startFakeCoordinator();
  await a.stop();
  await b.stop();
  const logger = createMemoryLogger();
  const client = new CoordinatorClient({ baseUrl: [a.url, b.url], logger });
  const tried: string[] = [];
  try {
    // Two rounds over both fail; the second coordinator is back for the third.
    const reply = await registerWithRetry(client, async () => {
      tried.push(client.baseUrl);
      if (tried.length === 6) await b.restart();
      return body;
    }, { retryMs: 0, maxRetries: 0, unauthorizedRetryMs: 0, logger });
    assert.ok(reply?.agent_id);
    assert.deepEqual(tried, [a.url, b.url, a.url, b.url, a.url, b.url]);
    assert.deepEqual(moves(logger), [
      "Coordinator is unreachable; retrying quietly",
      `Coordinator ${a.url} stopped answering; using ${b.url}`,
    ]);
    assert.equal(
      logger.lines.find((l) => l.msg.startsWith("Coordinator is unreachable"))?.fields?.url,
      `${a.url}, ${b.url}`,
    );
    const c = await startFakeCoordinator();
    await c.stop();
    await assert.rejects(
      registerWithRetry(
        new CoordinatorClient({ baseUrl: [a.url, c.url] }),
        () => Promise.resolve(body),
        { retryMs: 0, maxRetries: 1, unauthorizedRetryMs: 0 },
      ),
      new RegExp(
        `Cannot register with any of the coordinators ${a.url}, ${c.url} after 2 attempts`,
      ),
    );
  } finally {
    await b.close();
  }
});

Deno.test("coordinator client - registration stops quietly when the agent stops", async () => {
  const coord = await startFakeCoordinator();
  await coord.stop();
  const controller = new AbortController();
  const client = new CoordinatorClient({ baseUrl: coord.url });
  const reply = await registerWithRetry(client, () => {
    controller.abort();
    return Promise.resolve(body);
  }, { retryMs: 60_000, maxRetries: 0, unauthorizedRetryMs: 0, signal: controller.signal });
  assert.equal(reply, undefined);
});

Deno.test("coordinator client - progress is sent in order, latest first, and ends with the final report", async () => {
  const sent: CommandProgress[] = [];
  const releases: (() => void)[] = [];
  const reporter = createProgressReporter((p) => {
    sent.push(p);
    return new Promise<void>((resolve) => releases.push(resolve));
  }, { intervalMs: 0 });
  const p = (completed: number) => ({ command_id: "c", status: "pulling", completed, total: 10 });
  reporter.update(p(1)); // sent at once
  reporter.update(p(2)); // replaced by the next one while the first is in flight
  reporter.update(p(3));
  assert.deepEqual(sent.map((s) => s.completed), [1]);
  releases.shift()!();
  await tick();
  assert.deepEqual(sent.map((s) => s.completed), [1, 3]);
  reporter.update(p(4)); // dropped by the final report
  const finished = reporter.finish({ command_id: "c", status: "success", done: true });
  releases.shift()!();
  await tick();
  releases.shift()!();
  await finished;
  assert.deepEqual(sent.map((s) => s.completed ?? s.status), [1, 3, "success"]);
});

Deno.test("coordinator client - progress waits out the interval before the next report", async () => {
  const sent: number[] = [];
  const now = 0;
  const reporter = createProgressReporter((p) => {
    sent.push(p.completed!);
    return Promise.resolve();
  }, { intervalMs: 60_000, now: () => now });
  reporter.update({ command_id: "c", status: "pulling", completed: 1 });
  await tick();
  reporter.update({ command_id: "c", status: "pulling", completed: 2 });
  await tick();
  assert.deepEqual(sent, [1]); // the second waits for the interval (its timer is pending)
  await reporter.finish({ command_id: "c", status: "success", done: true, completed: 9 });
  assert.deepEqual(sent, [1, 9]); // finish cancelled the waiting update and its timer
});

Deno.test("coordinator client - progress bodies are trimmed to the schema's limits", () => {
  const trimmed = progressBody({
    command_id: "c".repeat(100),
    status: "s".repeat(300),
    error: "e".repeat(2000),
  });
  assert.equal(trimmed.command_id.length, 64);
  assert.equal(trimmed.status.length, 256);
  assert.equal(trimmed.error!.length, 1024);
});

Deno.test("coordinator client - the advertised address is the local end of a connection to the coordinator", async () => {
  const coord = await startFakeCoordinator();
  try {
    assert.equal(await detectAdvertiseAddress(coord.url), "127.0.0.1");
  } finally {
    await coord.close();
  }
  // Unreachable: falls back to an interface address (or loopback) without throwing.
  const fallback = await detectAdvertiseAddress(coord.url);
  assert.ok(fallback.length > 0);
});

Deno.test("coordinator client - another coordinator gets the address the agent registered under", async () => {
  const detected: string[] = [];
  const detect = (url: string) => {
    detected.push(url);
    return Promise.resolve(url === "http://b:8080" ? "192.168.9.9" : "10.0.0.5");
  };
  const registered = { url: "http://a:8080", address: "10.0.0.5" };
  // Moving to B keeps the address A knows, although the route to B would say otherwise.
  assert.equal(await registrationAddress("http://b:8080", { registered, detect }), "10.0.0.5");
  assert.deepEqual(detected, []);
  // The same coordinator again (after a restart): detected afresh.
  assert.equal(await registrationAddress("http://a:8080", { registered, detect }), "10.0.0.5");
  assert.equal(await registrationAddress("http://b:8080", { detect }), "192.168.9.9");
  assert.deepEqual(detected, ["http://a:8080", "http://b:8080"]);
  // AGENT_ADVERTISE_ADDRESS always wins.
  assert.equal(
    await registrationAddress("http://b:8080", { advertised: "gpu-01.lan", registered, detect }),
    "gpu-01.lan",
  );
});
