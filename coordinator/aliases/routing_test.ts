/**
 * Aliases end to end: real clients (ollama, openai, @anthropic-ai/sdk) ask for an alias, a real
 * coordinator rewrites it to its model for simulated agents, and every answer names the alias.
 */
import assert from "node:assert/strict";
import { Anthropic, Ollama, OpenAI } from "../../shared/test_clients.ts";
import { TEST_AGENT_TOKEN } from "../config.ts";
import { registration, startFleet } from "../testing/app.ts";

const FLEET = [
  { name: "alpha", models: ["llama3.2:3b", "nomic-embed-text:latest"] },
  { name: "beta", models: ["qwen3:0.6b"] },
];

const ALIASES = [
  { alias: "gpt-4o-mini", model: "llama3.2:3b" },
  { alias: "text-embedding-3-small", model: "nomic-embed-text" },
  { alias: "claude-sonnet-4-5", model: "qwen3:0.6b" },
];

async function aliasFleet() {
  const fleet = await startFleet(FLEET);
  for (const a of ALIASES) await putAlias(fleet, a);
  return fleet;
}

async function putAlias(
  fleet: Awaited<ReturnType<typeof startFleet>>,
  alias: { alias: string; model: string; listed?: boolean },
) {
  const res = await fetch(`${fleet.url}/api/admin/aliases`, {
    method: "PUT",
    headers: fleet.adminHeaders,
    body: JSON.stringify(alias),
  });
  assert.equal(res.status, 200, await res.text());
}

const USER = [{ role: "user" as const, content: "Hello" }];

Deno.test("aliases - Ollama's native API: chat, generate, embed and show by alias", async () => {
  await using fleet = await aliasFleet();
  const ollama = new Ollama({ host: fleet.url });
  const chat = await ollama.chat({ model: "gpt-4o-mini", messages: USER });
  assert.equal(chat.model, "gpt-4o-mini");
  assert.ok(chat.message.content.length > 0);
  let parts = 0;
  for await (
    const part of await ollama.chat({ model: "GPT-4o-mini", messages: USER, stream: true })
  ) {
    // The name exactly as the client wrote it.
    assert.equal(part.model, "GPT-4o-mini");
    parts++;
  }
  assert.ok(parts > 2);
  for await (
    const part of await ollama.generate({ model: "gpt-4o-mini", prompt: "Hi", stream: true })
  ) {
    assert.equal(part.model, "gpt-4o-mini");
  }
  const embed = await ollama.embed({ model: "text-embedding-3-small", input: ["a", "b"] });
  assert.equal(embed.model, "text-embedding-3-small");
  assert.equal(embed.embeddings.length, 2);
  const show = await ollama.show({ model: "gpt-4o-mini" });
  assert.ok(show.details.parameter_size);
  // The older `name` member of /api/show is rewritten too.
  const byName = await fetch(`${fleet.url}/api/show`, {
    method: "POST",
    body: JSON.stringify({ name: "gpt-4o-mini" }),
  });
  assert.equal(byName.status, 200, await byName.clone().text());
  await byName.body?.cancel();

  // The request log and routing see the real model; the alias does not reach agents.
  const rows = await fleet.coordinator.ctx.log.query({});
  assert.ok(rows.length >= 5);
  assert.ok(
    rows.every((r) => ["llama3.2:3b", "nomic-embed-text"].includes(r.model ?? "")),
    "logged",
  );
  assert.ok(rows.every((r) => r.agent_name === "alpha"));
});

Deno.test("aliases - OpenAI's API: chat streamed and not, and embeddings by alias", async () => {
  await using fleet = await aliasFleet();
  const openai = new OpenAI({ baseURL: `${fleet.url}/v1`, apiKey: "x", maxRetries: 0 });
  const chat = await openai.chat.completions.create({ model: "gpt-4o-mini", messages: USER });
  assert.equal(chat.model, "gpt-4o-mini");
  const stream = await openai.chat.completions.create({
    model: "gpt-4o-mini",
    messages: USER,
    stream: true,
    stream_options: { include_usage: true },
  });
  let chunks = 0;
  for await (const chunk of stream) {
    assert.equal(chunk.model, "gpt-4o-mini");
    chunks++;
  }
  assert.ok(chunks > 2);
  const emb = await openai.embeddings.create({ model: "text-embedding-3-small", input: "hi" });
  assert.equal(emb.model, "text-embedding-3-small");
  assert.ok(emb.data[0].embedding.length > 0);
  const [row] = await fleet.coordinator.ctx.log.query({ route: "/v1/chat/completions", limit: 1 });
  assert.equal(row.model, "llama3.2:3b");
  assert.ok(row.tokens_out! > 0);
});

