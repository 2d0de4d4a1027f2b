import assert from "node:assert/strict";
import { OpenAI } from "../../shared/test_clients.ts";
import { startFleet } from "../testing/app.ts";

const FLEET = [
  { name: "alpha", models: ["llama3.2:latest", "nomic-embed-text:latest"] },
  { name: "beta", models: ["qwen3:0.6b"] },
];

Deno.test("openai API - the npm openai client works through the coordinator", async () => {
  await using fleet = await startFleet(FLEET);
  const openai = new OpenAI({ baseURL: `${fleet.url}/v1`, apiKey: "ollama", maxRetries: 0 });

  const chat = await openai.chat.completions.create({
    model: "llama3.2",
    messages: [{ role: "user", content: "Hello" }],
  });
  assert.equal(chat.object, "chat.completion");
  assert.ok(chat.choices[0].message.content);
  assert.ok(chat.usage && chat.usage.completion_tokens > 0);

  const stream = await openai.chat.completions.create({
    model: "qwen3:0.6b",
    messages: [{ role: "user", content: "Stream please" }],
    stream: true,
    stream_options: { include_usage: true },
  });
  let text = "";
  let finish: string | null = null;
  let usage;
  for await (const chunk of stream) {
    text += chunk.choices[0]?.delta?.content ?? "";
    finish = chunk.choices[0]?.finish_reason ?? finish;
    usage = chunk.usage ?? usage;
  }
  assert.ok(text.length > 0);
  assert.equal(finish, "stop");
  assert.ok(usage && usage.total_tokens > 0);

  const completion = await openai.completions.create({ model: "llama3.2", prompt: "Once upon" });
  assert.ok(completion.choices[0].text.length > 0);

  // The client asks for base64 by default and decodes it to floats.
  const emb = await openai.embeddings.create({ model: "nomic-embed-text", input: ["one", "two"] });
  assert.equal(emb.data.length, 2);
  assert.ok(Array.isArray(emb.data[0].embedding));
  assert.ok(emb.data[0].embedding.every((x) => Number.isFinite(x)));

  const models = await openai.models.list();
  const ids = models.data.map((m) => m.id).sort();
  assert.deepEqual(ids, ["llama3.2:latest", "nomic-embed-text:latest", "qwen3:0.6b"]);
  const one = await openai.models.retrieve("qwen3:0.6b");
  assert.equal(one.id, "qwen3:0.6b");
});

Deno.test("openai API - errors use OpenAI's shape", async () => {
  await using fleet = await startFleet(FLEET);
  const openai = new OpenAI({ baseURL: `${fleet.url}/v1`, apiKey: "ollama", maxRetries: 0 });
  await assert.rejects(
    openai.chat.completions.create({
      model: "missing",
      messages: [{ role: "user", content: "x" }],
    }),
    (e: InstanceType<typeof OpenAI.APIError>) => e.status === 404 && /not found/.test(e.message),
  );
  await assert.rejects(
    openai.models.retrieve("missing"),
    (e: InstanceType<typeof OpenAI.APIError>) => e.status === 404,
  );
  const res = await fetch(`${fleet.url}/v1/chat/completions`, { method: "POST", body: "{" });
  assert.equal(res.status, 400);
  const body = await res.json();
  assert.equal(body.error.type, "invalid_request_error");
  assert.equal(body.error.param, null);
});

Deno.test("openai API - streams without include_usage still count their tokens", async () => {
  await using fleet = await startFleet(FLEET);
  const openai = new OpenAI({ baseURL: `${fleet.url}/v1`, apiKey: "ollama", maxRetries: 0 });
  const chat = await openai.chat.completions.create({
    model: "llama3.2",
    messages: [{ role: "user", content: "Count these" }],
    stream: true,
    max_tokens: 7,
  });
  let chunks = 0;
  for await (const chunk of chat) if (chunk.choices[0]?.delta?.content) chunks++;
  const legacy = await openai.completions.create({
    model: "llama3.2",
    prompt: "Once upon",
    stream: true,
    max_tokens: 4,
  });
  for await (const _ of legacy) { /* drain */ }
  const log = fleet.coordinator.ctx.log;
  const [chatRow] = await log.query({ route: "/v1/chat/completions" });
  assert.equal(chunks, 7);
  assert.equal(chatRow.tokens_out, 7);
  assert.ok(chatRow.tokens_per_second! > 0);
  assert.equal((await log.query({ route: "/v1/completions" }))[0].tokens_out, 4);
});
