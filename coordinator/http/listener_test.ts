import assert from "node:assert/strict";
import { defaultMaxConnections, type Handler, type ListenerOptions, serve } from "./listener.ts";
import {
  closedByPeer,
  connect,
  exchange,
  readUntil,
  send,
  type ServerProcess,
  spawnListenerServer,
} from "../testing/raw_http.ts";

const GET = (path = "/") => `GET ${path} HTTP/1.1\r\nHost: test\r\n\r\n`;

/** A listener on a free loopback port; `hold` answers once `release()` is called. */
function start(options: Partial<ListenerOptions> = {}, handler?: Handler) {
  const held = Promise.withResolvers<void>();
  const entered = Promise.withResolvers<void>();
  const server = serve(
    { hostname: "127.0.0.1", port: 0, ...options },
    handler ?? (async (req) => {
      if (new URL(req.url).pathname === "/hold") {
        entered.resolve();
        await held.promise;
      }
      return new Response("ok");
    }),
  );
  return { server, port: server.addr.port, release: held.resolve, entered: entered.promise };
}

Deno.test("listener - serves requests and gives the handler remoteAddr and completed", async () => {
  let peer: string | undefined;
  const completed = Promise.withResolvers<void>();
  const { server, port } = start({}, (_req, info) => {
    peer = info.remoteAddr.hostname;
    info.completed.then(completed.resolve);
    return new Response("hello");
  });
  try {
    const res = await fetch(`http://127.0.0.1:${port}/`);
    assert.equal(await res.text(), "hello");
    await completed.promise;
    assert.equal(peer, "127.0.0.1");
    assert.equal(server.stats().accepted, 1);
  } finally {
    await server.shutdown();
  }
});

Deno.test("listener - closes a connection that sent half a request head after the header timeout", async () => {
  const { server, port } = start({ headerTimeoutMs: 50 });
  const conn = await connect(port);
  try {
    await send(conn, "GET / HTTP/1.1\r\nHost: test\r\nX-Slow: ");
    assert.equal(await closedByPeer(conn), "");
    assert.equal(server.stats().timedOut, 1);
  } finally {
    conn.close();
    await server.shutdown();
  }
});

Deno.test("listener - closes a kept-alive idle connection after the idle timeout, never a busy one", async () => {
  const release = Promise.withResolvers<void>();
  const { server, port } = start({ idleTimeoutMs: 50 }, (req) => {
    if (new URL(req.url).pathname !== "/stream") return new Response("ok");
    // A streamed answer: the handler has returned, but the connection is busy until it ends.
    const body = new ReadableStream<Uint8Array>({
      async start(c) {
        c.enqueue(new TextEncoder().encode("first "));
        await release.promise;
        c.enqueue(new TextEncoder().encode("last"));
        c.close();
      },
    });
    return new Response(body);
  });
  const busy = await connect(port);
  const idle = await connect(port);
  try {
    await send(busy, GET("/stream"));
    await readUntil(busy, "first");
    assert.equal((await exchange(idle, GET())).status, 200);
    // A sweep after the idle limit has closed `idle`; the streaming one started before it.
    assert.equal(await closedByPeer(idle), "");
    release.resolve();
    assert.match(await readUntil(busy, "0\r\n\r\n"), /last/);
    assert.equal(server.stats().timedOut, 1);
  } finally {
    busy.close();
    idle.close();
    await server.shutdown();
  }
});

Deno.test("listener - at the cap closes the longest-idle connection to let a new one in", async () => {
  const { server, port } = start({ maxConnections: 2 });
  const a = await connect(port);
  let b: Deno.Conn | undefined, c: Deno.Conn | undefined;
  try {
    await exchange(a, GET());
    b = await connect(port);
    await exchange(b, GET());
    c = await connect(port);
    assert.equal((await exchange(c, GET())).status, 200);
    assert.equal(await closedByPeer(a), "");
    assert.equal((await exchange(b, GET())).status, 200);
    assert.equal(server.stats().evicted, 1);
  } finally {
    for (const conn of [a, b, c]) conn?.close();
    await server.shutdown();
  }
});

