/**
 * The abuse watcher's one re-send, against a real TCP server that ends connections the two ways the
 * coordinator does at its cap: a close (FIN) and, when the request was still unread, a reset (RST).
 */
import assert from "node:assert/strict";
import net from "node:net";
import { fetchOnceMore } from "./abuse_watcher.ts";

type Plan = "reset" | "close" | "answer";

/** Ends the n-th connection as `plans[n]` says once its request arrives; later ones answer 200. */
async function server(plans: Plan[]) {
  let accepted = 0;
  const srv = net.createServer((socket) => {
    const plan = plans[accepted++] ?? "answer";
    socket.once("data", () => {
      if (plan === "reset") socket.resetAndDestroy();
      else if (plan === "close") socket.end();
      else socket.end("HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
    });
  });
  await new Promise<void>((resolve) => srv.listen(0, "127.0.0.1", resolve));
  const { port } = srv.address() as net.AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/api/version`,
    accepted: () => accepted,
    close: () => new Promise<void>((resolve) => srv.close(() => resolve())),
  };
}

for (const plan of ["reset", "close"] as const) {
  Deno.test(`abuse watcher - a request whose connection got a ${plan} goes out once more`, async () => {
    const s = await server([plan]);
    let resent = 0;
    try {
      const res = await fetchOnceMore(s.url, () => ({}), () => resent++);
      assert.equal(res.status, 200);
      assert.equal(await res.text(), "ok");
      assert.equal(resent, 1);
      assert.equal(s.accepted(), 2);
    } finally {
      await s.close();
    }
  });
}

Deno.test("abuse watcher - a second reset, or any other failure, is not retried", async () => {
  const s = await server(["reset", "reset"]);
  let resent = 0;
  try {
    await assert.rejects(
      fetchOnceMore(s.url, () => ({}), () => resent++),
      (e: Error) => /reset by peer/.test(String(e.cause)),
    );
    assert.equal(resent, 1);
    assert.equal(s.accepted(), 2);
  } finally {
    await s.close();
  }
  // Nothing listens on the port any more: refused, which is no closed connection, so no retry.
  resent = 0;
  await assert.rejects(fetchOnceMore(s.url, () => ({}), () => resent++));
  assert.equal(resent, 0);
});
