import assert from "node:assert/strict";
import { type Json, post, postJson, start } from "./testing.ts";

/** The named events of an SSE body: `[event, data]` pairs. */
async function events(res: Response): Promise<[string, Json][]> {
  const text = await res.text();
  assert.ok(text.endsWith("\n\n"), "SSE ends with a blank line");
  return text.trimEnd().split("\n\n").map((block) => {
    const [event, data] = block.split("\n");
    assert.ok(event.startsWith("event: ") && data.startsWith("data: "), block);
    return [event.slice("event: ".length), JSON.parse(data.slice("data: ".length))];
  });
}

const ASK = {
  model: "llama3.2",
  max_tokens: 100,
  system: "Be brief",
  messages: [{ role: "user", content: [{ type: "text", text: "Say hello" }] }],
};

Deno.test("simulator - speaks Anthropic's Messages API, streaming and not", async () => {
  await using sim = await start();
  const whole = await postJson(sim, "/v1/messages", ASK);
  assert.equal(whole.status, 200);
  const m = whole.json;
  assert.equal(m.type, "message");
  assert.equal(m.role, "assistant");
  assert.equal(m.model, "llama3.2");
  assert.match(m.id, /^msg_[0-9a-f]{24}$/);
  assert.equal(m.content[0].type, "text");
  assert.equal(m.stop_reason, "end_turn");
  assert.ok(m.usage.input_tokens > 0 && m.usage.output_tokens > 0);

  const res = await post(sim, "/v1/messages", { ...ASK, stream: true });
  assert.equal(res.headers.get("content-type"), "text/event-stream");
  const got = await events(res);
  const names = got.map(([e]) => e);
  assert.deepEqual(names.slice(0, 3), [
    "message_start",
    "content_block_start",
    "content_block_delta",
  ]);
  assert.deepEqual(names.slice(-3), ["content_block_stop", "message_delta", "message_stop"]);
  for (const [name, data] of got) assert.equal(data.type, name);
  const opening = got[0][1].message;
  assert.equal(opening.model, "llama3.2");
  assert.equal(opening.usage.input_tokens, m.usage.input_tokens);
  const text = got.filter(([e]) => e === "content_block_delta").map(([, d]) => d.delta.text).join(
    "",
  );
  assert.equal(text, m.content[0].text);
  const delta = got.at(-2)![1];
  assert.equal(delta.delta.stop_reason, "end_turn");
  assert.deepEqual(delta.usage, m.usage);

  // max_tokens ends the answer at the limit, as num_predict does.
  const short = await postJson(sim, "/v1/messages", { ...ASK, max_tokens: 3 });
  assert.equal(short.json.stop_reason, "max_tokens");
  assert.equal(short.json.usage.output_tokens, 3);
});

Deno.test("simulator - Anthropic errors, faults and the missing count_tokens", async () => {
  await using sim = await start();
  const shape = (status: number, type: string, message: RegExp) => (r: Json) => {
    assert.equal(r.status, status);
    assert.equal(r.json.type, "error");
    assert.equal(r.json.error.type, type);
    assert.match(r.json.error.message, message);
    assert.match(r.json.request_id, /^req_/);
  };
  shape(400, "invalid_request_error", /model is required/)(
    await postJson(sim, "/v1/messages", { ...ASK, model: "" }),
  );
  shape(400, "invalid_request_error", /max_tokens/)(
    await postJson(sim, "/v1/messages", { ...ASK, max_tokens: undefined }),
  );
  shape(400, "invalid_request_error", /messages is required/)(
    await postJson(sim, "/v1/messages", { ...ASK, messages: [] }),
  );
  shape(404, "not_found_error", /model "nope" not found/)(
    await postJson(sim, "/v1/messages", { ...ASK, model: "nope" }),
  );
  shape(404, "not_found_error", /404 page not found/)(
    await postJson(sim, "/v1/messages/count_tokens", ASK),
  );
  await sim.setFault({ type: "busy" });
  shape(503, "overloaded_error", /server busy/)(await postJson(sim, "/v1/messages", ASK));

  // die_after cuts the stream after N chunks (the first carries three events).
  await sim.setFault({ type: "die_after", chunks: 2 });
  const res = await post(sim, "/v1/messages", { ...ASK, stream: true });
  assert.equal(res.status, 200);
  let text = "";
  await assert.rejects(async () => {
    for await (const chunk of res.body!.pipeThrough(new TextDecoderStream())) text += chunk;
  });
  assert.equal(text.split("event: ").length - 1, 4);
});
