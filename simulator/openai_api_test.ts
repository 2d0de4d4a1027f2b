import assert from "node:assert/strict";
import { OpenAI } from "../shared/test_clients.ts";
import { type Json, post, postJson, sse, start } from "./testing.ts";

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
