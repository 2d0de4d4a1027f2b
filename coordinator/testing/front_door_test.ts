/**
 * The coordinator's HTTP front door under abuse (issue 12, items 2, 3 and bad bodies of 10):
 * real coordinators on loopback, as a process where descriptors or memory are measured.
 */
import assert from "node:assert/strict";
import { TEST_ADMIN_PASSWORD, TEST_AGENT_TOKEN, testConfig } from "../config.ts";
import { startCoordinator } from "../server.ts";
import {
  closedByPeer,
  connect,
  readUntil,
  residentBytes,
  send,
  type ServerProcess,
  spawnServer,
} from "./raw_http.ts";

function spawnCoordinator(options: { openFiles?: number } = {}): Promise<ServerProcess> {
  return spawnServer(["coordinator/main.ts"], {
    ...options,
    env: {
      COORDINATOR_HOST: "127.0.0.1",
      COORDINATOR_PORT: "0",
      DATABASE_URL: "sqlite::memory:",
      AUTO_REGISTER_LOCAL_OLLAMA: "false",
      LOG_LEVEL: "warn",
      AGENT_TOKEN: TEST_AGENT_TOKEN,
      ADMIN_PASSWORD: TEST_ADMIN_PASSWORD,
    },
  });
}

/** Sends a request head asking to continue, and waits until the coordinator reads the body. */
async function startBody(port: number, path: string, headers: string): Promise<Deno.Conn> {
  const conn = await connect(port);
  await send(
    conn,
    `POST ${path} HTTP/1.1\r\nHost: test\r\nExpect: 100-continue\r\n${headers}\r\n`,
  );
  await readUntil(conn, "100 Continue\r\n\r\n");
  return conn;
}

async function probe(url: string): Promise<number> {
  const t0 = performance.now();
  const res = await fetch(`${url}/api/version`, { signal: AbortSignal.timeout(10_000) });
  assert.equal(res.status, 200);
  await res.body?.cancel();
  return performance.now() - t0;
}

Deno.test("front door - a malformed chunked body is a 400 in the API's own shape, not a 500", async () => {
  const coordinator = await startCoordinator(testConfig());
  try {
    for (
      const [path, shape] of [
        ["/api/chat", /^\{"error":"Cannot read the request body: /],
        ["/v1/chat/completions", /^\{"error":\{"message":"Cannot read the request body: /],
      ] as const
    ) {
      const conn = await startBody(coordinator.port, path, "Transfer-Encoding: chunked\r\n");
      await send(conn, `3;${"x".repeat(100_000)}\r\nabc\r\n0\r\n\r\n`);
      const answer = await closedByPeer(conn);
      conn.close();
      assert.match(answer, /^HTTP\/1.1 400 /);
      assert.match(answer.slice(answer.indexOf("\r\n\r\n") + 4), shape);
    }
  } finally {
    await coordinator.stop();
  }
});

Deno.test("front door - the client time limits come from the configuration", async () => {
  const coordinator = await startCoordinator(
    testConfig({ clientHeaderTimeout: 0.05, clientIdleTimeout: 0.05, clientBodyTimeout: 0.05 }),
  );
  try {
    // Half a request head: closed after CLIENT_HEADER_TIMEOUT.
    const slowHead = await connect(coordinator.port);
    await send(slowHead, "GET /api/version HTTP/1.1\r\nHost: test\r\nX-Slow: ");
    assert.equal(await closedByPeer(slowHead), "");
    slowHead.close();
    // A tenth of a body: 408 after CLIENT_BODY_TIMEOUT, in Ollama's shape.
    const slowBody = await startBody(coordinator.port, "/api/chat", "Content-Length: 100\r\n");
    await send(slowBody, `{"model":"x"`);
    const answer = await closedByPeer(slowBody);
    slowBody.close();
    assert.match(
      answer,
      /^HTTP\/1.1 408 [^]*\{"error":"Request body did not arrive within 0.05 s"\}$/,
    );
    assert.equal(coordinator.listener.stats().timedOut, 1);
  } finally {
    await coordinator.stop();
  }
});

Deno.test("front door - 400 idle connections under 256 descriptors: /api/version answers within 200 ms, during and after", async () => {
  const coordinator = await spawnCoordinator({ openFiles: 256 });
  const conns: Deno.Conn[] = [];
  try {
    await probe(coordinator.url);
    const during: number[] = [];
    for (let i = 0; i < 400; i++) {
      conns.push(await connect(coordinator.port));
      if (i % 50 === 49) during.push(await probe(coordinator.url));
    }
    console.log(`front door flood: probes ${during.map((ms) => ms.toFixed(1)).join(", ")} ms`);
    assert.ok(Math.max(...during) < 200, `A probe took ${Math.max(...during)} ms`);
    for (const c of conns.splice(0)) c.close();
    await probe(coordinator.url);
    assert.doesNotMatch(coordinator.stderr(), /Cannot accept connections/);
  } finally {
    for (const c of conns) c.close();
    await coordinator.stop();
  }
});

Deno.test("front door - 40 clients declaring 64 MiB bodies and sending 100 bytes: memory stays under 200 MB", async () => {
  const coordinator = await spawnCoordinator();
  const conns: Deno.Conn[] = [];
  try {
    await probe(coordinator.url);
    const before = residentBytes(coordinator.pid);
    for (let i = 0; i < 40; i++) {
      const conn = await startBody(coordinator.port, "/api/chat", "Content-Length: 67108863\r\n");
      conns.push(conn);
      await send(conn, `{"model":"llama3.2","messages":[${" ".repeat(70)}`);
    }
    // Each body is being read once its connection has been told to continue; the 100 bytes
    // are in. A probe through the same event loop makes sure they have been taken in.
    await probe(coordinator.url);
    const after = residentBytes(coordinator.pid);
    const mb = (n: number) => Math.round(n / 1024 / 1024);
    console.log(`front door bodies: RSS ${mb(before)} MB before, ${mb(after)} MB with 40 pending`);
    assert.ok(after < 200 * 1024 * 1024, `RSS reached ${mb(after)} MB`);
  } finally {
    for (const c of conns) c.close();
    await coordinator.stop();
  }
});
