import assert from "node:assert/strict";
import { FakeClock } from "../testing/app.ts";
import { NO_LIMITS } from "../store/mod.ts";
import type { KeyLimits } from "../store/mod.ts";
import { Quotas, type Refusal, type Ticket } from "./mod.ts";

function setup(limits: Record<string, Partial<KeyLimits>>, coordinators = 1) {
  const clock = new FakeClock();
  const quotas = new Quotas({
    limitsOf: (t) => (t in limits ? { ...NO_LIMITS, ...limits[t] } : undefined),
    now: clock.now,
    coordinators: () => coordinators,
  });
  return { clock, quotas };
}

function ticket(r: Ticket | Refusal): Ticket {
  assert.ok(r.ok, `refused: ${!r.ok && r.message}`);
  return r;
}

function refusal(r: Ticket | Refusal): Refusal {
  assert.ok(!r.ok, "admitted");
  return r;
}

Deno.test("quotas - requests per minute: refused at the limit until the oldest age out", () => {
  const { clock, quotas } = setup({ k: { requests_per_minute: 3 } });
  for (let i = 0; i < 3; i++) {
    ticket(quotas.admit("k")).end(0);
    clock.advance(10_000);
  }
  // At 30 s: three in the window; the first (at 0 s) ages out at 60 s.
  const r = refusal(quotas.admit("k"));
  assert.equal(r.limit, "requests_per_minute");
  assert.equal(r.retryAfter, 30);
  assert.equal(
    r.message,
    "Rate limit reached for this API key: 3 requests per minute; try again in 30 s",
  );
  // Refusals do not count: the key is admitted again as soon as the window frees.
  clock.advance(30_000);
  ticket(quotas.admit("k"));
  assert.equal(quotas.counts().get("k")!.limited.requests_per_minute, 1);
});

Deno.test("quotas - tokens per minute count when a request ends, and admit while under", () => {
  const { clock, quotas } = setup({ k: { tokens_per_minute: 100 } });
  const a = ticket(quotas.admit("k"));
  const b = ticket(quotas.admit("k"));
  a.end(80);
  // 80 of 100 used: admitted; b's tokens then push the key over.
  const c = ticket(quotas.admit("k"));
  b.end(50);
  b.end(50); // a second end changes nothing
  const r = refusal(quotas.admit("k"));
  assert.equal(r.limit, "tokens_per_minute");
  assert.equal(r.retryAfter, 60);
  c.end(0);
  clock.advance(60_000);
  ticket(quotas.admit("k"));
  assert.equal(quotas.counts().get("k")!.tokensLastMinute, 0);
});

Deno.test("quotas - concurrent requests: one more once one ends", () => {
  const { quotas } = setup({ k: { concurrent: 2 } });
  const a = ticket(quotas.admit("k"));
  ticket(quotas.admit("k"));
  const r = refusal(quotas.admit("k"));
  assert.equal(r.limit, "concurrent");
  assert.equal(r.retryAfter, 1);
  assert.equal(quotas.inFlight("k"), 2);
  a.end(10);
  ticket(quotas.admit("k"));
  assert.equal(quotas.inFlight("k"), 2);
});

Deno.test("quotas - keys without limits and requests without a key are never refused", () => {
  const { quotas } = setup({ k: { requests_per_minute: 1 } });
  for (let i = 0; i < 100; i++) {
    ticket(quotas.admit(undefined));
    ticket(quotas.admit("env:abc"));
  }
  assert.equal(quotas.counts().get("env:abc")!.requestsLastMinute, 100);
  assert.equal(quotas.counts().has("undefined"), false);
});

Deno.test("quotas - limits change at once; with three coordinators each enforces a third", () => {
  const limits: Record<string, Partial<KeyLimits>> = { k: { requests_per_minute: 30 } };
  const { quotas } = setup(limits, 3);
  for (let i = 0; i < 10; i++) ticket(quotas.admit("k"));
  const r = refusal(quotas.admit("k"));
  assert.match(r.message, /30 requests per minute \(10 on each of 3 coordinators\)/);
  limits.k = { requests_per_minute: 60 };
  ticket(quotas.admit("k"));
  // A limit smaller than the coordinators still lets one request through on each.
  limits.k = { concurrent: 1 };
  const { quotas: other } = setup(limits, 3);
  ticket(other.admit("k"));
  refusal(other.admit("k"));
});

Deno.test("quotas - a revoked key's counts are dropped once its requests end", () => {
  const active = new Set(["k", "other"]);
  const quotas = new Quotas({
    limitsOf: (t) => (active.has(t) ? NO_LIMITS : undefined),
    active: (t) => active.has(t),
  });
  const running = ticket(quotas.admit("k"));
  ticket(quotas.admit("other")).end(5);
  active.delete("k");
  active.delete("other");
  // Revoked: "other" is idle and goes; "k" still has a request running and stays until it ends.
  assert.deepEqual([...quotas.counts().keys()], ["k"]);
  running.end(10);
  assert.deepEqual([...quotas.counts().keys()], []);
});

Deno.test("quotas - a refunded request leaves the window and its slot", () => {
  const { clock, quotas } = setup({ k: { requests_per_minute: 1, concurrent: 1 } });
  const first = ticket(quotas.admit("k"));
  clock.advance(1_500);
  first.refund();
  // A refund after the request's own second still takes it out of that second.
  const second = ticket(quotas.admit("k"));
  assert.equal(quotas.inFlight("k"), 1);
  second.refund();
  second.end(100); // ignored: the ticket is closed
  assert.equal(quotas.inFlight("k"), 0);
  assert.equal(quotas.counts().get("k")?.tokensLastMinute, 0);
  ticket(quotas.admit("k")).end(0);
  assert.equal(refusal(quotas.admit("k")).limit, "requests_per_minute");
});
