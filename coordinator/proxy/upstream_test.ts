import assert from "node:assert/strict";
import { UpstreamClient, UpstreamError, type UpstreamResponse } from "./upstream.ts";
import { collectGarbage } from "../testing/gc.ts";

const assertEquals = (actual: unknown, expected: unknown) => assert.deepEqual(actual, expected);

/** Awaits a rejection of the given class (and message part); returns the error. */
async function assertRejects<E extends Error>(
  fn: () => Promise<unknown>,
  // deno-lint-ignore no-explicit-any
  type: new (...args: any[]) => E,
  includes?: string,
): Promise<E> {
  try {
    await fn();
  } catch (e) {
    assert(e instanceof type, `expected ${type.name}, got ${e}`);
    if (includes) assert(e.message.includes(includes), `"${e.message}" lacks "${includes}"`);
    return e;
  }
  throw new assert.AssertionError({ message: "expected a rejection" });
}

const enc = new TextEncoder();
const dec = new TextDecoder();

/**
 * A raw TCP server that answers each request with the byte strings `answer` gives, written
 * one by one with a pause between them, so chunk boundaries land anywhere.
 */
function rawServer(
  answer: (request: string, n: number) => (string | Uint8Array)[] | "close",
  options: { keepOpen?: boolean; pauseMs?: number } = {},
) {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns = new Set<Deno.Conn>();
  const requests: string[] = [];
  let accepted = 0;
  const serve = async () => {
    for await (const conn of listener) {
      accepted++;
      conns.add(conn);
      (async () => {
        const buf = new Uint8Array(65536);
        let pending = "";
        try {
          for (;;) {
            const n = await conn.read(buf);
            if (n === null) break;
            pending += dec.decode(buf.subarray(0, n));
            // One request per head (+ content-length body).
            for (;;) {
              const end = pending.indexOf("\r\n\r\n");
              if (end === -1) break;
              const len = Number(/content-length: (\d+)/i.exec(pending.slice(0, end))?.[1] ?? 0);
              if (pending.length < end + 4 + len) break;
              const request = pending.slice(0, end + 4 + len);
              pending = pending.slice(end + 4 + len);
              requests.push(request);
              const parts = answer(request, requests.length);
              if (parts === "close") {
                conn.close();
                conns.delete(conn);
                return;
              }
              for (const p of parts) {
                await conn.write(typeof p === "string" ? enc.encode(p) : p);
                if (options.pauseMs) await new Promise((r) => setTimeout(r, options.pauseMs));
              }
              if (!options.keepOpen) {
                conn.close();
                conns.delete(conn);
                return;
              }
            }
          }
        } catch { /* closed */ }
        try {
          conn.close();
        } catch { /* closed */ }
        conns.delete(conn);
      })();
    }
  };
  const done = serve().catch(() => {});
  const port = (listener.addr as Deno.NetAddr).port;
  return {
    baseUrl: `http://127.0.0.1:${port}`,
    requests,
    accepted: () => accepted,
    /** Closes the kept-alive connections, as a server does with idle ones. */
    dropConnections() {
      for (const c of conns) {
        try {
          c.close();
        } catch { /* closed */ }
      }
      conns.clear();
    },
    async close() {
      this.dropConnections();
      listener.close();
      await done;
    },
  };
}

function request(baseUrl: string, body: string | null = '{"model":"m"}', signal?: AbortSignal) {
  return {
    baseUrl,
    method: "POST",
    path: "/api/chat?x=1",
    headers: [["content-type", "application/json"]] as [string, string][],
    body: body === null ? null : enc.encode(body),
    signal: signal ?? new AbortController().signal,
  };
}

async function text(res: UpstreamResponse): Promise<string> {
  return dec.decode(await res.readAll());
}

async function pieces(res: UpstreamResponse): Promise<string[]> {
  const out: string[] = [];
  for (let p = await res.read(); p; p = await res.read()) out.push(dec.decode(p));
  return out;
}

Deno.test("upstream - sends the method, path, host, headers and body in one request", async () => {
  const server = rawServer(() => ["HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"]);
  const client = new UpstreamClient();
  const res = await client.request(request(server.baseUrl, '{"model":"llama3.2"}'));
  assertEquals(res.status, 200);
  assertEquals(await text(res), "ok");
  const sent = server.requests[0];
  assert(sent.startsWith("POST /api/chat?x=1 HTTP/1.1\r\n"));
  assert(sent.includes(`host: ${server.baseUrl.slice(7)}\r\n`));
  assert(sent.includes("content-type: application/json\r\n"));
  assert(sent.includes("content-length: 20\r\n"));
  assert(sent.endsWith('\r\n\r\n{"model":"llama3.2"}'));
  client.close();
  await server.close();
});

