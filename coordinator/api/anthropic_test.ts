import assert from "node:assert/strict";
import { Anthropic } from "../../shared/test_clients.ts";
import { TEST_AGENT_TOKEN } from "../config.ts";
import { registration, startFleet } from "../testing/app.ts";

const FLEET = [
  { name: "alpha", models: ["llama3.2:latest"] },
  { name: "beta", models: ["qwen3:0.6b"] },
];

const HELLO = {
  max_tokens: 200,
  system: "Be brief",
  messages: [{ role: "user" as const, content: "Hello" }],
};

type ApiError = InstanceType<typeof Anthropic.APIError>;

/** The named events of an SSE body: `[event, data]` pairs (data parsed when it is JSON). */
function sseEvents(text: string): [string, unknown][] {
  return text.trimEnd().split("\n\n").map((block) => {
    const event = /^event: (.*)$/m.exec(block)?.[1] ?? "";
    const data = /^data: (.*)$/m.exec(block)?.[1] ?? "";
    try {
      return [event, JSON.parse(data)];
    } catch {
      return [event, data];
    }
  });
}

Deno.test("anthropic API - the npm @anthropic-ai/sdk client works through the coordinator", async () => {
  await using fleet = await startFleet(FLEET);
  const client = new Anthropic({ baseURL: fleet.url, apiKey: "ollama", maxRetries: 0 });

  const message = await client.messages.create({ model: "llama3.2", ...HELLO });
  assert.equal(message.type, "message");
  assert.equal(message.role, "assistant");
  assert.equal(message.model, "llama3.2");
  assert.equal(message.stop_reason, "end_turn");
  const [block] = message.content;
  assert.ok(block.type === "text" && block.text.length > 0);
  assert.ok(message.usage.input_tokens > 0 && message.usage.output_tokens > 0);

  const stream = client.messages.stream({ model: "qwen3:0.6b", ...HELLO });
  let text = "";
  stream.on("text", (t: string) => text += t);
  const final = await stream.finalMessage();
  assert.ok(text.length > 0);
  const [streamed] = final.content;
  assert.ok(streamed.type === "text");
  assert.equal(streamed.text, text);
  assert.equal(final.model, "qwen3:0.6b");
  assert.ok(final.usage.input_tokens > 0 && final.usage.output_tokens > 0);

  // `stream: true` on create gives the raw events, as the SDK reads them.
  const raw = await client.messages.create({ model: "llama3.2", ...HELLO, stream: true });
  const kinds: string[] = [];
  for await (const event of raw) kinds.push(event.type);
  assert.equal(kinds[0], "message_start");
  assert.equal(kinds.at(-1), "message_stop");
  assert.ok(kinds.includes("content_block_delta") && kinds.includes("message_delta"));

  // Each request is in the request log with its tokens, streamed or not.
  const log = fleet.coordinator.ctx.log;
  const rows = await log.query({ route: "/v1/messages" });
  assert.equal(rows.length, 3);
  for (const row of rows) {
    assert.equal(row.status, 200);
    assert.ok(row.tokens_in! > 0, `tokens_in of ${row.model}`);
    assert.ok(row.tokens_out! > 0, `tokens_out of ${row.model}`);
  }
  const streamedRow = rows.find((r) => r.model === "qwen3:0.6b")!;
  assert.equal(streamedRow.tokens_in, final.usage.input_tokens);
  assert.equal(streamedRow.tokens_out, final.usage.output_tokens);
  assert.equal(streamedRow.agent_name, "beta");
  assert.ok(streamedRow.ttft_ms !== null);
});

