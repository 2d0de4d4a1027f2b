import assert from "node:assert/strict";
import { serveUpstream } from "./upstream.ts";

const post = (url: string, body: unknown) =>
  fetch(`${url}/api/chat`, { method: "POST", body: JSON.stringify(body) });

Deno.test("bench upstream - a small chat gets 8 tokens at once in Ollama's shape", async () => {
  await using server = serveUpstream(0);
  const url = `http://127.0.0.1:${server.addr.port}`;
  const res = await post(url, { model: "llama3.2", messages: [], stream: false });
  assert.match(res.headers.get("content-type")!, /^application\/json/);
  const reply = await res.json();
  assert.equal(reply.done, true);
  assert.equal(reply.eval_count, 8);
  assert.equal(reply.message.content.split(" ").length, 8);
  const three = await (await post(url, { stream: false, options: { num_predict: 3 } })).json();
  assert.equal(three.eval_count, 3);
  assert.equal(await (await fetch(`${url}/`)).text(), "Ollama is running");
  const tags = await (await fetch(`${url}/api/tags`)).json();
  assert.equal(tags.models[0].name, "llama3.2:latest");
});

Deno.test("bench upstream - a stream is one NDJSON line per token, then the final line", async () => {
  await using server = serveUpstream(0);
  const res = await post(`http://127.0.0.1:${server.addr.port}`, {
    messages: [],
    options: { num_predict: 5 },
  });
  assert.equal(res.headers.get("content-type"), "application/x-ndjson");
  const lines = (await res.text()).trimEnd().split("\n").map((l) => JSON.parse(l));
  assert.equal(lines.length, 6);
  assert.ok(lines.slice(0, 5).every((l) => l.done === false && l.message.content === " word"));
  assert.equal(lines[5].done, true);
  assert.equal(lines[5].eval_count, 5);
});
