import assert from "node:assert/strict";
import { MinuteWindow } from "./window.ts";

const T0 = Date.parse("2026-01-01T00:00:00Z");

Deno.test("minute window - counts the last 60 seconds and forgets older ones", () => {
  const w = new MinuteWindow();
  w.add(T0, 2);
  w.add(T0 + 30_500, 3);
  assert.equal(w.total(T0 + 59_999), 5);
  // Second 0 ages out when second 60 begins.
  assert.equal(w.total(T0 + 60_000), 3);
  assert.equal(w.total(T0 + 89_999), 3);
  assert.equal(w.total(T0 + 90_000), 0);
  // A slot reused a minute later starts from zero.
  w.add(T0 + 120_000, 1);
  assert.equal(w.total(T0 + 120_000), 1);
});

Deno.test("minute window - says how long until the sum is under a limit", () => {
  const w = new MinuteWindow();
  w.add(T0 + 1_000, 4);
  w.add(T0 + 10_000, 4);
  // At 20 s: 8 counted. Under 8 once second 1 ages out (at 61 s): 41 s from now.
  assert.equal(w.retryAfter(T0 + 20_000, 8), 41);
  // Under 4 only once second 10 ages out too (at 70 s).
  assert.equal(w.retryAfter(T0 + 20_000, 4), 50);
  // Part of a second rounds up, and it is never less than 1.
  assert.equal(w.retryAfter(T0 + 60_500, 4), 10);
  assert.equal(w.retryAfter(T0 + 69_999, 4), 1);
});
