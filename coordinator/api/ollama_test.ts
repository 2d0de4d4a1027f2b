import assert from "node:assert/strict";
import { Ollama } from "../../shared/test_clients.ts";
import { startFleet } from "../testing/app.ts";

const FLEET = [
  {
    name: "alpha",
    models: ["llama3.2:latest", "nomic-embed-text:latest"],
    loaded: ["llama3.2:latest"],
  },
  { name: "beta", models: ["llama3.2:latest", "qwen3:0.6b"] },
  { name: "gamma", models: ["mistral:7b"] },
];

Deno.test("ollama API - the npm ollama client works through the coordinator", async () => {
  await using fleet = await startFleet(FLEET);
  const ollama = new Ollama({ host: fleet.url });

  const chat = await ollama.chat({
    model: "llama3.2",
    messages: [{ role: "user", content: "Hi" }],
  });
  assert.equal(chat.model, "llama3.2");
  assert.equal(chat.done, true);
  assert.ok(chat.message.content.length > 0);
  assert.ok(chat.eval_count > 0);

  let text = "";
  let last;
  for await (
    const part of await ollama.chat({
      model: "llama3.2:latest",
      messages: [{ role: "user", content: "Stream" }],
      stream: true,
    })
  ) {
    text += part.message.content;
    last = part;
  }
  assert.ok(text.length > 0);
  assert.equal(last?.done, true);
  assert.equal(last?.model, "llama3.2:latest");

  const gen = await ollama.generate({ model: "qwen3:0.6b", prompt: "Why is the sky blue?" });
  assert.equal(gen.done, true);
  assert.ok((gen.response ?? "").length > 0);
  let chunks = 0;
  for await (
    const part of await ollama.generate({ model: "mistral:7b", prompt: "Count", stream: true })
  ) {
    chunks++;
    if (part.done) assert.ok(part.eval_count > 0);
  }
  assert.ok(chunks > 1);

  const embed = await ollama.embed({ model: "nomic-embed-text", input: ["a", "b"] });
  assert.equal(embed.embeddings.length, 2);
  const legacy = await ollama.embeddings({ model: "nomic-embed-text", prompt: "a" });
  assert.ok(legacy.embedding.length > 0);

  const list = await ollama.list();
  const names = list.models.map((m) => m.name).sort();
  assert.deepEqual(names, [
    "llama3.2:latest",
    "mistral:7b",
    "nomic-embed-text:latest",
    "qwen3:0.6b",
  ]);

  const ps = await ollama.ps();
  assert.ok(ps.models.some((m) => m.name === "llama3.2:latest"));

  const show = await ollama.show({ model: "mistral:7b" });
  assert.ok(show.details);

  assert.match((await ollama.version()).version, /^\d+\.\d+\.\d+/);
});

Deno.test("ollama API - pull with progress, copy and delete reach the right agents", async () => {
  await using fleet = await startFleet(FLEET);
  const ollama = new Ollama({ host: fleet.url });

  const statuses: string[] = [];
  for await (const p of await ollama.pull({ model: "phi4:14b", stream: true })) {
    statuses.push(p.status);
  }
  assert.equal(statuses.at(-1), "success");
  assert.ok(statuses.some((s) => s.startsWith("pulling")));
  assert.ok((await ollama.list()).models.some((m) => m.name === "phi4:14b"));

  // Pull to one named agent.
  const res = await fetch(`${fleet.url}/api/pull`, {
    method: "POST",
    headers: { "x-coordinator-agent": "gamma" },
    body: JSON.stringify({ model: "tinyllama", stream: false }),
  });
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("x-coordinator-agent"), "gamma");
  assert.deepEqual(await res.json(), { status: "success" });
  const gammaTags = await (await fetch(`${fleet.sims.gamma.url}/api/tags`)).json();
  assert.ok(gammaTags.models.some((m: { name: string }) => m.name === "tinyllama:latest"));

  // Copy happens on every agent that has the source.
  await ollama.copy({ source: "llama3.2", destination: "my-llama" });
  for (const name of ["alpha", "beta"]) {
    const tags = await (await fetch(`${fleet.sims[name].url}/api/tags`)).json();
    assert.ok(tags.models.some((m: { name: string }) => m.name === "my-llama:latest"), name);
  }
  // Delete happens on every agent that has the model; then it is gone from the fleet.
  await ollama.delete({ model: "my-llama" });
  assert.ok(!(await ollama.list()).models.some((m) => m.name === "my-llama:latest"));
  await assert.rejects(ollama.delete({ model: "my-llama" }), /not found/);
});

