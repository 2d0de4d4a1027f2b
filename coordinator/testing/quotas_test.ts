/**
 * Per-key quotas and fair share end to end: a real coordinator on loopback, simulated agents,
 * API keys created through the admin API, and the clients' view of the limits (status, shape,
 * `Retry-After`), the request log, `/metrics`, and a flood that must not starve another key.
 */
import assert from "node:assert/strict";
import { Ollama, OpenAI } from "../../shared/test_clients.ts";
import { startFleet } from "./app.ts";
import { fairLoad, percentile } from "./fair_load.ts";
import { registerSim, spawnSimulator } from "./process.ts";

type Fleet = Awaited<ReturnType<typeof startFleet>>;

async function createKey(fleet: Fleet, name: string, limits: Record<string, unknown> = {}) {
  const res = await fetch(`${fleet.url}/api/keys`, {
    method: "POST",
    headers: fleet.adminHeaders,
    body: JSON.stringify({ name, limits }),
  });
  assert.equal(res.status, 201);
  return await res.json() as { id: string; key: string; prefix: string };
}

function call(fleet: Fleet, key: string, path: string, body: Record<string, unknown>) {
  return fetch(fleet.url + path, {
    method: "POST",
    headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
    body: JSON.stringify({ model: "llama3.2", stream: false, ...body }),
  });
}

const chat = { messages: [{ role: "user", content: "hi" }] };

Deno.test("quotas - over its requests per minute a key gets 429 with Retry-After, in each API's shape", async () => {
  await using fleet = await startFleet([{ name: "gpu-a" }]);
  const limited = await createKey(fleet, "limited", { requests_per_minute: 2 });
  const other = await createKey(fleet, "other");
  const ok1 = await call(fleet, limited.key, "/api/chat", chat);
  const ok2 = await call(fleet, limited.key, "/v1/chat/completions", chat);
  assert.deepEqual([ok1.status, ok2.status], [200, 200]);
  await Promise.all([ok1.body?.cancel(), ok2.body?.cancel()]);

  const native = await call(fleet, limited.key, "/api/chat", chat);
  assert.equal(native.status, 429);
  const retry = Number(native.headers.get("retry-after"));
  assert.ok(retry >= 1 && retry <= 60, `Retry-After ${retry}`);
  assert.match(native.headers.get("x-request-id") ?? "", /\S/);
  const body = await native.json();
  assert.deepEqual(Object.keys(body), ["error"]);
  assert.match(
    body.error,
    /^Rate limit reached for this API key: 2 requests per minute; try again in \d+ s$/,
  );

  const v1 = await call(fleet, limited.key, "/v1/chat/completions", chat);
  assert.equal(v1.status, 429);
  assert.ok(Number(v1.headers.get("retry-after")) >= 1);
  const v1Body = await v1.json();
  assert.match(v1Body.error.message, /2 requests per minute/);
  assert.equal(v1Body.error.param, null);

  // The real clients raise their rate-limit errors; another key is not affected.
  const openai = new OpenAI({ baseURL: `${fleet.url}/v1`, apiKey: limited.key, maxRetries: 0 });
  await assert.rejects(
    openai.chat.completions.create({
      model: "llama3.2",
      messages: [{ role: "user", content: "x" }],
    }),
    (e: { status?: number }) => e.status === 429,
  );
  const ollama = new Ollama({
    host: fleet.url,
    headers: { authorization: `Bearer ${limited.key}` },
  });
  await assert.rejects(
    ollama.generate({ model: "llama3.2", prompt: "x" }),
    (e: { status_code?: number; message: string }) =>
      e.status_code === 429 && /Rate limit reached/.test(e.message),
  );
  const fine = await call(fleet, other.key, "/api/generate", { prompt: "x" });
  assert.equal(fine.status, 200);
  await fine.body?.cancel();

  // The request log names the key of every request, refused ones included.
  const log = await (await fetch(`${fleet.url}/api/requests?key_id=${limited.id}`, {
    headers: fleet.adminHeaders,
  })).json() as { status: number; key_id: string }[];
  assert.deepEqual(log.map((r) => r.status).sort(), [200, 200, 429, 429, 429, 429]);
  assert.ok(log.every((r) => r.key_id === limited.id));

  // Metrics by key name and prefix, never the key.
  const metrics = await (await fetch(`${fleet.url}/metrics`, { headers: fleet.adminHeaders }))
    .text();
  const labels = `key="limited",key_prefix="${limited.prefix}"`;
  assert.match(
    metrics,
    new RegExp(`ollama_coordinator_key_requests_total\\{${labels},status="429"\\} 4`),
  );
  assert.match(
    metrics,
    new RegExp(`ollama_coordinator_key_requests_total\\{${labels},status="200"\\} 2`),
  );
  assert.match(
    metrics,
    new RegExp(`ollama_coordinator_key_limited_total\\{${labels},limit="requests_per_minute"\\} 4`),
  );
  assert.match(
    metrics,
    new RegExp(`ollama_coordinator_key_tokens_total\\{${labels},direction="out"\\} \\d+`),
  );
  assert.match(metrics, new RegExp(`ollama_coordinator_key_in_flight\\{${labels}\\} 0`));
  assert.ok(!metrics.includes(limited.key) && !metrics.includes(other.key));
});

