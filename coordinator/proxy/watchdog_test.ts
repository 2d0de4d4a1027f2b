import assert from "node:assert/strict";
import { Watchdog, watchdogPeriod } from "./watchdog.ts";

Deno.test("watchdog - fires past the limit, not before; restart and pause move the clock", () => {
  let now = 0;
  const dog = new Watchdog(10, () => now);
  const fired: string[] = [];
  dog.watch(100, () => fired.push("a"));
  const b = dog.watch(100, () => fired.push("b"));
  const c = dog.watch(100, () => fired.push("c"));
  now = 60;
  b.restart();
  c.pause();
  now = 99;
  dog.sweep();
  assert.deepEqual(fired, []);
  now = 100;
  dog.sweep();
  assert.deepEqual(fired, ["a"]);
  now = 500;
  dog.sweep();
  assert.deepEqual(fired, ["a", "b"], "a paused watch never fires");
  c.restart();
  now = 599;
  dog.sweep();
  now = 600;
  dog.sweep();
  assert.deepEqual(fired, ["a", "b", "c"]);
  // Each fires once, and the timer is gone once nothing is watched.
  dog.sweep();
  assert.deepEqual(fired, ["a", "b", "c"]);
  assert.equal(dog.size, 0);
});

Deno.test("watchdog - a stopped watch never fires; a failing callback does not stop the others", () => {
  let now = 0;
  const dog = new Watchdog(10, () => now);
  const fired: string[] = [];
  dog.watch(5, () => {
    throw new Error("boom");
  });
  const stopped = dog.watch(5, () => fired.push("stopped"));
  dog.watch(5, () => fired.push("kept"));
  stopped.stop();
  now = 10;
  const errors: unknown[] = [];
  const original = console.error;
  console.error = (...args: unknown[]) => errors.push(args);
  try {
    dog.sweep();
  } finally {
    console.error = original;
  }
  assert.deepEqual(fired, ["kept"]);
  assert.equal(errors.length, 1);
  assert.equal(dog.size, 0);
});

Deno.test("watchdog - fires on its own timer, never before its limit", async () => {
  const dog = new Watchdog(10);
  const started = performance.now();
  const late = await new Promise<number>((resolve) =>
    dog.watch(30, () => resolve(performance.now() - started))
  );
  // Not before its limit; the upper bound is loose: CI machines are busy.
  assert.ok(late >= 30 && late < 2000, `fired after ${late} ms`);
  assert.equal(dog.size, 0);
});

Deno.test("watchdog - the proxy's period is a tenth of the shortest limit, within 10 ms to 1 s", () => {
  assert.equal(watchdogPeriod(300_000, 120_000), 1000);
  assert.equal(watchdogPeriod(300, 120_000), 30);
  assert.equal(watchdogPeriod(50), 10);
});

Deno.test("watchdog - the timer outlives the last watch until a sweep finds nothing watched", () => {
  let now = 0;
  const dog = new Watchdog(10, () => now);
  dog.watch(100, () => {}).stop();
  // The next request's watch reuses the timer instead of starting one of its own.
  assert.equal(dog.ticking, true);
  const next = dog.watch(100, () => {});
  next.stop();
  now = 10;
  dog.sweep();
  assert.equal(dog.ticking, false);
});

Deno.test("watchdog - a callback may stop an expired watch or start a new one during a sweep", () => {
  let now = 0;
  const dog = new Watchdog(10, () => now);
  const fired: string[] = [];
  // b is watched after a, whose callback stops it.
  const later: { b?: { stop(): void } } = {};
  dog.watch(10, () => {
    fired.push("a");
    later.b?.stop();
    dog.watch(10, () => fired.push("late"));
  });
  later.b = dog.watch(10, () => fired.push("b"));
  dog.watch(10, () => fired.push("c"));
  now = 10;
  dog.sweep();
  // b was stopped by a's callback before its turn; the watch a started waits for its own limit.
  assert.deepEqual(fired, ["a", "c"]);
  assert.equal(dog.size, 1);
  now = 20;
  dog.sweep();
  assert.deepEqual(fired, ["a", "c", "late"]);
  assert.equal(dog.size, 0);
});

Deno.test("watchdog - stopping twice, or after firing, changes nothing", () => {
  let now = 0;
  const dog = new Watchdog(10, () => now);
  const a = dog.watch(10, () => {});
  const b = dog.watch(50, () => {});
  const c = dog.watch(50, () => {});
  now = 10;
  dog.sweep();
  a.stop();
  b.stop();
  b.stop();
  assert.equal(dog.size, 1);
  c.stop();
  assert.equal(dog.size, 0);
  const d = dog.watch(10, () => {});
  assert.equal(dog.size, 1);
  d.stop();
  assert.equal(dog.size, 0);
});
