/**
 * The floor for `deno task bench`: the least a Deno proxy can do (Deno.serve in, the
 * coordinator's upstream client out, bytes piped) with no routing, scheduling, logging or
 * security. What the coordinator adds beyond this row is its own cost; this row is Deno's.
 *
 * It samples its event loop's delay with the coordinator's own sampler and serves it at
 * `GET /metrics` in the coordinator's format, so the bench reads the floor's delay as it reads
 * the coordinator's: what a loop serving the same load with nothing else to do shows.
 *
 * Usage: deno run -A scripts/bench/passthrough.ts UPSTREAM_URL PORT
 */
import { UpstreamClient } from "../../coordinator/proxy/upstream.ts";
import { EventLoopDelay } from "../../coordinator/telemetry/metrics.ts";

const [upstream, port] = Deno.args;
const client = new UpstreamClient();
const HOP = new Set(["connection", "keep-alive", "transfer-encoding", "content-length"]);
const loop = new EventLoopDelay();
loop.start();

Deno.serve({
  hostname: "127.0.0.1",
  port: Number(port),
  onListen() {},
  // A client that leaves mid-request (wrk stopping) is not news.
  onError: () => new Response(null, { status: 502 }),
}, async (req) => {
  if (req.method === "GET" && req.url.endsWith("/metrics")) {
    const out: string[] = [];
    loop.render(out);
    return new Response(out.join("\n") + "\n");
  }
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
