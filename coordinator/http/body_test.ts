import assert from "node:assert/strict";
import { BodyError, readBody } from "./body.ts";
import { collectGarbage } from "../testing/gc.ts";
import { serve } from "./listener.ts";
import {
  closedByPeer,
  connect,
  exchange,
  residentBytes,
  send,
  spawnListenerServer,
} from "../testing/raw_http.ts";

/** A server answering the body's length, or the BodyError's status and message. */
function start(
  options: { limit?: number; timeoutMs?: number; idleTimeoutMs?: number; bodyTimeoutMs?: number } =
    {},
) {
  const errors: unknown[] = [];
  const entered = Promise.withResolvers<void>();
  const server = serve({
    hostname: "127.0.0.1",
    port: 0,
    idleTimeoutMs: options.idleTimeoutMs,
    bodyTimeoutMs: options.bodyTimeoutMs,
  }, async (req) => {
    entered.resolve();
    try {
      const { limit = 1000, timeoutMs } = options;
      const bytes = await readBody(req, { limit, timeoutMs });
      return new Response(String(bytes.byteLength));
    } catch (error) {
      errors.push(error);
      if (error instanceof BodyError) return new Response(error.message, { status: error.status });
      throw error;
    }
  });
  const port = server.addr.port;
  return { server, port, url: `http://127.0.0.1:${port}`, errors, entered: entered.promise };
}

const head = (headers: string, path = "/") =>
  `POST ${path} HTTP/1.1\r\nHost: test\r\n${headers}\r\n`;

Deno.test("readBody - reads a body with a declared length, and none for GET", async () => {
  const { server, url } = start();
  try {
    const res = await fetch(url, { method: "POST", body: "x".repeat(1000) });
    assert.equal(await res.text(), "1000");
    assert.equal(await (await fetch(url)).text(), "0");
  } finally {
    await server.shutdown();
  }
});

Deno.test("readBody - a body holds no more memory than its bytes", async () => {
  // Deno hands a body of a few hundred bytes or more over as a view of a 64 KiB buffer.
  const server = serve({ hostname: "127.0.0.1", port: 0 }, async (req) => {
    const bytes = await readBody(req, { limit: 10_000 });
    return new Response(`${bytes.byteLength} ${bytes.buffer.byteLength}`);
  });
  try {
    const url = `http://127.0.0.1:${server.addr.port}`;
    const res = await fetch(url, { method: "POST", body: "x".repeat(2000) });
    assert.equal(await res.text(), "2000 2000");
  } finally {
    await server.shutdown();
  }
});

Deno.test("readBody - a request being answered holds its body's bytes and no more", async () => {
  // Twenty requests whose answers stream on: what stays allocated outside the JS heap.
  const answers: ReadableStreamDefaultController<Uint8Array>[] = [];
  const server = serve({ hostname: "127.0.0.1", port: 0 }, async (req) => {
    const bytes = await readBody(req, { limit: 10_000 });
    return new Response(
      new ReadableStream({
        start(c) {
          c.enqueue(new TextEncoder().encode(String(bytes.byteLength)));
          answers.push(c);
        },
      }),
    );
  });
  const readers: ReadableStreamDefaultReader<Uint8Array>[] = [];
  try {
    const url = `http://127.0.0.1:${server.addr.port}`;
    await collectGarbage();
    const before = Deno.memoryUsage().external;
    for (let i = 0; i < 20; i++) {
      const res = await fetch(url, { method: "POST", body: "x".repeat(2000) });
      const reader = res.body!.getReader();
      readers.push(reader);
      assert.equal(new TextDecoder().decode((await reader.read()).value), "2000");
    }
    await collectGarbage();
    const perRequest = (Deno.memoryUsage().external - before) / 20;
    assert.ok(perRequest < 16 * 1024, `${Math.round(perRequest / 1024)} KiB per request`);
  } finally {
    for (const c of answers) c.close();
    for (const r of readers) await r.cancel();
    await server.shutdown();
  }
});

Deno.test("readBody - the connection stays alive after bodies of a declared length", async () => {
  const { server, port } = start({ limit: 100_000 });
  const conn = await connect(port);
  try {
    for (const size of [2000, 70_000, 10]) {
      const res = await exchange(conn, head(`Content-Length: ${size}\r\n`) + "y".repeat(size));
      assert.equal(res.status, 200);
      assert.equal(res.body, String(size));
      assert.notEqual(res.headers.get("connection"), "close");
    }
  } finally {
    conn.close();
    await server.shutdown();
  }
});

