/**
 * The floor for bench:scale's stream memory: a bare Deno.serve that answers every request with
 * a slow NDJSON stream (lines at 4 per second, like the simulator, for four minutes or until the
 * client leaves), with no proxy behind it.
 * What it holds per open stream is what Deno itself costs.
 *
 * Usage: deno run -A scripts/bench/stream_floor.ts PORT
 */
const encoder = new TextEncoder();

Deno.serve({ hostname: "127.0.0.1", port: Number(Deno.args[0]), onListen() {} }, (req) => {
  // `?lines=N` for short warm-up requests.
  const lines = Number(new URL(req.url).searchParams.get("lines") ?? 1000);
  let n = 0;
  let timer: ReturnType<typeof setInterval>;
  const body = new ReadableStream<Uint8Array>({
    start(controller) {
      timer = setInterval(() => {
        const done = ++n >= lines;
        controller.enqueue(
          encoder.encode(JSON.stringify({ model: "llama3.2", response: ` w${n}`, done }) + "\n"),
        );
        if (done) {
          clearInterval(timer);
          controller.close();
        }
      }, 250);
    },
    cancel: () => clearInterval(timer),
  }, { highWaterMark: 0 });
  return new Response(body, { headers: { "content-type": "application/x-ndjson" } });
});
