import assert from "node:assert/strict";
import { Ollama } from "../shared/test_clients.ts";
import { type Json, ndjson, norm, post, postJson, start } from "./testing.ts";

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

Deno.test("simulator - a pull can be slow or fail as a registry refusal does", async () => {
  await using sim = await start({ models: ["llama3.2"], pullMs: 600_000 });
  const names = async () =>
    (await (await fetch(sim.url + "/api/tags")).json()).models.map((m: Json) => m.name);
  // Slow: the download is under way and nothing is installed until it ends.
  const slow = await post(sim, "/api/pull", { model: "qwen2.5:7b" });
  const reader = slow.body!.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  while (!text.includes('"completed":0')) text += (await reader.read()).value ?? "";
  assert.deepEqual(await names(), ["llama3.2:latest"]);
  await reader.cancel();

  sim.update({ pullError: "pull model manifest: file does not exist", pullMs: 0 });
  const steps = await ndjson(await post(sim, "/api/pull", { model: "nosuch:1b" }));
  assert.deepEqual(steps, [
    { status: "pulling manifest" },
    { error: "pull model manifest: file does not exist" },
  ]);
  const whole = await postJson(sim, "/api/pull", { model: "nosuch:1b", stream: false });
  assert.equal(whole.status, 500);
  assert.deepEqual(whole.json, { error: "pull model manifest: file does not exist" });
  assert.deepEqual(await names(), ["llama3.2:latest"]);

  sim.update({ pullError: "" });
  assert.deepEqual((await ndjson(await post(sim, "/api/pull", { model: "phi3" }))).at(-1), {
    status: "success",
  });
  assert.ok((await names()).includes("phi3:latest"));
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