Deno.test("readBody - reads a chunked body sent in pieces", async () => {
  const { server, port } = start();
  const conn = await connect(port);
  try {
    await send(conn, head("Transfer-Encoding: chunked\r\n") + "3\r\nabc\r\n");
    await send(conn, "4\r\ndefg\r\n");
    const res = await exchange(conn, "0\r\n\r\n");
    assert.equal(res.body, "7");
  } finally {
    conn.close();
    await server.shutdown();
  }
});

Deno.test("readBody - refuses a declared length above the limit before the body is sent", async () => {
  const { server, port } = start({ limit: 1000 });
  const conn = await connect(port);
  try {
    const res = await exchange(conn, head("Content-Length: 1001\r\n"));
    assert.equal(res.status, 413);
    assert.equal(res.body, "Request body is larger than 1000 bytes");
  } finally {
    conn.close();
    await server.shutdown();
  }
});

Deno.test("readBody - refuses a chunked body once it grows past the limit", async () => {
  const { server, port } = start({ limit: 1000 });
  const conn = await connect(port);
  try {
    const chunk = `258\r\n${"y".repeat(600)}\r\n`;
    await send(conn, head("Transfer-Encoding: chunked\r\n") + chunk);
    // The second chunk goes over; the end of the body is never sent.
    const res = await exchange(conn, chunk);
    assert.equal(res.status, 413);
  } finally {
    conn.close();
    await server.shutdown();
  }
});

Deno.test("readBody - answers 408 when the body is slower than its time limit, then closes", async () => {
  // The idle limit sets how long the answer gets to go out before the connection is cut.
  const { server, port } = start({ timeoutMs: 50, idleTimeoutMs: 50 });
  const conn = await connect(port);
  try {
    const res = await exchange(conn, head("Content-Length: 100\r\n") + "only ten b");
    assert.equal(res.status, 408);
    assert.equal(res.body, "Request body did not arrive within 0.05 s");
    // The rest of that body will never come: the connection is closed, not kept alive.
    assert.equal(await closedByPeer(conn), "");
  } finally {
    conn.close();
    await server.shutdown();
  }
});

Deno.test("readBody - takes its time limit from the listener that accepted the request", async () => {
  const { server, port } = start({ bodyTimeoutMs: 50, idleTimeoutMs: 50 });
  const conn = await connect(port);
  try {
    const res = await exchange(conn, head("Content-Length: 100\r\n") + "only ten b");
    assert.equal(res.status, 408);
  } finally {
    conn.close();
    await server.shutdown();
  }
});

for (
  const [name, bad] of [
    ["malformed chunked encoding", "zz\r\nabc\r\n"],
    ["an overlong chunk extension", `3;ext=${"e".repeat(100_000)}\r\nabc\r\n0\r\n\r\n`],
  ]
) {
  Deno.test(`readBody - ${name} is a 400`, async () => {
    const { server, port, errors, entered } = start();
    const conn = await connect(port);
    try {
      // Sent with the head, a bad body makes the server drop the connection before any
      // handler runs; sent once the handler reads, it is the handler's to answer.
      await send(conn, head("Transfer-Encoding: chunked\r\n"));
      await entered;
      await send(conn, bad);
      assert.match(await closedByPeer(conn), /^HTTP\/1.1 400 [^]*Cannot read the request body: /);
      assert.ok(errors[0] instanceof BodyError);
      assert.equal(errors[0].status, 400);
    } finally {
      conn.close();
      await server.shutdown();
    }
  });
}

Deno.test("readBody - memory follows the bytes that arrived, not the 64 MiB each client declared", async () => {
  const server = await spawnListenerServer();
  const conns: Deno.Conn[] = [];
  try {
    const before = residentBytes(server.pid);
    for (let i = 0; i < 40; i++) {
      const conn = await connect(server.port);
      conns.push(conn);
      await send(conn, head("Content-Length: 67108863\r\n", "/echo") + "z".repeat(100));
    }
    // Wait until all forty bodies are being read.
    let reading = 0;
    for (let i = 0; i < 500 && reading < 40; i++) {
      reading = (await (await fetch(`${server.url}/stats`)).json()).reading;
      if (reading < 40) await new Promise((r) => setTimeout(r, 10));
    }
    assert.equal(reading, 40);
    const after = residentBytes(server.pid);
    const mb = (n: number) => Math.round(n / 1024 / 1024);
    console.log(`body reader: RSS ${mb(before)} MB before, ${mb(after)} MB with 40 bodies pending`);
    assert.ok(after < 200 * 1024 * 1024, `RSS reached ${mb(after)} MB`);
  } finally {
    for (const c of conns) c.close();
    await server.stop();
  }
});
