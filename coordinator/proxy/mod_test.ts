import assert from "node:assert/strict";
import { TEST_AGENT_TOKEN } from "../config.ts";
import { registration, startFleet } from "../testing/app.ts";
import { collectGarbage } from "../testing/gc.ts";
import { proxyInference } from "./mod.ts";

const chatBody = (stream: boolean, content = "Tell me a story") =>
  JSON.stringify({ model: "llama3.2", messages: [{ role: "user", content }], stream });

async function post(url: string, body: string, signal?: AbortSignal) {
  return await fetch(`${url}/api/chat`, {
    method: "POST",
    body,
    signal,
    headers: { "content-type": "application/json" },
  });
}

Deno.test("proxy - the stream is passed through byte for byte with the upstream's headers", async () => {
  await using fleet = await startFleet([{
    name: "only",
    models: ["llama3.2"],
    tokensPerSecond: 5000,
  }]);
  const direct = await post(fleet.sims.only.url, chatBody(true));
  const viaCoordinator = await post(fleet.url, chatBody(true));
  assert.equal(viaCoordinator.headers.get("content-type"), direct.headers.get("content-type"));
  const strip = (s: string) =>
    s.replace(/"created_at":"[^"]+"/g, "").replace(/"\w+_duration":\d+/g, "");
  assert.equal(strip(await viaCoordinator.text()), strip(await direct.text()));
});

Deno.test("proxy - refused connections and busy agents are retried elsewhere before the first byte", async () => {
  await using fleet = await startFleet([
    { name: "down", models: ["llama3.2"], loaded: ["llama3.2"] },
    { name: "busy", models: ["llama3.2"], loaded: ["llama3.2"] },
    { name: "fine", models: ["llama3.2"] },
  ]);
  await fleet.sims.down.setFault({ type: "refuse" });
  await fleet.sims.busy.setFault({ type: "busy" });
  for (let i = 0; i < 4; i++) {
    const res = await post(fleet.url, chatBody(i % 2 === 0));
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("x-coordinator-agent"), "fine");
    const text = await res.text();
    assert.ok(!text.includes('"error"'), text);
  }
  const events = (await fleet.coordinator.ctx.registry.events()).map((e) => e.kind);
  assert.ok(events.includes("failure"));
  assert.equal(fleet.coordinator.ctx.registry.find("busy")!.status, "online");
});

Deno.test("proxy - a non-streaming request is retried even when the agent died halfway", async () => {
  await using fleet = await startFleet([
    {
      name: "dies",
      models: ["llama3.2"],
      loaded: ["llama3.2"],
      fault: { type: "die_after", chunks: 2 },
    },
    { name: "fine", models: ["llama3.2"] },
  ]);
  const res = await post(fleet.url, chatBody(false));
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("x-coordinator-agent"), "fine");
  const body = await res.json();
  assert.equal(body.done, true);
});

Deno.test("proxy - an agent dying mid-stream ends the stream with Ollama's in-stream error", async () => {
  await using fleet = await startFleet([
    {
      name: "dies",
      models: ["llama3.2"],
      tokensPerSecond: 200,
      fault: { type: "die_after", chunks: 3 },
    },
  ]);
  const res = await post(fleet.url, chatBody(true));
  assert.equal(res.status, 200);
  const lines = (await res.text()).trim().split("\n").map((l) => JSON.parse(l));
  assert.ok(lines.length >= 2);
  assert.match(lines.at(-1).error, /agent "dies" .* during the stream/);
  assert.ok(lines.slice(0, -1).every((l) => l.done === false));
  const ctx = fleet.coordinator.ctx;
  ctx.log.flush();
  const [logged] = await ctx.log.query({ limit: 1 });
  assert.match(logged.error ?? "", /during the stream/);
  assert.equal(ctx.registry.find("dies")!.inFlight, 0);
});