Deno.test("quotas - tokens per minute count what answers used; concurrent requests are capped", async () => {
  await using fleet = await startFleet([{ name: "gpu-a", tokensPerSecond: 2000 }]);
  const tokens = await createKey(fleet, "tokens", { tokens_per_minute: 30 });
  // 20 generated plus the prompt's: under 30 before, over 30 after.
  const first = await call(fleet, tokens.key, "/api/generate", {
    prompt: "x",
    options: { num_predict: 20 },
  });
  assert.equal(first.status, 200);
  const used = await first.json();
  assert.ok(used.eval_count + used.prompt_eval_count < 30);
  const second = await call(fleet, tokens.key, "/api/generate", {
    prompt: "x",
    options: { num_predict: 20 },
  });
  assert.equal(second.status, 200);
  await second.body?.cancel();
  const third = await call(fleet, tokens.key, "/api/generate", { prompt: "x" });
  assert.equal(third.status, 429);
  assert.match((await third.json()).error, /30 tokens per minute/);

  fleet.sims["gpu-a"].update({ tokensPerSecond: 20 });
  const one = await createKey(fleet, "one-at-a-time", { concurrent: 1 });
  const slow = await fetch(`${fleet.url}/api/generate`, {
    method: "POST",
    headers: { authorization: `Bearer ${one.key}` },
    body: JSON.stringify({ model: "llama3.2", prompt: "slow", options: { num_predict: 400 } }),
  });
  assert.equal(slow.status, 200);
  const busy = await call(fleet, one.key, "/api/generate", { prompt: "x" });
  assert.equal(busy.status, 429);
  assert.equal(busy.headers.get("retry-after"), "1");
  assert.match((await busy.json()).error, /at most 1; try again when one ends/);
  // The stream's end frees the place (the client leaving ends it too).
  await slow.body?.cancel();
  fleet.sims["gpu-a"].update({ tokensPerSecond: 2000 });
  let again: Response | undefined;
  for (let i = 0; i < 100; i++) {
    again = await call(fleet, one.key, "/api/generate", { prompt: "x" });
    if (again.status !== 429) break;
    await again.body?.cancel();
    await new Promise((r) => setTimeout(r, 20));
  }
  assert.equal(again!.status, 200);
  await again!.body?.cancel();
});