Deno.test("ollama API - pull to all agents relays progress and ends with one success", async () => {
  await using fleet = await startFleet(FLEET);
  const res = await fetch(`${fleet.url}/api/pull`, {
    method: "POST",
    headers: { "x-coordinator-agent": "all" },
    body: JSON.stringify({ name: "gemma3:1b" }),
  });
  const lines = (await res.text()).trim().split("\n").map((l) => JSON.parse(l));
  assert.deepEqual(lines.at(-1), { status: "success" });
  assert.equal(lines.filter((l) => l.status === "success").length, 1);
  assert.deepEqual(
    new Set(lines.slice(0, -1).map((l) => l.agent)),
    new Set(["alpha", "beta", "gamma"]),
  );
  for (const sim of Object.values(fleet.sims)) {
    const tags = await (await fetch(`${sim.url}/api/tags`)).json();
    assert.ok(tags.models.some((m: { name: string }) => m.name === "gemma3:1b"));
  }
});

Deno.test("ollama API - errors in Ollama's shapes, headers name the agent, never its address", async () => {
  await using fleet = await startFleet(FLEET);
  const post = (path: string, body: string, method = "POST") =>
    fetch(`${fleet.url}${path}`, { method, body, headers: { "content-type": "application/json" } });

  const missing = await post("/api/chat", JSON.stringify({ model: "nope", messages: [] }));
  assert.equal(missing.status, 404);
  assert.deepEqual(await missing.json(), { error: 'model "nope" not found, try pulling it first' });
  const noModel = await post("/api/generate", JSON.stringify({ prompt: "x" }));
  assert.equal(noModel.status, 400);
  assert.deepEqual(await noModel.json(), { error: "model is required" });
  const badJson = await post("/api/chat", "{");
  assert.equal(badJson.status, 400);
  assert.match((await badJson.json()).error, /invalid JSON/);
  const wrongMethod = await fetch(`${fleet.url}/api/chat`);
  assert.equal(wrongMethod.status, 405);
  await wrongMethod.body?.cancel();
  const unknown = await fetch(`${fleet.url}/api/unknown`);
  assert.equal(unknown.status, 404);
  await unknown.body?.cancel();

  const ok = await post(
    "/api/generate",
    JSON.stringify({ model: "mistral:7b", prompt: "x", stream: false }),
  );
  assert.equal(ok.headers.get("x-coordinator-agent"), "gamma");
  assert.ok(ok.headers.get("x-request-id"));
  const body = await ok.text();
  assert.ok(!body.includes("127.0.0.1"));
  for (const [, v] of ok.headers) assert.ok(!v.includes(String(fleet.sims.gamma.port)));

  const root = await fetch(fleet.url);
  assert.ok(root.headers.get("x-request-id"));
  assert.equal(await root.text(), "Ollama is running");
  // The client's own id is echoed beside ours, never in its place.
  const tags = await fetch(`${fleet.url}/api/tags`, { headers: { "x-request-id": "trace-42" } });
  assert.equal(tags.headers.get("x-client-request-id"), "trace-42");
  assert.notEqual(tags.headers.get("x-request-id"), "trace-42");
  await tags.body?.cancel();
  const head = await fetch(fleet.url, { method: "HEAD" });
  assert.equal(head.status, 200);
});

Deno.test("ollama API - no agent online is 503 with Retry-After; empty fleet lists are []", async () => {
  await using fleet = await startFleet([]);
  const res = await fetch(`${fleet.url}/api/chat`, {
    method: "POST",
    body: JSON.stringify({ model: "llama3.2", messages: [{ role: "user", content: "x" }] }),
  });
  assert.equal(res.status, 503);
  assert.ok(Number(res.headers.get("retry-after")) > 0);
  assert.match((await res.json()).error, /No agent is online/);
  assert.deepEqual(await (await fetch(`${fleet.url}/api/tags`)).json(), { models: [] });
  assert.deepEqual(await (await fetch(`${fleet.url}/api/ps`)).json(), { models: [] });
  assert.deepEqual(await (await fetch(`${fleet.url}/v1/models`)).json(), {
    object: "list",
    data: [],
  });
});

