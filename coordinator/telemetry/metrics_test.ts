import assert from "node:assert/strict";
import { startFleet, testApp } from "../testing/app.ts";

Deno.test("metrics - /metrics exposes requests, latency, tokens and agent gauges", async () => {
  await using fleet = await startFleet([{ name: "gpu-01", models: ["llama3.2"] }], {
    metricsPublic: true,
  });
  const res = await fetch(`${fleet.url}/api/generate`, {
    method: "POST",
    body: JSON.stringify({ model: "llama3.2", prompt: "hi", stream: false }),
  });
  await res.body?.cancel();
  const missing = await fetch(`${fleet.url}/api/generate`, {
    method: "POST",
    body: JSON.stringify({ model: "no-such-model-" + crypto.randomUUID(), prompt: "hi" }),
  });
  await missing.body?.cancel();
  const scrape = await fetch(`${fleet.url}/metrics`);
  assert.match(scrape.headers.get("content-type")!, /text\/plain; version=0.0.4/);
  const text = await scrape.text();
  assert.match(
    text,
    /ollama_coordinator_requests_total\{route="\/api\/generate",model="llama3.2",agent="gpu-01",status="200"\} 1/,
  );
  // A model no agent has never becomes a label value.
  assert.match(
    text,
    /ollama_coordinator_requests_total\{route="\/api\/generate",model="none",agent="none",status="404"\} 1/,
  );
  assert.doesNotMatch(text, /no-such-model/);
  assert.match(
    text,
    /ollama_coordinator_request_duration_seconds_count\{route="\/api\/generate"\} 2/,
  );
  assert.match(text, /ollama_coordinator_tokens_total\{direction="out",model="llama3.2"\} \d+/);
  assert.match(
    text,
    /ollama_coordinator_agent_status\{agent="gpu-01",id="[^"]+",status="online"\} 1/,
  );
  assert.match(text, /ollama_coordinator_agent_heartbeat_age_seconds\{agent="gpu-01"/);
  assert.match(text, /ollama_coordinator_in_flight_requests 0/);
  assert.match(text, /\nprocess_resident_memory_bytes \d{7,}\n/);
  assert.match(text, /\nprocess_cpu_seconds_total \d+(\.\d+)?\n/);
  assert.match(text, /\nprocess_open_fds \d+\n/);
  // Every sample line is "name{labels} value".
  for (const line of text.trim().split("\n")) {
    if (!line.startsWith("#")) assert.match(line, /^[a-z_]+(\{.*\})? -?[\d.e+-]+$/, line);
  }
});

Deno.test("metrics - label values are escaped as the exposition format requires", async () => {
  const { ctx, close } = await testApp();
  ctx.bus.publish({
    type: "request",
    request: {
      route: 'odd"route\\with\nbreaks',
      model: null,
      agent_id: null,
      agent_name: "plain",
      status: 200,
      latency_ms: 5,
      ttft_ms: null,
      tokens_in: null,
      tokens_out: null,
    },
  });
  const text = ctx.metrics.render();
  assert.ok(
    text.includes(
      'ollama_coordinator_requests_total{route="odd\\"route\\\\with\\nbreaks",model="none",agent="plain",status="200"} 1',
    ),
    text,
  );
  await close();
});