Deno.test("quotas - requests refused before any agent do not use up the key's requests per minute", async () => {
  await using fleet = await startFleet([{ name: "gpu-a" }]);
  const limited = await createKey(fleet, "limited", { requests_per_minute: 2 });
  // No agent has this model: 404, three times, and the key keeps both of its requests.
  for (let i = 0; i < 3; i++) {
    const missing = await call(fleet, limited.key, "/api/chat", { ...chat, model: "mistral:7b" });
    assert.equal(missing.status, 404);
    await missing.body?.cancel();
  }
  for (let i = 0; i < 2; i++) {
    const ok = await call(fleet, limited.key, "/api/chat", chat);
    assert.equal(ok.status, 200);
    await ok.body?.cancel();
  }
  // Anthropic's route refuses the third in Anthropic's shape.
  const over = await fetch(`${fleet.url}/v1/messages`, {
    method: "POST",
    headers: { "x-api-key": limited.key, "content-type": "application/json" },
    body: JSON.stringify({
      model: "llama3.2",
      max_tokens: 8,
      messages: [{ role: "user", content: "hi" }],
    }),
  });
  assert.equal(over.status, 429);
  assert.ok(Number(over.headers.get("retry-after")) >= 1);
  const body = await over.json();
  assert.equal(body.type, "error");
  assert.equal(body.error.type, "rate_limit_error");
  assert.match(body.error.message, /2 requests per minute/);
});

Deno.test("quotas - a lowered limit applies to the key's next request", async () => {
  await using fleet = await startFleet([{ name: "gpu-a" }]);
  const k = await createKey(fleet, "k");
  for (let i = 0; i < 3; i++) {
    const res = await call(fleet, k.key, "/api/generate", { prompt: "x" });
    assert.equal(res.status, 200);
    await res.body?.cancel();
  }
  const patch = await fetch(`${fleet.url}/api/keys/${k.id}`, {
    method: "PATCH",
    headers: fleet.adminHeaders,
    body: JSON.stringify({ limits: { requests_per_minute: 3 } }),
  });
  assert.equal(patch.status, 200);
  const res = await call(fleet, k.key, "/api/generate", { prompt: "x" });
  assert.equal(res.status, 429);
  await res.body?.cancel();
});

Deno.test("quotas - with one key flooding, another key's p95 queue wait stays within 2x of alone", async () => {
  // One agent with 2 slots, every answer 20 tokens at 200 tokens/s (about 100 ms). The simulator
  // runs in its own process, so its pace does not depend on this one's load.
  await using fleet = await startFleet([], { queueMaxLength: 16 });
  const sim = await spawnSimulator(["--parallel", "2", "--tps", "200", "--loaded", "llama3.2"]);
  try {
    await registerSim(fleet.url, "gpu-a", sim, 2);
    const light = await createKey(fleet, "interactive");
    const flood = await createKey(fleet, "batch");
    const load = {
      url: fleet.url,
      admin: fleet.adminHeaders,
      model: "llama3.2",
      light,
      bursts: 6,
      burstSize: 6,
      periodMs: 1200,
      numPredict: 20,
    };
    const alone = await fairLoad(load);
    // The flood runs for 1.5 s first: it is well under way when the light key comes back.
    const flooded = await fairLoad({
      ...load,
      flood: { key: flood.key, concurrency: 20 },
      warmupMs: 1500,
    });
    const [a, f] = [percentile(alone.lightWaits, 0.95), percentile(flooded.lightWaits, 0.95)];
    console.log(
      `light key p95 queue wait: alone ${a.toFixed(0)} ms, with a flood ${f.toFixed(0)} ms; ` +
        `flood ${JSON.stringify(flooded.flood)}`,
    );
    assert.equal(alone.lightFailures + flooded.lightFailures, 0);
    assert.equal(alone.lightWaits.length, 36);
    assert.equal(flooded.lightWaits.length, 36);
    // Alone, a burst of 6 on 2 slots queues (about 200 ms at p95): the comparison means something.
    assert.ok(a >= 100, `alone ${a} ms`);
    // The flood was served, and pushed back beyond its share of the queue's places.
    assert.ok(flooded.flood.ok >= 20, JSON.stringify(flooded.flood));
    assert.ok(flooded.flood.limited > 0, JSON.stringify(flooded.flood));
    assert.ok(f <= 2 * a, `p95 queue wait alone ${a} ms, with a flood ${f} ms`);
  } finally {
    await sim.stop();
  }
});
