import assert from "node:assert/strict";
import { lines, ndjson, post, postJson, start, until } from "./testing.ts";

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
