import assert from "node:assert/strict";
import { WriteBehind } from "./write_behind.ts";
import { StoreError } from "./mod.ts";

/** A write-behind buffer over an array "store" that can be made to refuse writes. */
function buffer(options: { batchSize?: number; maxBuffered?: number } = {}) {
  const stored: number[] = [];
  const batches: number[][] = [];
  const state = { down: false, calls: 0 };
  const wb = new WriteBehind<number, number>({
    what: "test rows",
    write: (batch) => {
      state.calls++;
      if (state.down) {
        return Promise.reject(new StoreError("Cannot write: the store is away", true));
      }
      batches.push([...batch]);
      stored.push(...batch);
      return Promise.resolve(batch);
    },
    // Timers never fire within a test: only explicit flushes and full batches write.
    delayMs: 3_600_000,
    retryMs: 3_600_000,
    batchSize: options.batchSize ?? 3,
    maxBuffered: options.maxBuffered ?? 1000,
  });
  return { wb, stored, batches, state };
}

/** Runs `fn` with console.error silenced (a failing store is logged once). */
async function quietly(fn: () => Promise<void>): Promise<void> {
  const error = console.error;
  console.error = () => {};
  try {
    await fn();
  } finally {
    console.error = error;
  }
}

Deno.test("write behind - rows are written in batches, in the order they came", async () => {
  const { wb, stored, batches } = buffer({ batchSize: 3 });
  for (let i = 0; i < 8; i++) wb.add(i);
  await wb.flush();
  assert.deepEqual(stored, [0, 1, 2, 3, 4, 5, 6, 7]);
  assert.ok(batches.every((b) => b.length <= 3), JSON.stringify(batches));
  assert.equal(wb.written, 8);
  assert.equal(wb.buffered, 0);
  await wb.close();
});

Deno.test("write behind - a store that is away is tried once per flush, not once per row", async () => {
  await quietly(async () => {
    const { wb, stored, state } = buffer({ batchSize: 10 });
    state.down = true;
    for (let i = 0; i < 1000; i++) wb.add(i);
    // The first full batch started a write; it failed, and the rows that came during it and
    // after it wait for the retry instead of each asking for a write of its own.
    await wb.flush();
    assert.ok(state.calls <= 2, `${state.calls} writes tried for one outage`);
    // Flushes asked for together share one try.
    const before = state.calls;
    await Promise.all([wb.flush(), wb.flush(), wb.flush()]);
    assert.ok(state.calls - before <= 2, `${state.calls - before} writes for three flushes`);
    assert.equal(wb.buffered, 1000);
    assert.equal(wb.written, 0);

    state.down = false;
    await wb.flush();
    assert.deepEqual(stored, Array.from({ length: 1000 }, (_, i) => i));
    assert.equal(wb.buffered, 0);
    assert.equal(wb.written, 1000);
    await wb.close();
  });
});

Deno.test("write behind - past the bound the oldest rows go, counted; the newest are written", async () => {
  await quietly(async () => {
    const { wb, stored, state } = buffer({ batchSize: 100, maxBuffered: 5 });
    state.down = true;
    for (let i = 0; i < 8; i++) wb.add(i);
    await wb.flush();
    assert.equal(wb.buffered, 5);
    assert.equal(wb.dropped, 3);
    state.down = false;
    await wb.close();
    assert.deepEqual(stored, [3, 4, 5, 6, 7]);
    // Closed: a late row is not taken.
    wb.add(99);
    assert.equal(wb.buffered, 0);
  });
});

/** A write-behind buffer in front of a store that is up or down, as the test says. */
function logged(options: { maxBuffered?: number; batchSize?: number } = {}) {
  const stored: number[] = [];
  const lines: string[] = [];
  const state = { up: false };
  const buffer = new WriteBehind<number>({
    what: "request log",
    write: (batch) => {
      if (!state.up) {
        return Promise.reject(new StoreError("Cannot add requests: connect ECONNREFUSED", true));
      }
      stored.push(...batch);
      return Promise.resolve(batch);
    },
    // Writes happen when the test flushes: no timer runs out during it.
    delayMs: 60_000,
    retryMs: 60_000,
    log: (line) => lines.push(line),
    ...options,
  });
  return { buffer, stored, lines, state };
}

Deno.test("write behind - a full buffer says when it starts dropping rows and how many it dropped", async () => {
  const { buffer, stored, lines, state } = logged({ maxBuffered: 4, batchSize: 2 });
  buffer.add(1);
  await buffer.flush(); // fails: the store is away
  for (let i = 2; i <= 10; i++) buffer.add(i);
  assert.equal(buffer.dropped, 6);
  assert.equal(buffer.buffered, 4);
  state.up = true;
  await buffer.flush();
  assert.deepEqual(stored, [7, 8, 9, 10]);
  assert.deepEqual(lines, [
    "Cannot write the request log, keeping it to retry: Cannot add requests: connect ECONNREFUSED",
    "The request log buffer is full (4 rows): dropping the oldest",
    "The request log is written again",
    "The request log buffer has room again: 6 rows were dropped",
  ]);
  // A later overflow is told of again, with its own count.
  state.up = false;
  for (let i = 11; i <= 16; i++) buffer.add(i);
  await buffer.flush();
  assert.equal(buffer.dropped, 8);
  state.up = true;
  await buffer.flush();
  assert.deepEqual(lines.slice(4), [
    "The request log buffer is full (4 rows): dropping the oldest",
    "Cannot write the request log, keeping it to retry: Cannot add requests: connect ECONNREFUSED",
    "The request log is written again",
    "The request log buffer has room again: 2 rows were dropped",
  ]);
  await buffer.close();
});

Deno.test("write behind - rows that come during a write wait for a full batch or the timer", async () => {
  const batches: number[][] = [];
  let release = () => {};
  const wb = new WriteBehind<number, number>({
    what: "test rows",
    write: (batch) => {
      batches.push([...batch]);
      return new Promise((resolve) => release = () => resolve(batch));
    },
    delayMs: 3_600_000,
    batchSize: 3,
  });
  for (let i = 0; i < 3; i++) wb.add(i);
  // The full batch is being written; two rows come meanwhile.
  wb.add(3);
  wb.add(4);
  release();
  for (let i = 0; i < 5; i++) await Promise.resolve();
  // Not written in a small batch of their own as soon as the store answered.
  assert.deepEqual(batches, [[0, 1, 2]]);
  assert.equal(wb.buffered, 2);
  wb.add(5);
  assert.deepEqual(batches, [[0, 1, 2], [3, 4, 5]]);
  release();
  wb.add(6);
  const flushed = wb.flush();
  for (let i = 0; i < 5; i++) await Promise.resolve();
  release();
  await flushed;
  assert.deepEqual(batches, [[0, 1, 2], [3, 4, 5], [6]]);
  await wb.close();
});
