import assert from "node:assert/strict";
import { abortableSleep } from "./sleep.ts";

Deno.test("abortableSleep - ends when the signal aborts, long before its time", async () => {
  const stop = new AbortController();
  let ended = false;
  const sleeping = abortableSleep(60_000, stop.signal).then(() => ended = true);
  await Promise.resolve();
  assert.equal(ended, false);
  stop.abort();
  await sleeping;
  assert.equal(ended, true);
  // An aborted signal: at once. A test leaking the 60 s timer would fail Deno's sanitizer.
  await abortableSleep(60_000, stop.signal);
});

Deno.test("abortableSleep - ends after its time when nothing aborts", async () => {
  await abortableSleep(1, new AbortController().signal);
});
