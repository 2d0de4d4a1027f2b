import assert from "node:assert/strict";
import { Ollama } from "ollama";
import OpenAI from "openai";
import {
  cliOptions,
  parseFault,
  parseOllamaHost,
  type SimOptions,
  type Simulator,
  startSimulator,
} from "./ollama_sim.ts";

// deno-lint-ignore no-explicit-any
type Json = any;

/** Fast enough that waiting for output costs nothing; tests of speed override it. */
const FAST: SimOptions = { quiet: true, tokensPerSecond: 20_000, ttftMs: 0 };

function start(opts: SimOptions = {}): Promise<Simulator> {
  return startSimulator({ ...FAST, ...opts });
}

function post(sim: Simulator, path: string, body: unknown, init: RequestInit = {}) {
  return fetch(sim.url + path, {
    method: "POST",
    body: typeof body === "string" ? body : JSON.stringify(body),
    headers: { "content-type": "application/json" },
    ...init,
  });
}

async function postJson(sim: Simulator, path: string, body: unknown) {
  const res = await post(sim, path, body);
  const text = await res.text();
  return { status: res.status, type: res.headers.get("content-type"), text, json: parse(text) };
}

function parse(text: string): Json {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

async function ndjson(res: Response): Promise<Json[]> {
  const text = await res.text();
  assert.ok(text.endsWith("\n"), "NDJSON ends with a newline");
  return text.trimEnd().split("\n").map((line) => JSON.parse(line));
}

/** SSE events' data fields. */
async function sse(res: Response): Promise<string[]> {
  const text = await res.text();
  assert.ok(text.endsWith("\n\n"));
  return text.trimEnd().split("\n\n").map((e) => {
    assert.ok(e.startsWith("data: "), `event ${e}`);
    return e.slice("data: ".length);
  });
}

/** Reads a body line by line as it arrives. */
function lines(res: Response) {
  const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  return {
    async next(): Promise<string | undefined> {
      while (!buffer.includes("\n")) {
        const { done, value } = await reader.read();
        if (done) return buffer === "" ? undefined : buffer;
        buffer += value;
      }
      const i = buffer.indexOf("\n");
      const line = buffer.slice(0, i);
      buffer = buffer.slice(i + 1);
      return line;
    },
    cancel: () => reader.cancel(),
  };
}

/** Waits for a condition the simulator reaches on its own (no fixed sleeps). */
async function until(cond: () => boolean | Promise<boolean>, what: string): Promise<void> {
  const deadline = performance.now() + 5000;
  while (!(await cond())) {
    if (performance.now() > deadline) throw new Error(`Timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

function norm(v: number[]): number {
  return Math.hypot(...v);
}

Deno.test("simulator - answers the liveness and listing routes like Ollama", async () => {
  await using sim = await start();
  assert.match(sim.url, /^http:\/\/127\.0\.0\.1:\d+$/);
  let res = await fetch(sim.url + "/");
  assert.equal(res.status, 200);
  assert.equal(await res.text(), "Ollama is running");
  res = await fetch(sim.url + "/", { method: "HEAD" });
  assert.equal(res.status, 200);
  assert.equal(await res.text(), "");
  res = await fetch(sim.url + "/api/version");
  assert.deepEqual(await res.json(), { version: "0.12.6" });
  res = await fetch(sim.url + "/api/version", { method: "HEAD" });
  assert.equal(res.status, 200);
  await res.body?.cancel();

  res = await fetch(sim.url + "/api/tags");
  const tags = await res.json();
  assert.deepEqual(tags.models.map((m: Json) => m.name), [
    "llama3.2:latest",
    "nomic-embed-text:latest",
  ]);
  const llama = tags.models[0];
  assert.equal(llama.model, "llama3.2:latest");
  assert.match(llama.digest, /^[0-9a-f]{64}$/);
  assert.ok(llama.size > 0);
  assert.ok(!Number.isNaN(Date.parse(llama.modified_at)));
  assert.deepEqual(llama.details, {
    parent_model: "",
    format: "gguf",
    family: "llama",
    families: ["llama"],
    parameter_size: "3.2B",
    quantization_level: "Q4_K_M",
  });
  res = await fetch(sim.url + "/api/tags", { method: "HEAD" });
  assert.equal(res.status, 200);
  await res.body?.cancel();

  res = await fetch(sim.url + "/api/ps");
  assert.deepEqual(await res.json(), { models: [] });
  sim.update({ loaded: ["llama3.2"] });
  const ps = await (await fetch(sim.url + "/api/ps")).json();
  assert.equal(ps.models.length, 1);
  assert.equal(ps.models[0].name, "llama3.2:latest");
  assert.equal(ps.models[0].size_vram, ps.models[0].size);
  assert.ok(Date.parse(ps.models[0].expires_at) > Date.now());

  res = await fetch(sim.url + "/api/nothing");
  assert.equal(res.status, 404);
  assert.equal(typeof (await res.json()).error, "string");
  res = await fetch(sim.url + "/api/generate");
  assert.equal(res.status, 405);
  assert.equal(typeof (await res.json()).error, "string");
  res = await fetch(sim.url + "/api/tags", { method: "PUT" });
  assert.equal(res.status, 405);
  await res.body?.cancel();
  res = await fetch(sim.url + "/v1/nothing");
  assert.equal(res.status, 404);
  const err = (await res.json()).error;
  assert.equal(err.type, "not_found_error");
  assert.equal(err.param, null);
  assert.equal(err.code, null);
});

Deno.test("simulator - rejects a Host header that is not local, like Ollama on loopback", async () => {
  await using sim = await start();
  // fetch() cannot set Host, so speak HTTP by hand.
  const ask = async (host: string) => {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: sim.port });
    await conn.write(
      new TextEncoder().encode(
        `GET /api/version HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`,
      ),
    );
    const text = new TextDecoder().decode(
      await new Response(conn.readable).arrayBuffer(),
    );
    return Number(text.split(" ")[1]);
  };
  assert.equal(await ask("evil.example.com"), 403);
  assert.equal(await ask("localhost:11434"), 200);
  assert.equal(await ask(`127.0.0.1:${sim.port}`), 200);
  assert.equal(await ask("gpu.internal"), 200);
});

Deno.test("simulator - streams generate as NDJSON ending in a full final object", async () => {
  await using sim = await start({ ttftMs: 1 });
  const res = await post(sim, "/api/generate", {
    model: "llama3.2",
    prompt: "Why is the sky blue?",
  });
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("content-type"), "application/x-ndjson");
  const chunks = await ndjson(res);
  const last = chunks.pop();
  assert.ok(chunks.length >= 10);
  for (const c of chunks) {
    assert.equal(c.model, "llama3.2");
    assert.equal(c.done, false);
    assert.equal(typeof c.response, "string");
    assert.ok(!Number.isNaN(Date.parse(c.created_at)));
  }
  assert.equal(last.done, true);
  assert.equal(last.done_reason, "stop");
  assert.equal(last.response, "");
  assert.equal(last.model, "llama3.2");
  assert.equal(last.eval_count, chunks.length);
  assert.equal(last.prompt_eval_count, 5);
  assert.equal(last.prompt_eval_duration, 1_000_000);
  for (const f of ["total_duration", "load_duration", "eval_duration"]) {
    assert.ok(Number.isInteger(last[f]) && last[f] > 0, f);
  }
  assert.ok(last.total_duration >= last.eval_duration + last.prompt_eval_duration);
  assert.ok(Array.isArray(last.context) && last.context.length > chunks.length);

  const text = chunks.map((c) => c.response).join("");
  const again = await ndjson(
    await post(sim, "/api/generate", { model: "llama3.2", prompt: "Why is the sky blue?" }),
  );
  assert.equal(again.map((c) => c.response).join(""), text, "same prompt, same answer");
  const other = await ndjson(
    await post(sim, "/api/generate", { model: "llama3.2", prompt: "Tell me a joke" }),
  );
  assert.notEqual(other.map((c) => c.response).join(""), text);
});

Deno.test("simulator - answers in one JSON object when stream is false", async () => {
  await using sim = await start();
  const prompt = "Name three rivers";
  const streamed = (await ndjson(await post(sim, "/api/generate", { model: "llama3.2", prompt })))
    .map((c) => c.response).join("");
  const r = await postJson(sim, "/api/generate", { model: "llama3.2", prompt, stream: false });
  assert.equal(r.status, 200);
  assert.equal(r.type, "application/json; charset=utf-8");
  assert.equal(r.json.response, streamed);
  assert.equal(r.json.done, true);
  assert.equal(r.json.done_reason, "stop");
  assert.ok(Array.isArray(r.json.context));
  for (const f of ["total_duration", "load_duration", "prompt_eval_count", "eval_count"]) {
    assert.ok(r.json[f] > 0, f);
  }

  const messages = [{ role: "user", content: "Hello" }];
  const chat = await postJson(sim, "/api/chat", { model: "llama3.2", messages, stream: false });
  assert.equal(chat.json.message.role, "assistant");
  assert.ok(chat.json.message.content.length > 0);
  assert.equal(chat.json.done, true);
  assert.equal(chat.json.context, undefined);
  const chunks = await ndjson(await post(sim, "/api/chat", { model: "llama3.2", messages }));
  const last = chunks.pop();
  assert.equal(chunks.map((c) => c.message.content).join(""), chat.json.message.content);
  assert.deepEqual(last.message, { role: "assistant", content: "" });
  assert.equal(last.done_reason, "stop");
  assert.equal(last.eval_count, chunks.length);

  const short = await postJson(sim, "/api/generate", {
    model: "llama3.2",
    prompt,
    stream: false,
    options: { num_predict: 3 },
  });
  assert.equal(short.json.eval_count, 3);
  assert.equal(short.json.done_reason, "length");
});

Deno.test("simulator - normalises model names and echoes the name sent", async () => {
  await using sim = await start();
  for (
    const model of ["llama3.2", "LLAMA3.2:latest", "registry.ollama.ai/library/llama3.2:latest"]
  ) {
    const r = await postJson(sim, "/api/generate", { model, prompt: "hi", stream: false });
    assert.equal(r.status, 200, model);
    assert.equal(r.json.model, model);
  }
  let r = await postJson(sim, "/api/chat", {
    model: "mistral",
    messages: [{ role: "user", content: "hi" }],
  });
  assert.equal(r.status, 404);
  assert.deepEqual(r.json, { error: 'model "mistral" not found, try pulling it first' });
  r = await postJson(sim, "/api/generate", { prompt: "hi" });
  assert.equal(r.status, 400);
  assert.deepEqual(r.json, { error: "model is required" });
  r = await postJson(sim, "/api/generate", "{not json");
  assert.equal(r.status, 400);
  assert.equal(typeof r.json.error, "string");
  r = await postJson(sim, "/api/generate", { model: "nomic-embed-text", prompt: "hi" });
  assert.equal(r.status, 400);
  assert.match(r.json.error, /does not support generate/);
});

Deno.test("simulator - loads on an empty prompt and unloads with keep_alive 0", async () => {
  await using sim = await start();
  const ps = async () => (await (await fetch(sim.url + "/api/ps")).json()).models;
  let r = await postJson(sim, "/api/generate", { model: "llama3.2", prompt: "" });
  assert.equal(r.type, "application/json; charset=utf-8");
  assert.equal(r.json.done, true);
  assert.equal(r.json.done_reason, "load");
  assert.deepEqual((await ps()).map((m: Json) => m.name), ["llama3.2:latest"]);
  r = await postJson(sim, "/api/chat", { model: "llama3.2", messages: [], keep_alive: 0 });
  assert.equal(r.json.done_reason, "unload");
  assert.deepEqual(await ps(), []);

  r = await postJson(sim, "/api/generate", {
    model: "llama3.2",
    prompt: "hi",
    stream: false,
    keep_alive: 0,
  });
  assert.equal(r.status, 200);
  assert.deepEqual(await ps(), []);

  await postJson(sim, "/api/generate", { model: "llama3.2", prompt: "", keep_alive: -1 });
  assert.ok(new Date((await ps())[0].expires_at).getUTCFullYear() > 2300);
  await postJson(sim, "/api/generate", { model: "llama3.2", prompt: "", keep_alive: "10m" });
  const expires = Date.parse((await ps())[0].expires_at) - Date.now();
  assert.ok(expires > 9 * 60_000 && expires <= 10 * 60_000, `${expires}`);
});

Deno.test("simulator - embeds deterministically with unit vectors", async () => {
  await using sim = await start();
  const one = await postJson(sim, "/api/embed", { model: "nomic-embed-text", input: "hello" });
  assert.equal(one.status, 200);
  assert.equal(one.json.model, "nomic-embed-text");
  assert.equal(one.json.embeddings.length, 1);
  assert.equal(one.json.embeddings[0].length, 8);
  assert.ok(Math.abs(norm(one.json.embeddings[0]) - 1) < 1e-9);
  for (const f of ["total_duration", "load_duration", "prompt_eval_count"]) {
    assert.ok(one.json[f] > 0, f);
  }
  const two = await postJson(sim, "/api/embed", {
    model: "nomic-embed-text",
    input: ["hello", "world"],
  });
  assert.equal(two.json.embeddings.length, 2);
  assert.deepEqual(two.json.embeddings[0], one.json.embeddings[0]);
  assert.notDeepEqual(two.json.embeddings[1], one.json.embeddings[0]);
  const legacy = await postJson(sim, "/api/embeddings", {
    model: "nomic-embed-text",
    prompt: "hello",
  });
  assert.deepEqual(legacy.json, { embedding: one.json.embeddings[0] });
  const missing = await postJson(sim, "/api/embed", { model: "nope", input: "x" });
  assert.equal(missing.status, 404);
});

Deno.test("simulator - shows a model named by model or name", async () => {
  await using sim = await start();
  let r = await postJson(sim, "/api/show", { model: "llama3.2" });
  assert.equal(r.status, 200);
  assert.equal(r.json.details.family, "llama");
  assert.deepEqual(r.json.capabilities, ["completion"]);
  assert.equal(typeof r.json.model_info["general.architecture"], "string");
  r = await postJson(sim, "/api/show", { name: "nomic-embed-text:latest" });
  assert.deepEqual(r.json.capabilities, ["embedding"]);
  r = await postJson(sim, "/api/show", { model: "nope" });
  assert.equal(r.status, 404);
  assert.deepEqual(r.json, { error: "model 'nope' not found" });
  r = await postJson(sim, "/api/show", {});
  assert.equal(r.status, 400);
});

Deno.test("simulator - pulls, copies and deletes models", async () => {
  await using sim = await start({ models: ["llama3.2"] });
  const names = async () =>
    (await (await fetch(sim.url + "/api/tags")).json()).models.map((m: Json) => m.name);
  const res = await post(sim, "/api/pull", { model: "qwen2.5:7b" });
  assert.equal(res.headers.get("content-type"), "application/x-ndjson");
  const steps = await ndjson(res);
  const statuses = steps.map((s) => s.status);
  assert.equal(statuses[0], "pulling manifest");
  assert.deepEqual(statuses.slice(-3), ["verifying sha256 digest", "writing manifest", "success"]);
  const layers = steps.filter((s) => /^pulling [0-9a-f]{12}$/.test(s.status));
  assert.ok(layers.length >= 3);
  assert.ok(layers.every((s) => s.digest.startsWith(`sha256:${s.status.slice(8)}`) && s.total > 0));
  assert.deepEqual(
    layers.map((s) => s.completed),
    [...layers.map((s) => s.completed)].sort((a, b) => a - b),
  );
  assert.equal(layers.at(-1).completed, layers.at(-1).total);
  assert.deepEqual(steps.at(-1), { status: "success" });
  assert.deepEqual(await names(), ["qwen2.5:7b", "llama3.2:latest"]);
  const qwen = (await (await fetch(sim.url + "/api/tags")).json()).models[0];
  assert.equal(qwen.details.parameter_size, "7B");

  let r = await postJson(sim, "/api/pull", { name: "phi3", stream: false });
  assert.deepEqual(r.json, { status: "success" });
  assert.ok((await names()).includes("phi3:latest"));
  r = await postJson(sim, "/api/generate", { model: "phi3", prompt: "hi", stream: false });
  assert.equal(r.status, 200);

  r = await postJson(sim, "/api/copy", { source: "llama3.2", destination: "mine:v1" });
  assert.equal(r.status, 200);
  assert.equal(r.text, "");
  const tags = (await (await fetch(sim.url + "/api/tags")).json()).models;
  const digest = (n: string) => tags.find((m: Json) => m.name === n).digest;
  assert.equal(digest("mine:v1"), digest("llama3.2:latest"));
  r = await postJson(sim, "/api/copy", { source: "nope", destination: "x" });
  assert.equal(r.status, 404);

  const del = (model: string) =>
    fetch(sim.url + "/api/delete", { method: "DELETE", body: JSON.stringify({ model }) });
  let d = await del("mine:v1");
  assert.equal(d.status, 200);
  assert.equal(await d.text(), "");
  d = await del("mine:v1");
  assert.equal(d.status, 404);
  assert.deepEqual(await d.json(), { error: "model 'mine:v1' not found" });
  assert.ok(!(await names()).includes("mine:v1"));
});

Deno.test("simulator - speaks OpenAI chat and completions, streaming and not", async () => {
  await using sim = await start();
  const messages = [{ role: "user", content: "Say hello" }];
  const whole = await postJson(sim, "/v1/chat/completions", { model: "llama3.2", messages });
  assert.equal(whole.status, 200);
  assert.equal(whole.json.object, "chat.completion");
  assert.equal(whole.json.model, "llama3.2");
  assert.equal(whole.json.choices[0].message.role, "assistant");
  assert.equal(whole.json.choices[0].finish_reason, "stop");
  const u = whole.json.usage;
  assert.equal(u.total_tokens, u.prompt_tokens + u.completion_tokens);

  const res = await post(sim, "/v1/chat/completions", {
    model: "llama3.2",
    messages,
    stream: true,
    stream_options: { include_usage: true },
  });
  assert.equal(res.headers.get("content-type"), "text/event-stream");
  const events = await sse(res);
  assert.equal(events.pop(), "[DONE]");
  const chunks = events.map((e) => JSON.parse(e));
  assert.ok(chunks.every((c) => c.object === "chat.completion.chunk"));
  assert.equal(chunks[0].choices[0].delta.role, "assistant");
  const usage = chunks.pop();
  assert.deepEqual(usage.choices, []);
  assert.deepEqual(usage.usage, u);
  const finish = chunks.pop();
  assert.equal(finish.choices[0].finish_reason, "stop");
  assert.deepEqual(finish.choices[0].delta, {});
  assert.equal(
    chunks.map((c) => c.choices[0].delta.content).join(""),
    whole.json.choices[0].message.content,
  );

  const noUsage = await sse(
    await post(sim, "/v1/chat/completions", { model: "llama3.2", messages, stream: true }),
  );
  assert.ok(noUsage.slice(0, -1).every((e) => JSON.parse(e).choices.length === 1));

  const text = await postJson(sim, "/v1/completions", {
    model: "llama3.2",
    prompt: "Once",
    max_tokens: 2,
  });
  assert.equal(text.json.object, "text_completion");
  assert.equal(text.json.choices[0].finish_reason, "length");
  assert.equal(text.json.usage.completion_tokens, 2);
  const textEvents = await sse(
    await post(sim, "/v1/completions", { model: "llama3.2", prompt: "Once", stream: true }),
  );
  assert.equal(textEvents.pop(), "[DONE]");
  const textChunks = textEvents.map((e) => JSON.parse(e));
  assert.equal(textChunks.at(-1).choices[0].finish_reason, "stop");

  let err = await postJson(sim, "/v1/chat/completions", { messages });
  assert.equal(err.status, 400);
  assert.deepEqual(err.json, {
    error: { message: "model is required", type: "invalid_request_error", param: null, code: null },
  });
  err = await postJson(sim, "/v1/chat/completions", { model: "nope", messages });
  assert.equal(err.status, 404);
  assert.equal(err.json.error.type, "not_found_error");
  assert.match(err.json.error.message, /model "nope" not found/);
});

Deno.test("simulator - returns OpenAI embeddings as floats or base64 and lists models", async () => {
  await using sim = await start();
  const floats = await postJson(sim, "/v1/embeddings", {
    model: "nomic-embed-text",
    input: ["a", "b"],
  });
  assert.equal(floats.json.object, "list");
  assert.equal(floats.json.data.length, 2);
  assert.equal(floats.json.data[1].index, 1);
  const vector: number[] = floats.json.data[0].embedding;
  assert.equal(vector.length, 8);
  const b64 = await postJson(sim, "/v1/embeddings", {
    model: "nomic-embed-text",
    input: "a",
    encoding_format: "base64",
  });
  const bytes = Uint8Array.from(atob(b64.json.data[0].embedding), (c) => c.charCodeAt(0));
  const view = new DataView(bytes.buffer);
  const decoded = Array.from({ length: bytes.length / 4 }, (_, i) => view.getFloat32(i * 4, true));
  assert.deepEqual(decoded, Array.from(new Float32Array(vector)));

  const list = await (await fetch(sim.url + "/v1/models")).json();
  assert.equal(list.object, "list");
  assert.deepEqual(list.data.map((m: Json) => m.id), [
    "llama3.2:latest",
    "nomic-embed-text:latest",
  ]);
  assert.deepEqual(Object.keys(list.data[0]).sort(), ["created", "id", "object", "owned_by"]);
  const one = await (await fetch(sim.url + "/v1/models/llama3.2")).json();
  assert.equal(one.id, "llama3.2");
  assert.equal(one.owned_by, "library");
  const res = await fetch(sim.url + "/v1/models/nope");
  assert.equal(res.status, 404);
  assert.equal((await res.json()).error.type, "not_found_error");
});

Deno.test("simulator - reports the configured speed in eval_duration", async () => {
  await using sim = await start({ tokensPerSecond: 2000 });
  const generate = async () => {
    const t0 = performance.now();
    const r = await postJson(sim, "/api/generate", {
      model: "llama3.2",
      prompt: "count",
      stream: false,
      options: { num_predict: 20 },
    });
    return { ...r.json, wallMs: performance.now() - t0 };
  };
  let r = await generate();
  assert.equal(r.eval_count, 20);
  assert.equal(r.eval_count / (r.eval_duration / 1e9), 2000);
  // Paced for real: 19 intervals of 0.5 ms cannot finish sooner.
  assert.ok(r.wallMs >= 9, `${r.wallMs}`);
  sim.update({ tokensPerSecond: 400 });
  r = await generate();
  assert.ok(Math.abs(r.eval_count / (r.eval_duration / 1e9) - 400) < 1e-6);
  assert.ok(r.wallMs >= 19 * 2.5 - 1, `${r.wallMs}`);
});

Deno.test("simulator - waits the time to first token before the first chunk", async () => {
  await using sim = await start({ ttftMs: 40 });
  const t0 = performance.now();
  const res = await post(sim, "/api/generate", { model: "llama3.2", prompt: "hi" });
  const reader = lines(res);
  await reader.next();
  const firstMs = performance.now() - t0;
  await reader.cancel();
  assert.ok(firstMs >= 39, `${firstMs}`);
  const r = await postJson(sim, "/api/chat", {
    model: "llama3.2",
    messages: [{ role: "user", content: "hi" }],
    stream: false,
  });
  assert.equal(r.json.prompt_eval_duration, 40_000_000);
});

Deno.test("simulator - pays the load time once and lists the loaded model in /api/ps", async () => {
  await using sim = await start({ loadMs: 80 });
  const ps = async () => (await (await fetch(sim.url + "/api/ps")).json()).models;
  assert.deepEqual(await ps(), []);
  const ask = () =>
    postJson(sim, "/api/generate", { model: "llama3.2", prompt: "hi", stream: false });
  // Two requests during one load: both wait for it.
  const [a, b] = await Promise.all([ask(), ask()]);
  assert.ok(a.json.load_duration >= 79e6, `${a.json.load_duration}`);
  assert.ok(b.json.load_duration >= 79e6, `${b.json.load_duration}`);
  assert.ok(a.json.total_duration >= a.json.load_duration);
  const loaded = await ps();
  assert.equal(loaded.length, 1);
  assert.equal(loaded[0].name, "llama3.2:latest");
  assert.ok(loaded[0].size_vram > 0);
  assert.ok(Date.parse(loaded[0].expires_at) > Date.now() + 4 * 60_000);
  const c = await ask();
  assert.ok(c.json.load_duration < 79e6, `${c.json.load_duration}`);
});

Deno.test("simulator - answers 503 past the parallel slots and the queue", async () => {
  await using sim = await start({ parallel: 1, maxQueue: 1, tokensPerSecond: 5 });
  const slow = { model: "llama3.2", prompt: "slow", options: { num_predict: 1000 } };
  const a = lines(await post(sim, "/api/generate", slow));
  await a.next(); // A holds the only slot.
  const bPending = post(sim, "/api/generate", slow);
  await until(() => sim.stats.queued === 1, "B to queue");

  const c = await postJson(sim, "/api/generate", slow);
  assert.equal(c.status, 503);
  assert.deepEqual(c.json, {
    error: "server busy, please try again.  maximum pending requests exceeded",
  });
  const oa = await postJson(sim, "/v1/chat/completions", {
    model: "llama3.2",
    messages: [{ role: "user", content: "x" }],
  });
  assert.equal(oa.status, 503);
  assert.equal(oa.json.error.type, "api_error");
  // Slots are per model: the embedding model still has room.
  const e = await postJson(sim, "/api/embed", { model: "nomic-embed-text", input: "x" });
  assert.equal(e.status, 200);

  await a.cancel(); // A's slot goes to B.
  const b = lines(await bPending);
  assert.ok(JSON.parse((await b.next())!).response);
  await b.cancel();
  await until(() => sim.stats.inFlight === 0, "requests to finish");
  assert.equal(sim.stats.aborted, 2);
  assert.equal(sim.stats.queued, 0);
});

Deno.test("simulator - answers 503 to every inference while busy", async () => {
  await using sim = await start();
  await sim.setFault({ type: "busy" });
  const busy = "server busy, please try again.  maximum pending requests exceeded";
  for (
    const [path, body] of [
      ["/api/generate", { model: "llama3.2", prompt: "hi" }],
      ["/api/chat", { model: "llama3.2", messages: [{ role: "user", content: "hi" }] }],
      ["/api/embed", { model: "nomic-embed-text", input: "hi" }],
    ] as const
  ) {
    const r = await postJson(sim, path, body);
    assert.equal(r.status, 503, path);
    assert.deepEqual(r.json, { error: busy });
  }
  const oa = await postJson(sim, "/v1/embeddings", { model: "nomic-embed-text", input: "hi" });
  assert.equal(oa.status, 503);
  assert.equal(oa.json.error.message, busy);
  const tags = await fetch(sim.url + "/api/tags");
  assert.equal(tags.status, 200);
  await tags.body?.cancel();
  await sim.setFault({ type: "none" });
  const ok = await postJson(sim, "/api/generate", { model: "llama3.2", prompt: "hi" });
  assert.equal(ok.status, 200);
});

Deno.test("simulator - refuses connections and listens again on the same port", async () => {
  await using sim = await start({ fault: { type: "refuse" } });
  const port = sim.port;
  assert.ok(port > 0);
  await assert.rejects(fetch(sim.url + "/"), TypeError);
  await sim.setFault({ type: "none" });
  assert.equal(await (await fetch(sim.url + "/")).text(), "Ollama is running");
  await sim.setFault({ type: "refuse" });
  await assert.rejects(fetch(sim.url + "/api/version"), TypeError);
  await sim.setFault({ type: "none" });
  assert.equal(sim.port, port);
  assert.equal((await (await fetch(sim.url + "/api/version")).json()).version, "0.12.6");
});

Deno.test("simulator - drops the connection after N chunks", async () => {
  await using sim = await start({ fault: { type: "die_after", chunks: 3 } });
  const res = await post(sim, "/api/generate", { model: "llama3.2", prompt: "hi" });
  assert.equal(res.status, 200);
  const reader = lines(res);
  const got: string[] = [];
  await assert.rejects(async () => {
    for (let line = await reader.next(); line !== undefined; line = await reader.next()) {
      got.push(line);
    }
  });
  assert.equal(got.length, 3);
  assert.ok(got.every((l) => JSON.parse(l).done === false));

  const whole = await post(sim, "/api/chat", {
    model: "llama3.2",
    messages: [{ role: "user", content: "hi" }],
    stream: false,
  });
  await assert.rejects(whole.json());

  const events = await post(sim, "/v1/chat/completions", {
    model: "llama3.2",
    messages: [{ role: "user", content: "hi" }],
    stream: true,
  });
  await assert.rejects(events.text());
  const pull = await post(sim, "/api/pull", { model: "phi3" });
  await assert.rejects(pull.text());

  // An answer shorter than N chunks completes.
  await sim.setFault({ type: "die_after", chunks: 100 });
  const short = await ndjson(
    await post(sim, "/api/generate", {
      model: "llama3.2",
      prompt: "hi",
      options: { num_predict: 2 },
    }),
  );
  assert.equal(short.at(-1).done, true);
  await until(() => sim.stats.inFlight === 0, "requests to finish");
  assert.equal(sim.stats.aborted, 4);
  assert.equal(sim.stats.completed, 1);
});

Deno.test("simulator - hangs until the client aborts", async () => {
  await using sim = await start({ fault: { type: "hang" } });
  const ac = new AbortController();
  const pending = post(sim, "/api/generate", { model: "llama3.2", prompt: "hi" }, {
    signal: ac.signal,
  });
  const probe = new AbortController();
  const head = fetch(sim.url + "/", { method: "HEAD", signal: probe.signal });
  await until(() => sim.stats.inFlight === 2, "both requests to arrive");
  ac.abort();
  probe.abort();
  await assert.rejects(pending, { name: "AbortError" });
  await assert.rejects(head, { name: "AbortError" });
  await until(() => sim.stats.inFlight === 0, "the hung requests to be released");
  assert.equal(sim.stats.aborted, 2);
  await sim.setFault({ type: "none" });
  const ok = await postJson(sim, "/api/generate", { model: "llama3.2", prompt: "hi" });
  assert.equal(ok.status, 200);
  assert.equal(sim.stats.completed, 1);
});

Deno.test("simulator - stops generating when the client aborts", async () => {
  // 1000 tokens at 20/s would take 50 s: the test ends only if generation stops.
  await using sim = await start({ parallel: 1, maxQueue: 0, tokensPerSecond: 20 });
  const slow = { model: "llama3.2", prompt: "slow", options: { num_predict: 1000 } };
  const stream = lines(await post(sim, "/api/generate", slow));
  await stream.next();
  await stream.cancel();
  await until(() => sim.stats.inFlight === 0, "the stream to stop");
  assert.deepEqual(sim.stats, {
    requests: 1,
    inFlight: 0,
    aborted: 1,
    completed: 0,
    queued: 0,
  });

  const ac = new AbortController();
  const whole = post(sim, "/api/generate", { ...slow, stream: false }, { signal: ac.signal });
  await until(() => sim.stats.inFlight === 1, "the request to arrive");
  ac.abort();
  await assert.rejects(whole, { name: "AbortError" });
  await until(() => sim.stats.inFlight === 0, "the generation to stop");
  assert.equal(sim.stats.aborted, 2);
  // The only slot is free again (maxQueue 0 would answer 503 otherwise).
  const next = await postJson(sim, "/api/embed", { model: "llama3.2", input: "x" });
  assert.equal(next.status, 200);
});

Deno.test("simulator - works with the ollama npm client", async () => {
  await using sim = await start();
  const ollama = new Ollama({ host: sim.url });
  assert.equal((await ollama.version()).version, "0.12.6");
  assert.deepEqual((await ollama.list()).models.map((m) => m.name), [
    "llama3.2:latest",
    "nomic-embed-text:latest",
  ]);
  const gen = await ollama.generate({ model: "llama3.2", prompt: "hi" });
  assert.equal(gen.done, true);
  assert.ok((gen.response ?? "").length > 0);
  let text = "";
  for await (
    const part of await ollama.generate({ model: "llama3.2", prompt: "hi", stream: true })
  ) {
    text += part.response;
  }
  assert.equal(text, gen.response);
  const chat = await ollama.chat({
    model: "llama3.2",
    messages: [{ role: "user", content: "hi" }],
  });
  assert.equal(chat.message.role, "assistant");
  let streamed = "";
  let final;
  for await (
    const part of await ollama.chat({
      model: "llama3.2",
      messages: [{ role: "user", content: "hi" }],
      stream: true,
    })
  ) {
    streamed += part.message.content;
    if (part.done) final = part;
  }
  assert.equal(streamed, chat.message.content);
  assert.equal(final?.done_reason, "stop");
  const embed = await ollama.embed({ model: "nomic-embed-text", input: ["a", "b"] });
  assert.equal(embed.embeddings.length, 2);
  const legacy = await ollama.embeddings({ model: "nomic-embed-text", prompt: "a" });
  assert.deepEqual(legacy.embedding, embed.embeddings[0]);
  assert.equal((await ollama.show({ model: "llama3.2" })).details.family, "llama");
  assert.deepEqual((await ollama.ps()).models.map((m) => m.name).sort(), [
    "llama3.2:latest",
    "nomic-embed-text:latest",
  ]);
  const statuses: string[] = [];
  for await (const p of await ollama.pull({ model: "gemma3:1b", stream: true })) {
    statuses.push(p.status);
  }
  assert.equal(statuses.at(-1), "success");
  assert.equal((await ollama.pull({ model: "phi3" })).status, "success");
  await ollama.copy({ source: "gemma3:1b", destination: "gemma-copy" });
  await ollama.delete({ model: "gemma-copy" });
  const names = (await ollama.list()).models.map((m) => m.name);
  assert.ok(names.includes("gemma3:1b") && names.includes("phi3:latest"));
  assert.ok(!names.includes("gemma-copy:latest"));
  await assert.rejects(
    ollama.generate({ model: "nope", prompt: "hi" }),
    (e: Error & { status_code?: number }) => e.status_code === 404 && /not found/.test(e.message),
  );
});

Deno.test("simulator - works with the openai npm client", async () => {
  await using sim = await start();
  const openai = new OpenAI({ baseURL: sim.url + "/v1", apiKey: "unused", maxRetries: 0 });
  const messages = [{ role: "user" as const, content: "hi" }];
  const chat = await openai.chat.completions.create({ model: "llama3.2", messages });
  const content = chat.choices[0].message.content!;
  assert.ok(content.length > 0);
  let streamed = "";
  let usage;
  const stream = await openai.chat.completions.create({
    model: "llama3.2",
    messages,
    stream: true,
    stream_options: { include_usage: true },
  });
  for await (const chunk of stream) {
    streamed += chunk.choices[0]?.delta.content ?? "";
    if (chunk.usage) usage = chunk.usage;
  }
  assert.equal(streamed, content);
  assert.deepEqual(usage, chat.usage);
  const completion = await openai.completions.create({ model: "llama3.2", prompt: "hi" });
  assert.ok(completion.choices[0].text.length > 0);

  // The client asks for base64 by default and decodes it.
  const embedded = await openai.embeddings.create({ model: "nomic-embed-text", input: "hi" });
  const floats = await postJson(sim, "/v1/embeddings", { model: "nomic-embed-text", input: "hi" });
  assert.deepEqual(
    embedded.data[0].embedding,
    Array.from(new Float32Array(floats.json.data[0].embedding)),
  );
  const ids = [];
  for await (const m of openai.models.list()) ids.push(m.id);
  assert.deepEqual(ids, ["llama3.2:latest", "nomic-embed-text:latest"]);
  assert.equal((await openai.models.retrieve("llama3.2")).id, "llama3.2");
  await assert.rejects(
    openai.chat.completions.create({ model: "nope", messages }),
    (e: Error & { status?: number }) => e.status === 404,
  );
});

Deno.test("simulator - parses OLLAMA_HOST, flags and faults like the CLI", () => {
  assert.deepEqual(parseOllamaHost(undefined), { hostname: "127.0.0.1", port: 11434 });
  assert.deepEqual(parseOllamaHost("0.0.0.0:8080"), { hostname: "0.0.0.0", port: 8080 });
  assert.deepEqual(parseOllamaHost("10.0.0.5"), { hostname: "10.0.0.5", port: 11434 });
  assert.deepEqual(parseOllamaHost(":9000"), { hostname: "0.0.0.0", port: 9000 });
  assert.deepEqual(parseOllamaHost("http://127.0.0.1:7000"), { hostname: "127.0.0.1", port: 7000 });
  assert.deepEqual(parseOllamaHost("[::1]:7001"), { hostname: "::1", port: 7001 });
  assert.deepEqual(parseFault("die_after:3"), { type: "die_after", chunks: 3 });
  assert.deepEqual(parseFault("busy"), { type: "busy" });
  assert.throws(() => parseFault("explode"), TypeError);

  const env: Record<string, string> = {
    OLLAMA_HOST: "127.0.0.1:5000",
    SIM_TPS: "100",
    SIM_FAULT: "busy",
    SIM_MODELS: "a,b",
    OLLAMA_NUM_PARALLEL: "2",
  };
  const opts = cliOptions(
    ["serve", "--fault", "die_after:2", "--load", "30", "--quiet"],
    (n) => env[n],
  );
  assert.equal(opts.hostname, "127.0.0.1");
  assert.equal(opts.port, 5000);
  assert.equal(opts.tokensPerSecond, 100);
  assert.deepEqual(opts.fault, { type: "die_after", chunks: 2 });
  assert.deepEqual(opts.models, ["a", "b"]);
  assert.equal(opts.loadMs, 30);
  assert.equal(opts.parallel, 2);
  assert.equal(opts.quiet, true);
  assert.equal(cliOptions(["--port", "1"], (n) => env[n]).port, 1);
  assert.equal(cliOptions(["-v"], () => undefined).printVersion, true);
  assert.throws(() => cliOptions(["run", "llama3.2"], () => undefined), TypeError);
  assert.throws(() => cliOptions(["--tps", "fast"], () => undefined), RangeError);
});

Deno.test("simulator - runs as a fake ollama binary", async () => {
  const bin = new URL("./fake-ollama", import.meta.url).pathname;
  const version = await new Deno.Command(bin, { args: ["--version"] }).output();
  assert.equal(new TextDecoder().decode(version.stdout).trim(), "ollama version is 0.12.6");

  const free = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (free.addr as Deno.NetAddr).port;
  free.close();
  const child = new Deno.Command(bin, {
    args: ["serve", "--quiet"],
    env: { OLLAMA_HOST: `127.0.0.1:${port}`, SIM_MODELS: "tiny:1b" },
    stdout: "null",
    stderr: "null",
  }).spawn();
  try {
    await until(async () => {
      try {
        const res = await fetch(`http://127.0.0.1:${port}/`, { method: "HEAD" });
        await res.body?.cancel();
        return res.ok;
      } catch {
        return false;
      }
    }, "the fake ollama to answer HEAD /");
    const tags = await (await fetch(`http://127.0.0.1:${port}/api/tags`)).json();
    assert.deepEqual(tags.models.map((m: Json) => m.name), ["tiny:1b"]);
  } finally {
    child.kill("SIGTERM");
  }
  const status = await child.status;
  assert.equal(status.code, 0);
});