Deno.test("upstream - decodes chunked bodies split anywhere, extensions and trailers included", async () => {
  const body =
    "5;ext=1\r\nhello\r\n1\r\n \r\nA\r\n0123456789\r\nb\r\nhello world\r\n0\r\nx-trailer: 1\r\n\r\n";
  // Every split point of the chunked body, byte by byte.
  const parts = ["HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n"];
  for (const ch of body) parts.push(ch);
  const server = rawServer(() => parts, { pauseMs: 1 });
  const client = new UpstreamClient();
  const res = await client.request(request(server.baseUrl));
  assertEquals(res.headers, [["transfer-encoding", "chunked"], ["x-a", "1"]]);
  assertEquals((await pieces(res)).join(""), "hello 0123456789hello world");
  client.close();
  await server.close();
});

Deno.test("upstream - chunks that arrive together are handed on together", async () => {
  const chunk = (s: string) => `${s.length.toString(16)}\r\n${s}\r\n`;
  const server = rawServer(() => [
    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk('{"a":1}\n'),
    chunk('{"b":2}\n') + chunk('{"c":3}\n') + "0\r\n\r\n",
  ], { pauseMs: 20 });
  const client = new UpstreamClient();
  const res = await client.request(request(server.baseUrl));
  const got = await pieces(res);
  assertEquals(got.join(""), '{"a":1}\n{"b":2}\n{"c":3}\n');
  assert(got.length <= 2, `expected coalesced pieces, got ${got.length}`);
  client.close();
  await server.close();
});

Deno.test("upstream - keeps connections alive and reuses them", async () => {
  const server = rawServer(
    (_r, n) => [`HTTP/1.1 200 OK\r\nContent-Length: ${String(n).length}\r\n\r\n${n}`],
    { keepOpen: true },
  );
  const client = new UpstreamClient();
  for (let i = 1; i <= 5; i++) {
    assertEquals(await text(await client.request(request(server.baseUrl))), String(i));
  }
  assertEquals(server.accepted(), 1);
  client.close();
  await server.close();
});

Deno.test("upstream - a kept-alive connection the agent closed is replaced without an error", async () => {
  const server = rawServer(
    () => ["HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"],
    { keepOpen: true },
  );
  const client = new UpstreamClient();
  assertEquals(await text(await client.request(request(server.baseUrl))), "ok");
  server.dropConnections();
  await new Promise((r) => setTimeout(r, 20));
  assertEquals(await text(await client.request(request(server.baseUrl))), "ok");
  assertEquals(server.accepted(), 2);
  client.close();
  await server.close();
});

Deno.test("upstream - Connection: close and close-delimited bodies are not reused", async () => {
  const server = rawServer((_r, n) =>
    n === 1
      ? ["HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: close\r\n\r\na"]
      : ["HTTP/1.0 200 OK\r\n\r\nuntil ", "the end"]
  );
  const client = new UpstreamClient();
  assertEquals(await text(await client.request(request(server.baseUrl))), "a");
  assertEquals(await text(await client.request(request(server.baseUrl))), "until the end");
  assertEquals(server.accepted(), 2);
  client.close();
  await server.close();
});

Deno.test("upstream - 1xx answers are skipped; HEAD and 204 have no body", async () => {
  const server = rawServer(
    (r) =>
      r.startsWith("HEAD")
        ? ["HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n"]
        : r.includes("no-content")
        ? ["HTTP/1.1 204 No Content\r\n\r\n"]
        : ["HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 1\r\n\r\n!"],
    {
      keepOpen: true,
    },
  );
  const client = new UpstreamClient();
  const created = await client.request(request(server.baseUrl));
  assertEquals([created.status, await text(created)], [201, "!"]);
  const head = await client.request({ ...request(server.baseUrl, null), method: "HEAD" });
  assertEquals([head.status, await text(head)], [200, ""]);
  const none = await client.request({ ...request(server.baseUrl, null), path: "/no-content" });
  assertEquals([none.status, await text(none)], [204, ""]);
  assertEquals(server.accepted(), 1);
  client.close();
  await server.close();
});

Deno.test("upstream - refused, cut and malformed answers are errors of their kind", async () => {
  const client = new UpstreamClient();
  const free = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (free.addr as Deno.NetAddr).port;
  free.close();
  const refused = await assertRejects(
    () => client.request(request(`http://127.0.0.1:${port}`)),
    UpstreamError,
  );
  assertEquals(refused.kind, "refused");

  const cut = rawServer(() => ["HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"]);
  const res = await client.request(request(cut.baseUrl));
  const lost = await assertRejects(() => res.readAll(), UpstreamError);
  assertEquals(lost.kind, "lost");
  await cut.close();

  const closed = rawServer(() => "close");
  const e = await assertRejects(() => client.request(request(closed.baseUrl)), UpstreamError);
  assertEquals(e.kind, "lost");
  await closed.close();

  // A header no Response could carry (a NUL, a name that is not a token) makes the head malformed.
  for (
    const bad of [
      "SMTP ready\r\n\r\n",
      "HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
      "HTTP/1.1 200 OK\r\nx-bad: a\0b\r\nContent-Length: 0\r\n\r\n",
      "HTTP/1.1 200 OK\r\nx(bad): ab\r\nContent-Length: 0\r\n\r\n",
      "HTTP/1.1 200 OK\r\nx bad: ab\r\nContent-Length: 0\r\n\r\n",
    ]
  ) {
    const server = rawServer(() => [bad]);
    const err = await assertRejects(() => client.request(request(server.baseUrl)), UpstreamError);
    assertEquals(err.kind, "protocol");
    await server.close();
  }
  const badChunk = rawServer(() => ["HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"]);
  const r = await client.request(request(badChunk.baseUrl));
  assertEquals((await assertRejects(() => r.readAll(), UpstreamError)).kind, "protocol");
  await badChunk.close();
  client.close();
});

