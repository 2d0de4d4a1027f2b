/**
 * The floor for `deno task bench`: the least a Deno proxy can do (Deno.serve in, the
 * coordinator's upstream client out, bytes piped) with no routing, scheduling, logging or
 * security. What the coordinator adds beyond this row is its own cost; this row is Deno's.
 *
 * Usage: deno run -A scripts/bench/passthrough.ts UPSTREAM_URL PORT
 */
import { UpstreamClient } from "../../coordinator/proxy/upstream.ts";

const [upstream, port] = Deno.args;
const client = new UpstreamClient();
const HOP = new Set(["connection", "keep-alive", "transfer-encoding", "content-length"]);

Deno.serve({
  hostname: "127.0.0.1",
  port: Number(port),
  onListen() {},
  // A client that leaves mid-request (wrk stopping) is not news.
  onError: () => new Response(null, { status: 502 }),
}, async (req) => {
  const body = req.body ? new Uint8Array(await req.arrayBuffer()) : null;
  const url = new URL(req.url);
  const type = req.headers.get("content-type");
  const res = await client.request({
    baseUrl: upstream,
    method: req.method,
    path: url.pathname + url.search,
    headers: type ? [["content-type", type]] : [],
    body,
    signal: req.signal,
  });
  const headers = res.headers.filter(([name]) => !HOP.has(name));
  const chunked = res.headers.some(([n, v]) => n === "transfer-encoding" && /chunked/i.test(v));
  if (!chunked) return new Response(await res.readAll(), { status: res.status, headers });
  return new Response(
    new ReadableStream<Uint8Array>({
      async pull(controller) {
        const piece = await res.read();
        if (piece) controller.enqueue(piece);
        else controller.close();
      },
      cancel: () => res.cancel(),
    }, { highWaterMark: 0 }),
    { status: res.status, headers },
  );
});