Deno.test("ollama API - agents named outside Latin-1 serve requests and can be pinned by name", async () => {
  const names = ["gpu-箱", "rack 3 – a", "🦙 llama", "100% busy"];
  await using fleet = await startFleet(
    names.map((name) => ({ name, models: ["llama3.2", "mistral:7b"] })),
  );
  const chat = (headers: Record<string, string> = {}, stream = false) =>
    fetch(`${fleet.url}/api/chat`, {
      method: "POST",
      headers,
      body: JSON.stringify({
        model: "llama3.2",
        messages: [{ role: "user", content: "Hi" }],
        stream,
      }),
    });
  const served = new Set<string>();
  for (const name of names) {
    // What the coordinator sends back names the agent; sent back as is, it pins that agent.
    const first = await chat();
    assert.equal(first.status, 200, await first.clone().text());
    const sent = first.headers.get("x-coordinator-agent")!;
    assert.match(sent, /^[\x20-\x7e]+$/);
    served.add(decodeURIComponent(sent));
    await first.body?.cancel();
    const pinned = await chat({ "x-coordinator-agent": sent }, true);
    assert.equal(pinned.status, 200);
    assert.equal(pinned.headers.get("x-coordinator-agent"), sent);
    assert.ok((await pinned.text()).includes('"done":true'));
    // The name itself, as raw UTF-8 bytes (what curl -H sends), pins it too.
    const raw = String.fromCharCode(...new TextEncoder().encode(name));
    const byName = await chat({ "x-coordinator-agent": raw });
    assert.equal(decodeURIComponent(byName.headers.get("x-coordinator-agent")!), name);
    await byName.body?.cancel();
    // Pulls, copies and deletes name it the same way.
    const pull = await fetch(`${fleet.url}/api/pull`, {
      method: "POST",
      headers: { "x-coordinator-agent": agentHeader(name) },
      body: JSON.stringify({ model: "tinyllama", stream: false }),
    });
    assert.equal(pull.status, 200);
    assert.equal(pull.headers.get("x-coordinator-agent"), agentHeader(name));
    await pull.body?.cancel();
  }
  assert.ok(served.size >= 1);
  assert.equal(agentHeader("gpu-箱"), "gpu-%E7%AE%B1");
  assert.equal(agentHeader("100% busy"), "100%25 busy");
  const copy = await fetch(`${fleet.url}/api/copy`, {
    method: "POST",
    body: JSON.stringify({ source: "mistral:7b", destination: "my-mistral" }),
  });
  assert.equal(copy.status, 200);
  assert.deepEqual(
    copy.headers.get("x-coordinator-agent")!.split(",").map(decodeURIComponent).sort(),
    [...names].sort(),
  );
});

/** RFC 8187 percent-encoding of a name, as the README describes it. */
function agentHeader(name: string): string {
  return [...new TextEncoder().encode(name)].map((b) =>
    b >= 0x20 && b <= 0x7e && b !== 0x25
      ? String.fromCharCode(b)
      : `%${b.toString(16).toUpperCase().padStart(2, "0")}`
  ).join("");
}

/** Sends a raw HTTP/1.1 request whose chunked body has a 20 kB chunk extension; the answer. */
async function malformedUpload(
  port: number,
  path: string,
): Promise<{ status: number; body: string }> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const head = `POST ${path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n` +
    "transfer-encoding: chunked\r\nconnection: close\r\n\r\n";
  await conn.write(
    new TextEncoder().encode(`${head}5;${"x".repeat(20_000)}\r\n{"a":\r\n0\r\n\r\n`),
  );
  let text = "";
  const buf = new Uint8Array(16 * 1024);
  for (let n = await conn.read(buf); n !== null; n = await conn.read(buf)) {
    text += new TextDecoder().decode(buf.subarray(0, n));
  }
  conn.close();
  const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1]);
  const body = text.slice(text.indexOf("\r\n\r\n") + 4);
  return { status, body: body.includes("\r\n") ? dechunk(body) : body };
}

function dechunk(body: string): string {
  let out = "";
  let rest = body;
  for (;;) {
    const nl = rest.indexOf("\r\n");
    const size = parseInt(rest.slice(0, nl), 16);
    if (!size) return out;
    out += rest.slice(nl + 2, nl + 2 + size);
    rest = rest.slice(nl + 4 + size);
  }
}

Deno.test("ollama API - a body that cannot be read is a 400 in the route's shape, not a 500", async () => {
  await using fleet = await startFleet(FLEET);
  const port = fleet.coordinator.port;
  const digest = `sha256:${"a".repeat(64)}`;
  for (const path of ["/api/chat", "/api/generate", "/api/pull", "/api/create", "/api/copy"]) {
    const res = await malformedUpload(port, path);
    assert.equal(res.status, 400, path);
    assert.match(JSON.parse(res.body).error, /Cannot read the request body/, path);
  }
  const blob = await malformedUpload(port, `/api/blobs/${digest}`);
  assert.equal(blob.status, 400);
  assert.match(JSON.parse(blob.body).error, /Cannot read the request body/);
  const v1 = await malformedUpload(port, "/v1/chat/completions");
  assert.equal(v1.status, 400);
  assert.equal(JSON.parse(v1.body).error.type, "invalid_request_error");
  // The coordinator still serves.
  const ok = await fetch(`${fleet.url}/api/version`);
  assert.equal(ok.status, 200);
  await ok.body?.cancel();
});