Deno.test("upstream - a head that never ends is refused", async () => {
  const server = rawServer(() => ["HTTP/1.1 200 OK\r\n", "x-big: " + "a".repeat(70_000)]);
  const client = new UpstreamClient();
  const e = await assertRejects(() => client.request(request(server.baseUrl)), UpstreamError);
  assertEquals(e.kind, "protocol");
  client.close();
  await server.close();
});

Deno.test("upstream - aborting closes the connection while waiting for the head or the body", async () => {
  let sawClose = 0;
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const serving = (async () => {
    for await (const conn of listener) {
      (async () => {
        const buf = new Uint8Array(4096);
        let first = true;
        for (;;) {
          const n = await conn.read(buf).catch(() => null);
          if (n === null) break;
          if (first && dec.decode(buf.subarray(0, n)).includes("/body")) {
            await conn.write(enc.encode("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"));
          }
          first = false;
        }
        sawClose++;
        conn.close();
      })();
    }
  })().catch(() => {});
  const baseUrl = `http://127.0.0.1:${(listener.addr as Deno.NetAddr).port}`;
  const client = new UpstreamClient();

  const early = new AbortController();
  const pending = client.request(request(baseUrl, "{}", early.signal));
  setTimeout(() => early.abort(new Error("client left")), 30);
  await assertRejects(() => pending, Error, "client left");

  const late = new AbortController();
  const res = await client.request({ ...request(baseUrl, "{}", late.signal), path: "/body" });
  const reading = res.read();
  late.abort(new Error("client left"));
  await assertRejects(() => reading, Error, "client left");

  for (let i = 0; i < 50 && sawClose < 2; i++) await new Promise((r) => setTimeout(r, 10));
  assertEquals(sawClose, 2);
  client.close();
  listener.close();
  await serving;
});

Deno.test("upstream - an answer being read does not hold on to the request's body", async () => {
  // A stream can last minutes, and a prompt with its chat history can be large.
  const server = rawServer(() => [
    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
    "5\r\nfirst\r\n",
  ], { keepOpen: true });
  const client = new UpstreamClient();
  let req: ReturnType<typeof request> | undefined = request(server.baseUrl, "x".repeat(10_000));
  const body = new WeakRef(req.body!);
  const res = await client.request(req);
  req = undefined;
  assertEquals(dec.decode((await res.read())!), "first");
  await collectGarbage();
  assertEquals(body.deref(), undefined);
  res.cancel();
  client.close();
  await server.close();
});

Deno.test("upstream - readAll enforces its limit", async () => {
  const server = rawServer(() => ["HTTP/1.1 500 Oops\r\nContent-Length: 100000\r\n\r\n"]);
  const client = new UpstreamClient();
  const res = await client.request(request(server.baseUrl));
  assertEquals(res.status, 500);
  await assertRejects(() => res.readAll(1024), UpstreamError, "too large");
  client.close();
  await server.close();
});

Deno.test("upstream - heads longer than the first buffer and large bodies are read whole", async () => {
  const big = "x".repeat(1_000_000);
  const chunked = Array.from({ length: 100 }, () => `2710\r\n${"y".repeat(10_000)}\r\n`).join("");
  const server = rawServer(
    (_r, n) =>
      n === 1
        ? [
          `HTTP/1.1 200 OK\r\nx-long: ${"h".repeat(20_000)}\r\nContent-Length: 1000000\r\n\r\n`,
          big,
        ]
        : [`HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n${chunked}0\r\n\r\n`],
    {
      keepOpen: true,
    },
  );
  const client = new UpstreamClient();
  const first = await client.request(request(server.baseUrl));
  assertEquals(first.headers[0][1].length, 20_000);
  assertEquals((await first.readAll()).byteLength, 1_000_000);
  const second = await client.request(request(server.baseUrl));
  const body = await second.readAll();
  assertEquals(body.byteLength, 1_000_000);
  assert(body.every((b) => b === 121));
  assertEquals(server.accepted(), 1);
  client.close();
  await server.close();
});

Deno.test("upstream - cutAll ends requests in flight with its reason and refuses new ones", async () => {
  const server = rawServer(
    () => ["HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n"],
    {
      keepOpen: true,
    },
  );
  const client = new UpstreamClient();
  const res = await client.request(request(server.baseUrl));
  assertEquals(dec.decode((await res.read())!), "abc");
  const reading = res.read();
  client.cutAll("shutting down");
  const cut = await assertRejects(() => reading, UpstreamError, "shutting down");
  assertEquals(cut.kind, "cut");
  const refused = await assertRejects(() => client.request(request(server.baseUrl)), UpstreamError);
  assertEquals(refused.kind, "cut");
  await server.close();
});
