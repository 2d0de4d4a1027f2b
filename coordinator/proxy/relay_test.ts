import assert from "node:assert/strict";
import type { Flavor } from "../http/errors.ts";
import { relay, type RelayResult } from "./relay.ts";
import { UpstreamError, type UpstreamResponse } from "./upstream.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** An agent's answer that gives these chunks one read each, then ends or fails. */
function upstream(chunks: string[], options: { fails?: boolean } = {}): UpstreamResponse {
  const queue = chunks.slice(1).map((c) => encoder.encode(c));
  return {
    status: 200,
    headers: [],
    read() {
      const next = queue.shift();
      if (next) return Promise.resolve(next);
      return options.fails
        ? Promise.reject(new UpstreamError("Connection reset", "lost"))
        : Promise.resolve(null);
    },
    readAll: () => Promise.reject(new Error("not used")),
    cancel() {},
  };
}

const idle = { restart() {}, pause() {}, stop() {} };

/** Relays `chunks` as one stream; returns what the client read and how the relay ended. */
async function run(
  flavor: Flavor,
  chunks: string[],
  options: { fails?: boolean; rewrite?: Parameters<typeof relay>[0]["rewrite"] } = {},
) {
  let result: RelayResult | undefined;
  const body = relay({
    reader: upstream(chunks, options),
    first: encoder.encode(chunks[0]),
    upstream: new AbortController(),
    flavor,
    idle,
    agentName: "gpu",
    rewrite: options.rewrite,
  }, (r) => result = r);
  const parts: string[] = [];
  for await (const chunk of body) parts.push(decoder.decode(chunk));
  return { text: parts.join(""), parts, result: result! };
}

const START = 'event: message_start\ndata: {"type":"message_start","message":{"model":"m",' +
  '"usage":{"input_tokens":9,"output_tokens":1}}}\n\n';
const DELTA =
  'event: content_block_delta\ndata: {"type":"content_block_delta","delta":{"text":"a"}}\n\n';
const END = 'event: message_delta\ndata: {"type":"message_delta","usage":{"output_tokens":3}}\n\n' +
  'event: message_stop\ndata: {"type":"message_stop"}\n\n';

Deno.test("relay - Anthropic's input tokens come from message_start when the end lacks them", async () => {
  const { text, result } = await run("anthropic", [START, DELTA, DELTA, END]);
  assert.equal(text, START + DELTA + DELTA + END);
  assert.equal(result.error, undefined);
  assert.equal(result.usage.promptTokens, 9);
  assert.equal(result.usage.completionTokens, 3);
});

Deno.test("relay - a broken SSE stream ends its last event before the error event", async () => {
  const cases: [string, string][] = [
    [DELTA, ""], // at an event's end
    ["event: content_block_delta\n", "\n"], // after a whole line
    ['event: content_block_delta\ndata: {"ty', "\n\n"], // inside a line
  ];
  for (const [last, ending] of cases) {
    const { text, result } = await run("anthropic", [START, last], { fails: true });
    assert.match(result.error ?? "", /agent "gpu" connection lost during the stream/);
    const error = text.slice(START.length + last.length);
    assert.ok(error.startsWith(`${ending}event: error\ndata: {`), JSON.stringify(error));
    const data = JSON.parse(error.slice(ending.length).split("\n")[1].slice("data: ".length));
    assert.equal(data.type, "error");
    assert.equal(data.error.type, "api_error");
    assert.ok(text.endsWith("}\n\n"));
  }
  const openai = await run("openai", ['data: {"choices":[{"del'], { fails: true });
  assert.match(openai.text, /\{"choices":\[\{"del\n\ndata: \{"error":/);
  const native = await run("ollama", ['{"done":false}\n'], { fails: true });
  assert.equal(JSON.parse(native.text.split("\n")[1]).error.includes("during the stream"), true);
});

Deno.test("relay - a rewrite sees every chunk and gives back what it held at the end", async () => {
  const seen: string[] = [];
  const rewrite = {
    chunk(bytes: Uint8Array) {
      seen.push(decoder.decode(bytes));
      return bytes.subarray(0, bytes.length - 1);
    },
    flush: () => encoder.encode("!"),
  };
  const { text } = await run("ollama", ["ab", "cd"], { rewrite });
  assert.deepEqual(seen, ["ab", "cd"]);
  assert.equal(text, "ac!");
  const broken = await run("ollama", ["ab"], { rewrite, fails: true });
  assert.match(broken.text, /^a!\{"error":/);
});
