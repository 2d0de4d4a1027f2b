import assert from "node:assert/strict";
import { lines, post, postJson, start, until } from "./testing.ts";

Deno.test("simulator - answers 503 past the parallel slots and the queue", async () => {
  await using sim = await start({ parallel: 1, maxQueue: 1, tokensPerSecond: 5 });
  const slow = { model: "llama3.2", prompt: "slow", options: { num_predict: 1000 } };
  const a = lines(await post(sim, "/api/generate", slow));
  await a.next(); // A holds the only slot.
  const bPending = post(sim, "/api/generate", slow);
  await until(() => sim.stats.queued === 1, "B to queue");

  const c = await postJson(sim, "/api/generate", slow);
  assert.equal(c.status, 503);
  assert.deepEqual(c.json, {
    error: "server busy, please try again.  maximum pending requests exceeded",
  });
  const oa = await postJson(sim, "/v1/chat/completions", {
    model: "llama3.2",
    messages: [{ role: "user", content: "x" }],
  });
  assert.equal(oa.status, 503);
  assert.equal(oa.json.error.type, "api_error");
  // Slots are per model: the embedding model still has room.
  const e = await postJson(sim, "/api/embed", { model: "nomic-embed-text", input: "x" });
  assert.equal(e.status, 200);

  await a.cancel(); // A's slot goes to B.
  const b = lines(await bPending);
  assert.ok(JSON.parse((await b.next())!).response);
  await b.cancel();
  await until(() => sim.stats.inFlight === 0, "requests to finish");
  assert.equal(sim.stats.aborted, 2);
  assert.equal(sim.stats.queued, 0);
});
