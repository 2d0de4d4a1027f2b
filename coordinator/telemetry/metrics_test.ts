import assert from "node:assert/strict";
import { EventLoopDelay } from "./metrics.ts";
import { registration, startFleet, testApp } from "../testing/app.ts";
import { TEST_AGENT_TOKEN, testConfig } from "../config.ts";
import { closeContext, createContext } from "../server.ts";
import { createApp } from "../http/app.ts";
import { openStore } from "../store/open.ts";
import { type Store, StoreError } from "../store/mod.ts";
import { requestRecord } from "../testing/records.ts";

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
  assert.match(text, /\nollama_coordinator_event_loop_delay_max_seconds [\d.e+-]+\n/);
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

Deno.test("metrics - the event loop's delay is how late the sampling timer fires", async () => {
  let clock = 0;
  const delay = new EventLoopDelay({ resolutionMs: 1, now: () => clock });
  const stop = delay.start();
  // The timer was due at 1 ms; the clock says it fired at 26 ms: the loop was 25 ms late.
  clock = 26;
  while (delay.count === 0) await new Promise((r) => setTimeout(r, 1));
  stop();
  const out: string[] = [];
  delay.render(out);
  assert.ok(out.includes('ollama_coordinator_event_loop_delay_seconds{quantile="0.99"} 0.025'));
  assert.ok(out.includes("ollama_coordinator_event_loop_delay_max_seconds 0.025"));
});

Deno.test("metrics - event loop delay quantiles and max cover the samples since the last scrape", () => {
  const delay = new EventLoopDelay();
  for (let i = 1; i <= 100; i++) delay.record(i / 1000);
  const first: string[] = [];
  delay.render(first);
  const name = "ollama_coordinator_event_loop_delay_seconds";
  assert.ok(first.includes(`${name}{quantile="0.5"} 0.051`), first.join("\n"));
  assert.ok(first.includes(`${name}{quantile="0.99"} 0.1`));
  assert.ok(first.includes("ollama_coordinator_event_loop_delay_max_seconds 0.1"));
  delay.record(0.002);
  const second: string[] = [];
  delay.render(second);
  assert.ok(second.includes(`${name}{quantile="0.5"} 0.002`), second.join("\n"));
  assert.ok(second.includes("ollama_coordinator_event_loop_delay_max_seconds 0.002"));
  // Sum and count keep growing across scrapes, as a summary's must.
  assert.ok(second.includes(`${name}_count 101`));
  const third: string[] = [];
  delay.render(third);
  assert.ok(!third.some((l) => l.includes("{quantile=")), "no quantiles without samples");
  assert.ok(third.includes("ollama_coordinator_event_loop_delay_max_seconds 0"));
});

Deno.test("metrics - a running coordinator samples its event loop's delay", async () => {
  await using fleet = await startFleet([], { metricsPublic: true });
  const count = async () => {
    const text = await (await fetch(`${fleet.url}/metrics`)).text();
    return Number(/\nollama_coordinator_event_loop_delay_seconds_count (\d+)\n/.exec(text)?.[1]);
  };
  // The first sample comes 10 ms after the start; give up (and fail) after 5 s.
  for (let i = 0; i < 500 && !(await count() > 0); i++) await new Promise((r) => setTimeout(r, 10));
  assert.ok(await count() > 0, "the coordinator took no event loop delay sample");
});

/** The value of an unlabelled sample in an exposition text. */
function sample(text: string, name: string): number | undefined {
  const m = new RegExp(`\\n${name} (\\S+)\\n`).exec(text);
  return m ? Number(m[1]) : undefined;
}

Deno.test("metrics - the store's health: rows buffered, written and dropped, agent-state writes refused", async () => {
  // A real store that refuses the written-behind kinds of write while `down` is set, as a
  // database that went away does.
  const real = await openStore("sqlite::memory:");
  let down = false;
  const refusing =
    <A extends unknown[], R>(write: (...args: A) => Promise<R>) => (...args: A): Promise<R> =>
      down
        ? Promise.reject(new StoreError("Cannot write: the database is away", true))
        : write(...args);
  const store: Store = {
    ...real,
    addRequests: refusing(real.addRequests),
    addEvents: refusing(real.addEvents),
    updateAgents: refusing(real.updateAgents),
  };
  const ctx = await createContext(testConfig(), { store });
  const app = createApp(ctx);
  const errors = console.error;
  console.error = () => {};
  try {
    const reg = await (await app.request("/api/agents", {
      method: "POST",
      headers: { authorization: `Bearer ${TEST_AGENT_TOKEN}` },
      body: JSON.stringify(registration()),
    })).json();
    const record = (id: string) => requestRecord(id);
    ctx.log.add(record("before"));
    await Promise.all([ctx.log.flush(), ctx.events.flush()]);
    const eventsBefore = ctx.events.counts.written;

    down = true;
    // Past the bounds (50,000 request-log rows, 10,000 events): the oldest go, counted.
    for (let i = 0; i < 50_005; i++) ctx.log.add(record(`r${i}`));
    for (let i = 0; i < 10_003; i++) ctx.registry.recordEvent("model", null, `e${i}`);
    const beat = await app.request("/api/health", {
      method: "POST",
      headers: { authorization: `Bearer ${reg.agent_secret}` },
      body: JSON.stringify({
        agent_id: reg.agent_id,
        cpu_usage: 1,
        memory_usage: 2,
        active_requests: 0,
      }),
    });
    assert.equal(beat.status, 200);
    await Promise.all([ctx.log.flush(), ctx.events.flush(), ctx.registry.flush()]);
    const text = ctx.metrics.render();
    const p = "ollama_coordinator";
    assert.equal(sample(text, `${p}_request_log_buffered_rows`), 50_000);
    assert.equal(sample(text, `${p}_request_log_written_rows_total`), 1);
    assert.equal(sample(text, `${p}_request_log_dropped_rows_total`), 5);
    assert.equal(sample(text, `${p}_events_buffered`), 10_000);
    assert.equal(sample(text, `${p}_events_written_total`), eventsBefore);
    assert.equal(sample(text, `${p}_events_dropped_total`), 3);
    assert.equal(sample(text, `${p}_agent_state_write_failures_total`), 1);
    assert.match(text, /# TYPE ollama_coordinator_request_log_dropped_rows_total counter\n/);

    // The database is back: the buffers drain.
    down = false;
    await Promise.all([ctx.log.flush(), ctx.events.flush(), ctx.registry.flush()]);
    const after = ctx.metrics.render();
    assert.equal(sample(after, `${p}_request_log_buffered_rows`), 0);
    assert.equal(sample(after, `${p}_request_log_written_rows_total`), 50_001);
    assert.equal(sample(after, `${p}_events_buffered`), 0);
    assert.equal(sample(after, `${p}_agent_state_write_failures_total`), 1);
  } finally {
    console.error = errors;
    await closeContext(ctx);
  }
});

Deno.test("metrics - a coordinator on its own database leads and hears no other", async () => {
  await using fleet = await startFleet([], { metricsPublic: true });
  const text = await (await fetch(`${fleet.url}/metrics`)).text();
  assert.equal(sample(text, "ollama_coordinator_cluster_leader"), 1);
  assert.equal(sample(text, "ollama_coordinator_cluster_peers"), 0);
  assert.equal(sample(text, "ollama_coordinator_request_log_dropped_rows_total"), 0);
});
