/**
 * The upstream of `deno task bench`: the least an Ollama-like server can do, so that the proxies
 * in front of it, not it, are what the benchmark measures. Every answer is prepared bytes:
 *
 * - `POST /api/chat` with `"stream": false`: one chat reply of `options.num_predict` tokens
 *   (default 8), all at once, in Ollama's shape with its usage fields;
 * - `POST /api/chat` streaming: one NDJSON line per token, each its own chunk (as Ollama flushes
 *   every token), as fast as the client reads, then the final line;
 * - `GET /` and `GET /api/tags`, for the coordinator's health probe and the agent registration.
 *
 * The bench prints its direct rate beside the proxies' rates, so a reader can check it is well
 * above them.
 *
 * Several processes can share one port (`reusePort`), so the upstream can use every core.
 *
 * Usage: deno run -A --unstable-net scripts/bench/upstream.ts PORT (prints "listening" when it is)
 *
 * @module
 */
const encoder = new TextEncoder();
const MODEL = "llama3.2:latest";
const CREATED = "2025-01-01T00:00:00.000000000Z";
const JSON_HEADERS = { "content-type": "application/json; charset=utf-8" };
const NDJSON_HEADERS = { "content-type": "application/x-ndjson" };
const TAGS = encoder.encode(JSON.stringify({
  models: [{
    name: MODEL,
    model: MODEL,
    modified_at: CREATED,
    size: 2019393189,
    digest: "a80c4f17acd55265feec403c7aef86be0c25983ab279d83f3bcd3abbcb5b8b72",
    details: {
      parent_model: "",
      format: "gguf",
      family: "llama",
      families: ["llama"],
      parameter_size: "3.2B",
      quantization_level: "Q4_K_M",
    },
  }],
}));

function usage(tokens: number) {
  return {
    total_duration: 1_000_000 + tokens * 1000,
    load_duration: 100_000,
    prompt_eval_count: 2,
    prompt_eval_duration: 50_000,
    eval_count: tokens,
    eval_duration: tokens * 1000,
  };
}

function line(o: unknown): Uint8Array<ArrayBuffer> {
  return encoder.encode(JSON.stringify(o) + "\n");
}

const whole = new Map<number, Uint8Array<ArrayBuffer>>();
/** The non-streaming reply of `tokens` tokens, built once per length. */
function wholeReply(tokens: number): Uint8Array<ArrayBuffer> {
  let bytes = whole.get(tokens);
  if (!bytes) {
    const content = Array.from({ length: tokens }, (_, i) => (i ? " word" : "Word")).join("");
    bytes = encoder.encode(JSON.stringify({
      model: MODEL,
      created_at: CREATED,
      message: { role: "assistant", content },
      done: true,
      done_reason: "length",
      ...usage(tokens),
    }));
    whole.set(tokens, bytes);
  }
  return bytes;
}

const TOKEN_LINE = line({
  model: MODEL,
  created_at: CREATED,
  message: { role: "assistant", content: " word" },
  done: false,
});
const finals = new Map<number, Uint8Array<ArrayBuffer>>();
function finalLine(tokens: number): Uint8Array<ArrayBuffer> {
  let bytes = finals.get(tokens);
  if (!bytes) {
    bytes = line({
      model: MODEL,
      created_at: CREATED,
      message: { role: "assistant", content: "" },
      done: true,
      done_reason: "length",
      ...usage(tokens),
    });
    finals.set(tokens, bytes);
  }
  return bytes;
}

function streamReply(tokens: number): Response {
  let sent = 0;
  return new Response(
    new ReadableStream<Uint8Array>({
      pull(controller) {
        if (sent < tokens) controller.enqueue(TOKEN_LINE);
        else {
          controller.enqueue(finalLine(tokens));
          controller.close();
        }
        sent++;
      },
    }, { highWaterMark: 0 }),
    { headers: NDJSON_HEADERS },
  );
}

async function chat(req: Request): Promise<Response> {
  const body = await req.json();
  const n = body?.options?.num_predict;
  const tokens = Number.isInteger(n) && n >= 0 ? n : 8;
  return body?.stream === false
    ? new Response(wholeReply(tokens), { headers: JSON_HEADERS })
    : streamReply(tokens);
}

/** Serves the bench upstream on 127.0.0.1:`port` (0 picks a free one). */
export function serveUpstream(
  port: number,
  options: { reusePort?: boolean; onListen?: () => void } = {},
): Deno.HttpServer<Deno.NetAddr> {
  return Deno.serve({
    hostname: "127.0.0.1",
    port,
    reusePort: options.reusePort,
    onListen: options.onListen ?? (() => {}),
    // A client that leaves mid-request (wrk stopping) is not news.
    onError: () => new Response(null, { status: 500 }),
  }, (req) => {
    const path = new URL(req.url).pathname;
    if (req.method === "POST" && path === "/api/chat") return chat(req);
    if (path === "/api/tags") return new Response(TAGS, { headers: JSON_HEADERS });
    if (path === "/") return new Response("Ollama is running");
    return new Response('{"error":"not found"}', { status: 404, headers: JSON_HEADERS });
  });
}

if (import.meta.main) {
  serveUpstream(Number(Deno.args[0] ?? 11434), {
    reusePort: true,
    onListen: () => console.log("listening"),
  });
}