Deno.test("proxy - /v1 streams end with an SSE error event when the agent dies", async () => {
  await using fleet = await startFleet([
    {
      name: "dies",
      models: ["llama3.2"],
      tokensPerSecond: 200,
      fault: { type: "die_after", chunks: 3 },
    },
  ]);
  const res = await fetch(`${fleet.url}/v1/chat/completions`, {
    method: "POST",
    body: JSON.stringify({
      model: "llama3.2",
      messages: [{ role: "user", content: "x" }],
      stream: true,
    }),
  });
  const events = (await res.text()).trim().split("\n\n");
  const last = JSON.parse(events.at(-1)!.replace(/^data: /, ""));
  assert.equal(last.error.type, "api_error");
  assert.match(last.error.message, /during the stream/);
});

Deno.test("proxy - an agent that hangs times out and the request is served elsewhere", async () => {
  await using fleet = await startFleet([
    { name: "hangs", models: ["llama3.2"], loaded: ["llama3.2"], fault: { type: "hang" } },
    { name: "fine", models: ["llama3.2"] },
  ], { firstByteTimeout: 0.3 });
  const res = await post(fleet.url, chatBody(true));
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("x-coordinator-agent"), "fine");
  await res.body?.cancel();
});

Deno.test("proxy - a long non-streaming answer outlasts the first-byte timeout while the agent answers probes", async () => {
  await using fleet = await startFleet([
    { name: "slow", models: ["llama3.2"], loaded: ["llama3.2"], tokensPerSecond: 20 },
  ], { firstByteTimeout: 0.3, probeTimeout: 0.5 });
  const started = performance.now();
  const res = await fetch(`${fleet.url}/api/generate`, {
    method: "POST",
    body: JSON.stringify({
      model: "llama3.2",
      prompt: "a long answer",
      stream: false,
      options: { num_predict: 24 },
    }),
  });
  assert.equal(res.status, 200);
  const body = await res.json();
  assert.equal(body.eval_count, 24);
  assert.ok(performance.now() - started > 900, "the answer took several first-byte timeouts");
  assert.equal(
    (await fleet.coordinator.ctx.registry.events()).filter((e) => e.kind === "failure").length,
    0,
  );
});

Deno.test("proxy - a client that disconnects aborts the upstream request at once", async () => {
  await using fleet = await startFleet([{
    name: "slow",
    models: ["llama3.2"],
    tokensPerSecond: 20,
  }]);
  const ac = new AbortController();
  const res = await post(fleet.url, chatBody(true), ac.signal);
  const reader = res.body!.getReader();
  await reader.read();
  ac.abort();
  await reader.cancel().catch(() => {});
  const sim = fleet.sims.slow;
  for (let i = 0; i < 100 && sim.stats.aborted === 0; i++) {
    await new Promise((r) => setTimeout(r, 10));
  }
  assert.equal(sim.stats.aborted, 1);
  assert.equal(sim.stats.inFlight, 0);
  const agent = fleet.coordinator.ctx.registry.find("slow")!;
  for (let i = 0; i < 100 && agent.inFlight > 0; i++) await new Promise((r) => setTimeout(r, 10));
  assert.equal(agent.inFlight, 0);
});

Deno.test("proxy - a stream under way no longer holds the request's body", async () => {
  // A prompt with its chat history can be large, and a stream can last minutes.
  await using fleet = await startFleet([{
    name: "slow",
    models: ["llama3.2"],
    tokensPerSecond: 5,
  }]);
  let body: Uint8Array<ArrayBuffer> | undefined = new TextEncoder().encode(
    chatBody(true, "x".repeat(10_000)),
  );
  const held = new WeakRef(body);
  const res = await proxyInference(fleet.coordinator.ctx, {
    route: "/api/chat",
    upstreamPath: "/api/chat",
    method: "POST",
    headers: new Headers({ "content-type": "application/json" }),
    body,
    model: "llama3.2",
    stream: true,
    flavor: "ollama",
    requestId: "body-test",
    signal: new AbortController().signal,
  });
  body = undefined;
  const reader = res.body!.getReader();
  assert.ok((await reader.read()).value);
  await collectGarbage();
  assert.equal(held.deref(), undefined);
  await reader.cancel();
  const sim = fleet.sims.slow;
  for (let i = 0; i < 100 && sim.stats.inFlight > 0; i++) {
    await new Promise((r) => setTimeout(r, 10));
  }
});