Deno.test("aliases - Anthropic's API: messages created and streamed by alias", async () => {
  await using fleet = await aliasFleet();
  const client = new Anthropic({ baseURL: fleet.url, apiKey: "x", maxRetries: 0 });
  const message = await client.messages.create({
    model: "claude-sonnet-4-5",
    max_tokens: 100,
    messages: USER,
  });
  assert.equal(message.model, "claude-sonnet-4-5");
  const stream = client.messages.stream({
    model: "claude-sonnet-4-5",
    max_tokens: 100,
    messages: USER,
  });
  const started: string[] = [];
  stream.on("streamEvent", (e: { type: string; message?: { model: string } }) => {
    if (e.type === "message_start") started.push(e.message!.model);
  });
  const final = await stream.finalMessage();
  assert.deepEqual(started, ["claude-sonnet-4-5"]);
  assert.equal(final.model, "claude-sonnet-4-5");
  const rows = await fleet.coordinator.ctx.log.query({ route: "/v1/messages" });
  assert.deepEqual(rows.map((r) => [r.model, r.agent_name]), [
    ["qwen3:0.6b", "beta"],
    ["qwen3:0.6b", "beta"],
  ]);
});

Deno.test("aliases - listed only when asked in /api/tags and /v1/models; retrievable by name", async () => {
  await using fleet = await aliasFleet();
  const tags = async () =>
    (await (await fetch(`${fleet.url}/api/tags`)).json()).models.map((m: { name: string }) =>
      m.name
    ).sort();
  const ids = async () =>
    (await (await fetch(`${fleet.url}/v1/models`)).json()).data.map((m: { id: string }) => m.id)
      .sort();
  assert.deepEqual(await tags(), ["llama3.2:3b", "nomic-embed-text:latest", "qwen3:0.6b"]);
  assert.deepEqual(await ids(), ["llama3.2:3b", "nomic-embed-text:latest", "qwen3:0.6b"]);
  const one = await fetch(`${fleet.url}/v1/models/gpt-4o-mini`);
  assert.equal(one.status, 200);
  assert.equal((await one.json()).id, "gpt-4o-mini");

  await putAlias(fleet, { alias: "gpt-4o-mini", model: "llama3.2:3b", listed: true });
  const listed = (await (await fetch(`${fleet.url}/api/tags`)).json()).models;
  const entry = listed.find((m: { name: string }) => m.name === "gpt-4o-mini");
  const real = listed.find((m: { name: string }) => m.name === "llama3.2:3b");
  assert.deepEqual(entry, { ...real, name: "gpt-4o-mini", model: "gpt-4o-mini" });
  assert.ok((await ids()).includes("gpt-4o-mini"));

  // An alias to a model no agent has is not listed, and answers like a missing model.
  await putAlias(fleet, { alias: "gpt-5", model: "absent:70b", listed: true });
  assert.ok(!(await tags()).includes("gpt-5"));
  const missing = await fetch(`${fleet.url}/v1/models/gpt-5`);
  assert.equal(missing.status, 404);
  await missing.body?.cancel();
});

Deno.test("aliases - the agent gets the client's bytes with only the model changed", async () => {
  const received: string[] = [];
  const agent = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
    const path = new URL(req.url).pathname;
    if (path !== "/api/chat") return Response.json({ models: [] });
    const body = await req.text();
    received.push(body);
    const model = JSON.parse(body).model;
    return Response.json({ model, message: { role: "assistant", content: "hi" }, done: true });
  });
  await using fleet = await startFleet([]);
  const reg = await fetch(`${fleet.url}/api/agents`, {
    method: "POST",
    headers: { authorization: `Bearer ${TEST_AGENT_TOKEN}` },
    body: JSON.stringify(registration({
      machine_name: "capture",
      ollama_port: agent.addr.port,
      models: [{ name: "llama3.2:3b" }],
    })),
  });
  assert.equal(reg.status, 201);
  await putAlias(fleet, { alias: "gpt-4o-mini", model: "llama3.2:3b" });
  const sent = '{ "stream" : false,\n "model":"gpt-4o-mini" , "messages":[{"role":"user",' +
    '"content":"\\u00e9 \\"model\\":\\"gpt-4o-mini\\""}], "options":{"temperature":1.50} }';
  const res = await fetch(`${fleet.url}/api/chat`, { method: "POST", body: sent });
  assert.equal(res.status, 200);
  assert.equal((await res.json()).model, "gpt-4o-mini");
  assert.equal(received[0], sent.replace('"model":"gpt-4o-mini" ', '"model":"llama3.2:3b" '));
  // A model that is no alias goes through byte for byte.
  const plain = sent.replace('"model":"gpt-4o-mini" ', '"model":"llama3.2:3b" ');
  await (await fetch(`${fleet.url}/api/chat`, { method: "POST", body: plain })).body?.cancel();
  assert.equal(received[1], plain);
  await agent.shutdown();
});