Deno.test("listener - at the cap closes a connection that never sent a request before a kept-alive one", async () => {
  const { server, port } = start({ maxConnections: 2 });
  const client = await connect(port);
  let silent: Deno.Conn | undefined, late: Deno.Conn | undefined;
  try {
    await exchange(client, GET());
    // Opened after the client's last request, yet the one to go: it never said anything.
    silent = await connect(port);
    late = await connect(port);
    assert.equal((await exchange(late, GET())).status, 200);
    assert.equal(await closedByPeer(silent), "");
    assert.equal((await exchange(client, GET())).status, 200);
  } finally {
    for (const conn of [client, silent, late]) conn?.close();
    await server.shutdown();
  }
});

Deno.test("listener - at the cap refuses a new connection when every open one is busy", async () => {
  const { server, port, release, entered } = start({ maxConnections: 1 });
  const busy = await connect(port);
  let late: Deno.Conn | undefined;
  try {
    await send(busy, GET("/hold"));
    await entered;
    late = await connect(port);
    assert.equal(await closedByPeer(late), "");
    assert.equal(server.stats().refused, 1);
    release();
    assert.equal(await readUntil(busy, "ok").then((t) => t.startsWith("HTTP/1.1 200")), true);
  } finally {
    busy.close();
    late?.close();
    await server.shutdown();
  }
});

Deno.test("listener - shutdown closes idle connections and lets a request in flight finish", async () => {
  const { server, port, release, entered } = start();
  const idle = await connect(port);
  const busy = await connect(port);
  try {
    await exchange(idle, GET());
    await send(busy, GET("/hold"));
    await entered;
    const stopped = server.shutdown();
    assert.equal(await closedByPeer(idle), "");
    release();
    assert.match(await closedByPeer(busy), /^HTTP\/1.1 200[^]*ok$/);
    await stopped;
    await server.finished;
    await assert.rejects(() => connect(port));
  } finally {
    idle.close();
    busy.close();
  }
});

Deno.test("listener - a client gone in the middle of an answer does not take the server down", async () => {
  // The per-connection server's `finished` rejects (broken pipe) when the client leaves while
  // the answer is being written; left unhandled, that rejection ends the process.
  const big = "x".repeat(4 * 1024 * 1024);
  const { server, port } = start({}, () => new Response(big));
  try {
    for (let i = 0; i < 3; i++) {
      const conn = await connect(port);
      await send(conn, GET() + GET());
      await conn.read(new Uint8Array(1000));
      conn.close();
    }
    const res = await fetch(`http://127.0.0.1:${port}/`);
    assert.equal((await res.text()).length, big.length);
  } finally {
    await server.shutdown();
  }
});

Deno.test("listener - without serveHttpOnConnection falls back to Deno.serve with a warning", async () => {
  const warnings: string[] = [];
  const { server, port } = start({
    serveConnection: null,
    log: (level, msg) => warnings.push(`${level}: ${msg}`),
  });
  try {
    assert.equal(await (await fetch(`http://127.0.0.1:${port}/`)).text(), "ok");
    assert.deepEqual(warnings, [
      "warn: Connection limits and timeouts are off: this Deno lacks serveHttpOnConnection",
    ]);
  } finally {
    await server.shutdown();
  }
});

Deno.test("defaultMaxConnections - keeps a reserve, then half of the rest for upstream sockets", () => {
  assert.equal(defaultMaxConnections(256), 96);
  assert.equal(defaultMaxConnections(1024), 384);
  assert.equal(defaultMaxConnections(20_000), 9_872);
  assert.equal(defaultMaxConnections(1_048_576), 16_384);
  assert.equal(defaultMaxConnections(16), 8);
  assert.equal(defaultMaxConnections(undefined), 1_024);
});

