import assert from "node:assert/strict";
import { Bus } from "./bus.ts";
import type { RequestRecord } from "./request_log.ts";
import { Stats } from "./live_stats.ts";
import { FakeClock } from "../testing/app.ts";

function rec(overrides: Partial<RequestRecord> = {}): RequestRecord {
  return {
    id: crypto.randomUUID(),
    at: new Date().toISOString(),
    route: "/api/chat",
    model: "llama3.2",
    agent_id: "a1",
    agent_name: "gpu-01",
    status: 200,
    latency_ms: 100,
    ttft_ms: 20,
    queued_ms: 0,
    tokens_in: 10,
    tokens_out: 50,
    tokens_per_second: 100,
    attempts: 1,
    error: null,
    ...overrides,
  };
}

/** Within 8 %: the histogram bins are 15 % wide and report their middle. */
function near(actual: number | null, expected: number) {
  assert.ok(actual !== null, `expected about ${expected}, got null`);
  assert.ok(
    Math.abs(actual - expected) / expected < 0.08,
    `expected about ${expected}, got ${actual}`,
  );
}

Deno.test("stats - rates over the last 10 seconds, from bus request messages", () => {
  const clock = new FakeClock();
  const bus = new Bus();
  const stats = new Stats({ bus, now: clock.now });
  for (let s = 0; s < 10; s++) {
    for (let i = 0; i < 3; i++) bus.publish({ type: "request", request: { ...rec() } });
    clock.advance(1000);
  }
  const sum = stats.summary();
  assert.equal(sum.requests_per_second, 3);
  assert.equal(sum.tokens_per_second, 150);
  assert.equal(sum.error_rate, 0);
  assert.equal(sum.requests_last_hour, 30);
  // A minute of silence later the rates are zero, the hour still counts them.
  clock.advance(60_000);
  const later = stats.summary();
  assert.equal(later.requests_per_second, 0);
  assert.equal(later.latency_p50_ms, null);
  assert.equal(later.error_rate, null);
  assert.equal(later.requests_last_hour, 30);
  stats.close();
  assert.equal(bus.size, 0);
});

Deno.test("stats - p50 and p95 of latency and TTFT; errors excluded from latency", () => {
  const clock = new FakeClock();
  const stats = new Stats({ now: clock.now });
  for (let i = 1; i <= 100; i++) stats.record(rec({ latency_ms: i * 10, ttft_ms: i }));
  stats.record(rec({ status: 503, latency_ms: 999_999, ttft_ms: null }));
  const s = stats.summary();
  near(s.latency_p50_ms, 500);
  near(s.latency_p95_ms, 950);
  near(s.ttft_p50_ms, 50);
  near(s.ttft_p95_ms, 95);
  assert.equal(s.error_rate, Math.round(1 / 101 * 10_000) / 10_000);
});

Deno.test("stats - 5-second points over 5 minutes and 1-minute points over an hour", () => {
  const clock = new FakeClock();
  const stats = new Stats({ now: clock.now });
  stats.record(rec({ latency_ms: 200 }));
  stats.record(rec({ latency_ms: 200 }));
  clock.advance(5000);
  stats.record(rec({ status: 500 }));
  clock.advance(5000);
  const s = stats.series("5m");
  assert.equal(s.t.length, 60);
  assert.equal(s.step, 5000);
  const n = s.t.length;
  // Only finished points: the one that has just begun is left out, so nothing dips at "now".
  assert.deepEqual(s.rps.slice(n - 2), [0.4, 0.2]);
  assert.deepEqual(s.error_rate.slice(n - 2), [0, 1]);
  near(s.p50[n - 2], 200);
  assert.equal(s.p50[n - 1], null);
  assert.equal(s.t[n - 1], clock.ms - 5000);
  assert.equal(s.t[n - 1] - s.t[n - 2], 5000);
  assert.deepEqual(stats.series("5m", 2).t, s.t.slice(n - 2));
  // Halfway through the next point the series is unchanged: no partial point, no dip.
  stats.record(rec());
  clock.advance(2500);
  assert.deepEqual(stats.series("5m").rps, s.rps);
  const h = stats.series("1h");
  assert.equal(h.t.length, 60);
  assert.equal(h.step, 60_000);
  // The current minute is still filling, so it is not shown yet; once over, it is.
  assert.equal(h.t[59], clock.ms - 12_500 - 60_000);
  assert.equal(h.rps[59], 0);
  clock.advance(60_000 - 12_500);
  assert.equal(stats.series("1h").rps[59], 0.067); // 4 requests in that minute
  // The oldest point is whole: the rings keep its first buckets too.
  clock.advance(59 * 60_000);
  assert.equal(stats.series("1h").rps[0], 0.067);
});