Deno.test("proxy - the request log records route, agent, tokens and speed", async () => {
  await using fleet = await startFleet([{ name: "only", models: ["llama3.2"] }]);
  const res = await post(fleet.url, chatBody(false));
  const id = res.headers.get("x-request-id");
  await res.body?.cancel();
  const [r] = await fleet.coordinator.ctx.log.query({ limit: 1 });
  assert.equal(r.id, id);
  assert.equal(r.route, "/api/chat");
  assert.equal(r.agent_name, "only");
  assert.equal(r.status, 200);
  assert.ok(r.tokens_out! > 0);
  assert.ok(r.tokens_per_second! > 0);
  const speed = fleet.coordinator.ctx.scheduler.speeds.get(
    fleet.ids.only,
    "registry.ollama.ai/library/llama3.2:latest",
  );
  assert.ok(speed?.tokensPerSecond);
});

Deno.test("proxy - a client's X-Request-Id cannot merge requests: each gets its own row", async () => {
  await using fleet = await startFleet([{ name: "only", models: ["llama3.2"] }]);
  const ids = new Set<string>();
  for (let i = 0; i < 10; i++) {
    const res = await fetch(`${fleet.url}/api/chat`, {
      method: "POST",
      body: chatBody(i % 2 === 0, `q${i}`),
      headers: { "x-request-id": "same-id" },
    });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("x-client-request-id"), "same-id");
    ids.add(res.headers.get("x-request-id")!);
    await res.text();
  }
  assert.equal(ids.size, 10);
  assert.ok(!ids.has("same-id"));
  const rows = await fleet.coordinator.ctx.log.query({ limit: 100 });
  assert.equal(rows.length, 10);
  assert.deepEqual(new Set(rows.map((r) => r.id)), ids);
  assert.ok(rows.every((r) => r.client_request_id === "same-id"));
  assert.equal(rows.reduce((n, r) => n + (r.tokens_out ?? 0), 0) > 10, true);
  // An id a client could use to inject anything is not kept at all.
  const odd = await fetch(`${fleet.url}/api/chat`, {
    method: "POST",
    body: chatBody(false),
    headers: { "x-request-id": "a b" },
  });
  assert.equal(odd.headers.get("x-client-request-id"), null);
  await odd.body?.cancel();
});

Deno.test("proxy - the first chunk reaches the client before the agent sends its second", async () => {
  // One token a second: the second chunk leaves the simulator a second after the first.
  await using fleet = await startFleet([{
    name: "slow",
    models: ["llama3.2"],
    tokensPerSecond: 1,
    ttftMs: 0,
  }]);
  const started = performance.now();
  const res = await post(fleet.url, chatBody(true));
  const reader = res.body!.getReader();
  const first = await reader.read();
  const firstMs = performance.now() - started;
  assert.equal(first.done, false);
  assert.equal(JSON.parse(new TextDecoder().decode(first.value!).split("\n")[0]).done, false);
  console.log(`first chunk after ${firstMs.toFixed(1)} ms; the second is due after 1000 ms`);
  assert.ok(firstMs < 900, `first chunk took ${firstMs} ms`);
  await reader.cancel();
});

Deno.test("proxy - the agent sees a client's abort within 100 ms", async () => {
  await using fleet = await startFleet([{
    name: "slow",
    models: ["llama3.2"],
    tokensPerSecond: 20,
  }]);
  const sim = fleet.sims.slow;
  const ac = new AbortController();
  const res = await post(fleet.url, chatBody(true), ac.signal);
  const reader = res.body!.getReader();
  await reader.read();
  const abortedAt = performance.now();
  ac.abort();
  await reader.cancel().catch(() => {});
  while (sim.stats.aborted === 0 && performance.now() - abortedAt < 2000) {
    await new Promise((r) => setTimeout(r, 1));
  }
  const ms = performance.now() - abortedAt;
  console.log(`the simulator saw the abort after ${ms.toFixed(1)} ms`);
  assert.equal(sim.stats.aborted, 1);
  assert.ok(ms < 100, `abort took ${ms} ms to reach the agent`);
});

/**
 * A hand-written Ollama for answers the simulator never gives: cookies and other headers of its
 * own, and answers too large to hold.
 */
