import assert from "node:assert/strict";
import { Gate } from "./gate.ts";

/** A task that finishes when the test says so. */
function pending() {
  let finish!: () => void;
  const done = new Promise<void>((r) => finish = r);
  return { task: () => done, finish };
}

Deno.test("gate - runs at most `concurrency` tasks; a full line is turned away at once", async () => {
  const gate = new Gate({ concurrency: 1, queue: 1 });
  const a = pending(), b = pending();
  const first = gate.run(a.task);
  const second = gate.run(b.task);
  assert.ok(first && second);
  assert.equal(gate.running, 1);
  assert.equal(gate.waiting, 1);
  assert.equal(gate.full, true);
  let ran = false;
  const third = gate.run(() => (ran = true, Promise.resolve()));
  assert.equal(third, undefined);
  assert.equal(ran, false);
  a.finish();
  await first;
  // The turn passed to the waiting task: a newcomer still finds the gate full.
  assert.equal(gate.running, 1);
  assert.equal(gate.waiting, 0);
  const fourth = gate.run(() => Promise.resolve("d"));
  assert.ok(fourth);
  assert.equal(gate.waiting, 1);
  b.finish();
  await second;
  assert.equal(await fourth, "d");
  assert.equal(gate.running, 0);
  assert.equal(gate.full, false);
});

Deno.test("gate - a failing task frees its turn", async () => {
  const gate = new Gate({ concurrency: 1, queue: 0 });
  await assert.rejects(gate.run(() => Promise.reject(new Error("boom")))!, /boom/);
  assert.equal(await gate.run(() => Promise.resolve(1)), 1);
});