Deno.test("openFileLimit - reads the process's own descriptor limit", async () => {
  const listener = new URL("./listener.ts", import.meta.url).href;
  const out = await new Deno.Command("bash", {
    args: [
      "-c",
      `ulimit -n 300 && exec "$0" eval "import('${listener}').then((m) => console.log(m.openFileLimit(), m.defaultMaxConnections(m.openFileLimit())))"`,
      Deno.execPath(),
    ],
    stderr: "inherit",
  }).output();
  assert.equal(new TextDecoder().decode(out.stdout).trim(), "300 112");
});

/** Opens `count` connections that never send anything. */
async function flood(port: number, count: number, after?: (i: number) => Promise<void>) {
  const conns: Deno.Conn[] = [];
  for (let i = 0; i < count; i++) {
    conns.push(await connect(port));
    await after?.(i);
  }
  return conns;
}

async function probe(url: string): Promise<{ status: number; ms: number }> {
  const t0 = performance.now();
  const res = await fetch(`${url}/version`, { signal: AbortSignal.timeout(10_000) });
  await res.body?.cancel();
  return { status: res.status, ms: performance.now() - t0 };
}

async function stats(server: ServerProcess) {
  return await (await fetch(`${server.url}/stats`)).json();
}

Deno.test("listener - 400 idle connections under 256 descriptors: probes answered during and after", async () => {
  const server = await spawnListenerServer([], { openFiles: 256 });
  let conns: Deno.Conn[] = [];
  try {
    // The first request of each process pays for compiling the server's and fetch's paths.
    assert.equal((await probe(server.url)).status, 200);
    const during: number[] = [];
    conns = await flood(server.port, 400, async (i) => {
      if (i % 50 === 49) {
        const p = await probe(server.url);
        assert.equal(p.status, 200);
        during.push(p.ms);
      }
    });
    // Evicted connections close a moment later: wait for the count to settle at the cap.
    let counters = await stats(server);
    for (let i = 0; i < 100 && counters.open > 96; i++) {
      await new Promise((r) => setTimeout(r, 10));
      counters = await stats(server);
    }
    console.log(
      `listener flood: probes during ${during.map((ms) => ms.toFixed(1)).join(", ")} ms; ` +
        `open ${counters.open}, cap ${counters.maxConnections}, evicted ${counters.evicted}`,
    );
    // The bar: a probe is answered within 200 ms throughout the attack.
    assert.ok(Math.max(...during) < 200, `A probe took ${Math.max(...during)} ms`);
    assert.equal(counters.maxConnections, 96);
    assert.ok(counters.open <= 96);
    assert.ok(counters.evicted >= 400 - 96);
    assert.equal(counters.acceptErrors, 0);
    for (const c of conns) c.close();
    conns = [];
    assert.equal((await probe(server.url)).status, 200);
  } finally {
    for (const c of conns) c.close();
    await server.stop();
  }
});

Deno.test("listener - runs out of descriptors, logs it once and accepts again", async () => {
  // A cap above the descriptor limit: accept itself fails with "Too many open files".
  const server = await spawnListenerServer(["--max-connections", "1000"], { openFiles: 256 });
  let conns: Deno.Conn[] = [];
  try {
    conns = await flood(server.port, 400);
    assert.equal((await probe(server.url)).status, 200);
    const counters = await stats(server);
    assert.ok(counters.acceptErrors > 0, "No accept failed: the flood did not reach the limit");
    for (const c of conns) c.close();
    conns = [];
    assert.equal((await probe(server.url)).status, 200);
    // One burst, one line each way, however many accepts failed.
    assert.equal(server.stderr().match(/Cannot accept connections/g)?.length, 1);
    assert.equal(server.stderr().match(/Accepting connections again/g)?.length, 1);
  } finally {
    for (const c of conns) c.close();
    await server.stop();
  }
});