function oddAgent() {
  const cancelled = Promise.withResolvers<void>();
  const own = {
    "set-cookie": "agent_session=secret; Path=/",
    "www-authenticate": 'Basic realm="agent"',
    "strict-transport-security": "max-age=31536000",
    "alt-svc": 'h3=":443"',
    "access-control-allow-origin": "*",
    "x-ollama-extra": "kept",
  };
  const MiB = 1024 * 1024;
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (req) => {
    const path = new URL(req.url).pathname;
    const json = (v: unknown, ndjson = false) =>
      new Response(JSON.stringify(v) + (ndjson ? "\n" : ""), {
        headers: { "content-type": ndjson ? "application/x-ndjson" : "application/json", ...own },
      });
    if (path === "/api/version") return json({ version: "0.12.6" });
    if (path === "/api/tags" || path === "/api/ps") return json({ models: [] });
    if (path === "/api/chat") {
      return json({ model: "llama3.2", message: { role: "assistant", content: "hi" }, done: true });
    }
    if (path === "/api/pull") return json({ status: "success" }, true);
    if (path === "/api/show") return new Response(new Uint8Array(64 * MiB + 1)); // declared length
    if (path === "/api/embed") {
      let sent = 0;
      return new Response(
        new ReadableStream<Uint8Array>({
          pull(controller) {
            // Twice the limit: the coordinator must give up halfway and close the connection.
            if (sent++ >= 128) controller.close();
            else controller.enqueue(new Uint8Array(MiB).fill(32));
          },
          cancel() {
            cancelled.resolve();
          },
        }),
        { headers: { "content-type": "application/json" } },
      );
    }
    return new Response("not found", { status: 404 });
  });
  return {
    port: server.addr.port,
    embedCancelled: cancelled.promise,
    [Symbol.asyncDispose]: () => server.shutdown(),
  };
}

async function registerOdd(url: string, port: number) {
  const res = await fetch(`${url}/api/agents`, {
    method: "POST",
    headers: { authorization: `Bearer ${TEST_AGENT_TOKEN}`, "content-type": "application/json" },
    body: JSON.stringify(registration({
      machine_name: "odd",
      ollama_port: port,
      models: [{ name: "llama3.2:latest" }],
    })),
  });
  assert.equal(res.status, 201);
  await res.body?.cancel();
}

Deno.test("proxy - an agent's Set-Cookie and other headers for its own origin never reach clients", async () => {
  await using agent = oddAgent();
  await using fleet = await startFleet([]);
  await registerOdd(fleet.url, agent.port);
  const answers = [
    await post(fleet.url, chatBody(false)),
    await post(fleet.url, chatBody(true)),
    await fetch(`${fleet.url}/api/pull`, {
      method: "POST",
      body: JSON.stringify({ model: "tinyllama" }),
    }),
  ];
  for (const res of answers) {
    assert.equal(res.status, 200);
    for (const name of ["set-cookie", "www-authenticate", "strict-transport-security", "alt-svc"]) {
      assert.equal(res.headers.get(name), null, name);
    }
    assert.equal(res.headers.get("access-control-allow-origin"), null);
    assert.equal(res.headers.get("x-ollama-extra"), "kept");
    assert.equal(res.headers.get("x-coordinator-agent"), "odd");
    await res.body?.cancel();
  }
});

Deno.test("proxy - a non-streaming answer larger than 64 MiB fails with 502 and drops the agent", async () => {
  await using agent = oddAgent();
  await using fleet = await startFleet([]);
  await registerOdd(fleet.url, agent.port);
  for (const route of ["/api/show", "/api/embed"]) {
    const res = await fetch(`${fleet.url}${route}`, {
      method: "POST",
      body: JSON.stringify({ model: "llama3.2", input: "x" }),
    });
    assert.equal(res.status, 502, route);
    assert.match((await res.json()).error, /agent "odd" answered with more than 67108864 bytes/);
  }
  await agent.embedCancelled; // the coordinator closed the connection mid-answer
  const logged = await fleet.coordinator.ctx.log.query({ limit: 10 });
  assert.deepEqual(logged.map((r) => r.status), [502, 502]);
  // Not the agent's failure: it is still in service.
  assert.equal(fleet.coordinator.ctx.registry.find("odd")!.status, "online");
  const after = await post(fleet.url, chatBody(false));
  assert.equal(after.status, 200);
  await after.body?.cancel();
});