Deno.test("anthropic API - errors use Anthropic's shape and status, before and after routing", async () => {
  await using fleet = await startFleet(FLEET);
  const client = new Anthropic({ baseURL: fleet.url, apiKey: "ollama", maxRetries: 0 });

  // From the agent (Ollama validates max_tokens), passed through.
  await assert.rejects(
    client.messages.create({ model: "llama3.2", max_tokens: 0, messages: HELLO.messages }),
    (e: ApiError) => e instanceof Anthropic.BadRequestError && /max_tokens/.test(e.message),
  );
  // From the coordinator: no agent has the model.
  await assert.rejects(
    client.messages.create({ model: "missing", ...HELLO }),
    (e: ApiError) => e instanceof Anthropic.NotFoundError && /not found/.test(e.message),
  );
  // Ollama serves no count_tokens, and neither does the coordinator.
  await assert.rejects(
    client.messages.countTokens({ model: "llama3.2", messages: HELLO.messages }),
    (e: ApiError) => e instanceof Anthropic.NotFoundError,
  );

  const expect = async (res: Response, status: number, type: string) => {
    assert.equal(res.status, status);
    const body = await res.json();
    assert.equal(body.type, "error");
    assert.equal(body.error.type, type);
    assert.equal(typeof body.error.message, "string");
    assert.equal(body.request_id, res.headers.get("x-request-id"));
  };
  await expect(
    await fetch(`${fleet.url}/v1/messages`, { method: "POST", body: "{" }),
    400,
    "invalid_request_error",
  );
  await expect(
    await fetch(`${fleet.url}/v1/messages`, { method: "POST", body: '{"max_tokens":5}' }),
    400,
    "invalid_request_error",
  );
  await expect(await fetch(`${fleet.url}/v1/messages`), 405, "invalid_request_error");
  const wrong = await fetch(`${fleet.url}/v1/messages`);
  assert.equal(wrong.headers.get("allow"), "POST");
  await wrong.body?.cancel();
  await expect(
    await fetch(`${fleet.url}/v1/messages/count_tokens`, { method: "POST", body: "{}" }),
    404,
    "not_found_error",
  );
  // The rest of /v1 keeps OpenAI's shape.
  const openai = await fetch(`${fleet.url}/v1/nothing`);
  assert.equal(openai.status, 404);
  assert.equal((await openai.json()).error.type, "not_found_error");
});

Deno.test("anthropic API - busy and failing agents: retried before the first byte, overloaded after", async () => {
  await using fleet = await startFleet([
    { name: "busy", models: ["llama3.2"], loaded: ["llama3.2"], fault: { type: "busy" } },
    { name: "fine", models: ["llama3.2"] },
  ]);
  const client = new Anthropic({ baseURL: fleet.url, apiKey: "ollama", maxRetries: 0 });
  for (let i = 0; i < 4; i++) {
    const res = await client.messages.create({ model: "llama3.2", ...HELLO, stream: i % 2 === 0 })
      .asResponse();
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("x-coordinator-agent"), "fine");
    await res.body?.cancel();
  }
  await fleet.sims.fine.setFault({ type: "busy" });
  await assert.rejects(
    client.messages.create({ model: "llama3.2", ...HELLO }),
    (e: ApiError) =>
      e instanceof Anthropic.InternalServerError && e.status === 503 &&
      (e.error as { error: { type: string } }).error.type === "overloaded_error",
  );
});

Deno.test("anthropic API - an agent dying mid-stream ends it with Anthropic's error event", async () => {
  await using fleet = await startFleet([
    {
      name: "dies",
      models: ["llama3.2"],
      tokensPerSecond: 200,
      fault: { type: "die_after", chunks: 3 },
    },
  ]);
  const client = new Anthropic({ baseURL: fleet.url, apiKey: "ollama", maxRetries: 0 });
  const stream = client.messages.stream({ model: "llama3.2", ...HELLO });
  await assert.rejects(stream.finalMessage(), (e: ApiError) => {
    const body = e.error as { error: { type: string; message: string } };
    return e instanceof Anthropic.APIError && body.error.type === "api_error" &&
      /agent "dies" .* during the stream/.test(body.error.message);
  });

  const res = await fetch(`${fleet.url}/v1/messages`, {
    method: "POST",
    body: JSON.stringify({ model: "llama3.2", ...HELLO, stream: true }),
  });
  assert.equal(res.status, 200);
  const events = sseEvents(await res.text());
  const [name, data] = events.at(-1)!;
  assert.equal(name, "error");
  assert.deepEqual((data as { type: string }).type, "error");
  assert.equal((data as { error: { type: string } }).error.type, "api_error");
  assert.ok(events.slice(0, -1).every(([e]) => e !== "error"));
  const ctx = fleet.coordinator.ctx;
  const [logged] = await ctx.log.query({ route: "/v1/messages", limit: 1 });
  assert.match(logged.error ?? "", /during the stream/);
  assert.equal(ctx.registry.find("dies")!.inFlight, 0);
});

