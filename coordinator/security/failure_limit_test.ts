import assert from "node:assert/strict";
import { FakeClock } from "../testing/app.ts";
import { type Admission, FailureLimit } from "./failure_limit.ts";
import { limitKey } from "./networks.ts";

function limits(clock: FakeClock) {
  return new FailureLimit({
    perClient: 3,
    clientWindowMs: 60_000,
    global: 5,
    globalWindowMs: 10_000,
    now: clock.now,
  });
}

function fail(admission: Admission): void {
  assert.ok(admission.ok, "expected the attempt to be let through");
  admission.attempt.fail();
}

Deno.test("failure limit - a client waits after its failures until its window ends", () => {
  const clock = new FakeClock();
  const l = limits(clock);
  for (let i = 0; i < 3; i++) {
    assert.equal(l.check("192.0.2.1"), undefined);
    fail(l.begin("192.0.2.1"));
  }
  assert.deepEqual(l.check("192.0.2.1"), { ok: false, retryAfter: 60, scope: "client" });
  const refused = l.begin("192.0.2.1");
  assert.deepEqual(refused, { ok: false, retryAfter: 60, scope: "client" });
  clock.advance(59_500);
  assert.equal(l.begin("192.0.2.1").ok, false);
  clock.advance(500);
  assert.ok(l.begin("192.0.2.1").ok);
});

Deno.test("failure limit - IPv6 clients are counted by their /64", () => {
  const clock = new FakeClock();
  const l = limits(clock);
  fail(l.begin("2001:db8:1:2::1"));
  fail(l.begin("2001:db8:1:2:ffff::9"));
  fail(l.begin("2001:0db8:0001:0002:0:0:0:abcd"));
  assert.equal(l.begin("2001:db8:1:2::77").ok, false);
  assert.ok(l.begin("2001:db8:1:3::1").ok);
  assert.equal(limitKey("2001:db8:1:2::1"), "2001:db8:1:2::/64");
  assert.equal(limitKey("::1"), "0:0:0:0::/64");
  assert.equal(limitKey("203.0.113.7"), "203.0.113.7");
});

Deno.test("failure limit - failures from many clients meet the global budget; everyone waits", () => {
  const clock = new FakeClock();
  const l = limits(clock);
  for (let i = 1; i <= 5; i++) fail(l.begin(`198.51.100.${i}`));
  assert.deepEqual(l.check("203.0.113.1"), { ok: false, retryAfter: 10, scope: "global" });
  assert.deepEqual(l.begin("203.0.113.1"), { ok: false, retryAfter: 10, scope: "global" });
  clock.advance(10_000);
  assert.ok(l.begin("203.0.113.1").ok);
});

Deno.test("failure limit - attempts count while they run; a pass forgets, a cancel does not count", () => {
  const clock = new FakeClock();
  const l = limits(clock);
  const running = [l.begin("192.0.2.9"), l.begin("192.0.2.9"), l.begin("192.0.2.9")];
  // Three checks under way: a fourth concurrent guess cannot overtake the count.
  assert.equal(l.begin("192.0.2.9").ok, false);
  for (const r of running) {
    assert.ok(r.ok);
    r.attempt.cancel();
    r.attempt.cancel(); // settling twice changes nothing
  }
  fail(l.begin("192.0.2.9"));
  fail(l.begin("192.0.2.9"));
  const right = l.begin("192.0.2.9");
  assert.ok(right.ok);
  right.attempt.pass();
  // The right secret forgets the client's failures.
  for (let i = 0; i < 3; i++) fail(l.begin("192.0.2.9"));
  assert.equal(l.begin("192.0.2.9").ok, false);
});
