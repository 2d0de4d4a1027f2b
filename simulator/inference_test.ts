import assert from "node:assert/strict";
import { lines, post, postJson, start, until } from "./testing.ts";

Deno.test("simulator - reports the configured speed in eval_duration", async () => {
  await using sim = await start({ tokensPerSecond: 2000 });
  const generate = async () => {
    const t0 = performance.now();
    const r = await postJson(sim, "/api/generate", {
      model: "llama3.2",
      prompt: "count",
      stream: false,
      options: { num_predict: 20 },
    });
    return { ...r.json, wallMs: performance.now() - t0 };
  };
  let r = await generate();
  assert.equal(r.eval_count, 20);
  assert.equal(r.eval_count / (r.eval_duration / 1e9), 2000);
  // Paced for real: 19 intervals of 0.5 ms cannot finish sooner.
  assert.ok(r.wallMs >= 9, `${r.wallMs}`);
  sim.update({ tokensPerSecond: 400 });
  r = await generate();
  assert.ok(Math.abs(r.eval_count / (r.eval_duration / 1e9) - 400) < 1e-6);
  assert.ok(r.wallMs >= 19 * 2.5 - 1, `${r.wallMs}`);
});

Deno.test("simulator - waits the time to first token before the first chunk", async () => {
  await using sim = await start({ ttftMs: 40 });
  const t0 = performance.now();
  const res = await post(sim, "/api/generate", { model: "llama3.2", prompt: "hi" });
  const reader = lines(res);
  await reader.next();
  const firstMs = performance.now() - t0;
  await reader.cancel();
  assert.ok(firstMs >= 39, `${firstMs}`);
  const r = await postJson(sim, "/api/chat", {
    model: "llama3.2",
    messages: [{ role: "user", content: "hi" }],
    stream: false,
  });
  assert.equal(r.json.prompt_eval_duration, 40_000_000);
});

Deno.test("simulator - pays the load time once and lists the loaded model in /api/ps", async () => {
  await using sim = await start({ loadMs: 80 });
  const ps = async () => (await (await fetch(sim.url + "/api/ps")).json()).models;
  assert.deepEqual(await ps(), []);
  const ask = () =>
    postJson(sim, "/api/generate", { model: "llama3.2", prompt: "hi", stream: false });
  // Two requests during one load: both wait for it.
  const [a, b] = await Promise.all([ask(), ask()]);
  assert.ok(a.json.load_duration >= 79e6, `${a.json.load_duration}`);
  assert.ok(b.json.load_duration >= 79e6, `${b.json.load_duration}`);
  assert.ok(a.json.total_duration >= a.json.load_duration);
  const loaded = await ps();
  assert.equal(loaded.length, 1);
  assert.equal(loaded[0].name, "llama3.2:latest");
  assert.ok(loaded[0].size_vram > 0);
  assert.ok(Date.parse(loaded[0].expires_at) > Date.now() + 4 * 60_000);
  const c = await ask();
  assert.ok(c.json.load_duration < 79e6, `${c.json.load_duration}`);
});

Deno.test("simulator - stops generating when the client aborts", async () => {
  // 1000 tokens at 20/s would take 50 s: the test ends only if generation stops.
  await using sim = await start({ parallel: 1, maxQueue: 0, tokensPerSecond: 20 });
  const slow = { model: "llama3.2", prompt: "slow", options: { num_predict: 1000 } };
  const stream = lines(await post(sim, "/api/generate", slow));
  await stream.next();
  await stream.cancel();
  await until(() => sim.stats.inFlight === 0, "the stream to stop");
  assert.deepEqual(sim.stats, {
    requests: 1,
    inFlight: 0,
    aborted: 1,
    completed: 0,
    queued: 0,
  });

  const ac = new AbortController();
  const whole = post(sim, "/api/generate", { ...slow, stream: false }, { signal: ac.signal });
  await until(() => sim.stats.inFlight === 1, "the request to arrive");
  ac.abort();
  await assert.rejects(whole, { name: "AbortError" });
  await until(() => sim.stats.inFlight === 0, "the generation to stop");
  assert.equal(sim.stats.aborted, 2);
  // The only slot is free again (maxQueue 0 would answer 503 otherwise).
  const next = await postJson(sim, "/api/embed", { model: "llama3.2", input: "x" });
  assert.equal(next.status, 200);
});