Deno.test("anthropic API - a stream cut inside an event still ends with a whole error event", async () => {
  // A hand-written agent that answers one chunk and breaks off in the middle of an event.
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const part = 'event: message_start\ndata: {"type":"message_start","message":{"usage":' +
    '{"input_tokens":7,"output_tokens":0}}}\n\nevent: content_block_delta\ndata: {"ty';
  const served = (async () => {
    for await (const conn of listener) {
      const buf = new Uint8Array(64 * 1024);
      let head = "";
      while (!head.includes("\r\n\r\n")) {
        const n = await conn.read(buf);
        if (n === null) break;
        head += new TextDecoder().decode(buf.subarray(0, n));
      }
      // Anything but the messages (the coordinator asks whether this is itself) is a 404.
      const bytes = new TextEncoder().encode(
        head.startsWith("POST /v1/messages ")
          ? "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n" +
            "transfer-encoding: chunked\r\n\r\n" +
            `${new TextEncoder().encode(part).length.toString(16)}\r\n${part}\r\n`
          : "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
      );
      for (let at = 0; at < bytes.length;) at += await conn.write(bytes.subarray(at));
      conn.close();
    }
  })();
  await using fleet = await startFleet([]);
  const reg = await fetch(`${fleet.url}/api/agents`, {
    method: "POST",
    headers: { authorization: `Bearer ${TEST_AGENT_TOKEN}` },
    body: JSON.stringify(registration({
      machine_name: "cut",
      ollama_port: (listener.addr as Deno.NetAddr).port,
      models: [{ name: "llama3.2:latest" }],
    })),
  });
  assert.equal(reg.status, 201);
  const res = await fetch(`${fleet.url}/v1/messages`, {
    method: "POST",
    body: JSON.stringify({ model: "llama3.2", ...HELLO, stream: true }),
  });
  const text = await res.text();
  assert.ok(text.endsWith("\n\n"));
  const blocks = text.trimEnd().split("\n\n");
  assert.ok(blocks.at(-1)!.startsWith("event: error\ndata: {"), blocks.at(-1));
  assert.equal(sseEvents(text).at(-1)![0], "error");
  // The input tokens of `message_start` are counted though the stream broke.
  const [logged] = await fleet.coordinator.ctx.log.query({ route: "/v1/messages", limit: 1 });
  assert.equal(logged.tokens_in, 7);
  listener.close();
  await served.catch(() => {});
});

Deno.test("anthropic API - keys are taken from x-api-key as well as Authorization", async () => {
  await using fleet = await startFleet(FLEET, { apiKeys: ["sk-test-key-1234567890"] });
  const good = new Anthropic({
    baseURL: fleet.url,
    apiKey: "sk-test-key-1234567890",
    maxRetries: 0,
  });
  const message = await good.messages.create({ model: "llama3.2", ...HELLO });
  assert.equal(message.type, "message");
  // Bearer (`authToken`) works too.
  const bearer = new Anthropic({
    baseURL: fleet.url,
    apiKey: null,
    authToken: "sk-test-key-1234567890",
    maxRetries: 0,
  });
  assert.equal((await bearer.messages.create({ model: "llama3.2", ...HELLO })).type, "message");

  const bad = new Anthropic({ baseURL: fleet.url, apiKey: "wrong", maxRetries: 0 });
  await assert.rejects(
    bad.messages.create({ model: "llama3.2", ...HELLO }),
    (e: ApiError) =>
      e instanceof Anthropic.AuthenticationError &&
      (e.error as { error: { type: string } }).error.type === "authentication_error",
  );
  // Every client route takes it: the native and OpenAI APIs too.
  const tags = await fetch(`${fleet.url}/api/tags`, {
    headers: { "x-api-key": "sk-test-key-1234567890" },
  });
  assert.equal(tags.status, 200);
  await tags.body?.cancel();
  const none = await fetch(`${fleet.url}/v1/models`);
  assert.equal(none.status, 401);
  assert.equal((await none.json()).error.type, "authentication_error");
  // Admin routes do not: an API key in x-api-key is no admin login.
  const admin = await fetch(`${fleet.url}/api/agents`, {
    headers: { "x-api-key": fleet.adminKey },
  });
  assert.equal(admin.status, 401);
  await admin.body?.cancel();
});