Deno.test("stats - ring buffers forget what is older than their range", () => {
  const clock = new FakeClock();
  const stats = new Stats({ now: clock.now });
  stats.record(rec());
  // The 5-minute chart's points end with the last finished one (up to 5 s back).
  clock.advance(301_000);
  assert.equal(stats.series("5m").rps[0], 0.2);
  clock.advance(5000);
  assert.equal(stats.series("5m").rps.reduce((a, b) => a + b), 0);
  assert.equal(stats.series("1h").rps.reduce((a, b) => a + b) > 0, true);
  clock.advance(3_600_000);
  assert.equal(stats.series("1h").rps.reduce((a, b) => a + b), 0);
  assert.equal(stats.summary().requests_last_hour, 0);
  // A record stamped older than the ring is dropped, not written over newer buckets.
  stats.record(rec(), clock.ms - 7_200_000);
  assert.equal(stats.summary().requests_last_hour, 0);
});

Deno.test("stats - queue depth and in-flight are sampled every tick, keeping the maximum", () => {
  const clock = new FakeClock();
  let sample = { queue: 4, inFlight: 2 };
  const stats = new Stats({ now: clock.now, sample: () => sample });
  stats.tick();
  sample = { queue: 1, inFlight: 7 };
  clock.advance(500);
  stats.tick();
  clock.advance(5000);
  const s = stats.series("5m", 1);
  assert.deepEqual([s.queue[0], s.in_flight[0]], [4, 7]);
  assert.equal(stats.summary().queue_depth, 1);
  assert.equal(stats.summary().in_flight, 7);
});

Deno.test("stats - per-agent figures and series; a removed agent is forgotten", () => {
  const clock = new FakeClock();
  const bus = new Bus();
  const stats = new Stats({ bus, now: clock.now });
  stats.record(rec({ agent_id: "a1", tokens_out: 100, tokens_per_second: 50, latency_ms: 300 }));
  stats.record(rec({ agent_id: "a1", tokens_out: 100, tokens_per_second: 100, latency_ms: 100 }));
  stats.record(rec({ agent_id: "a2", status: 502, tokens_out: null }));
  stats.record(rec({ agent_id: null, status: 404 }));
  const a1 = stats.agent("a1");
  assert.equal(a1.requests, 2);
  // 200 tokens in 2 s + 1 s of generation.
  assert.equal(a1.tokens_per_second, 66.7);
  assert.equal(a1.mean_latency_ms, 200);
  assert.equal(stats.agent("a2").errors, 1);
  assert.equal(stats.agent("nobody").requests, 0);
  assert.deepEqual(Object.keys(stats.agents()).sort(), ["a1", "a2"]);
  clock.advance(60_000);
  const s = stats.agentSeries("a1", "1h", 1);
  assert.deepEqual([s.rps[0], s.tps[0], s.mean_latency[0]], [0.033, 3.3, 200]);
  assert.equal(stats.agentSeries("nobody", "1h").t.length, 60);
  bus.publish({ type: "agent_removed", id: "a1" });
  assert.equal(stats.agent("a1").requests, 0);
});

Deno.test("stats - replay counts records at the time they finished", () => {
  const clock = new FakeClock();
  const stats = new Stats({ now: clock.now });
  const at = (ago: number) => new Date(clock.ms - ago).toISOString();
  stats.replay([
    rec({ at: at(30 * 60_000), latency_ms: 1000 }),
    rec({ at: at(2 * 3_600_000) }),
    rec({ at: "not a date" }),
  ]);
  assert.equal(stats.summary().requests_last_hour, 1);
  const h = stats.series("1h");
  assert.equal(h.rps[59 - 30] > 0 || h.rps[59 - 29] > 0, true);
});
