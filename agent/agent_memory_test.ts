import assert from "node:assert/strict";
import { cpuTicks, mb, median, statusField } from "../scripts/agent_memory.ts";

Deno.test("agent memory - reads kB fields of /proc/PID/status as bytes", () => {
  const status = "Name:\tdeno\nVmHWM:\t   61234 kB\nVmRSS:\t   51200 kB\nThreads:\t9\n";
  assert.equal(statusField(status, "VmRSS"), 51200 * 1024);
  assert.equal(statusField(status, "VmHWM"), 61234 * 1024);
  assert.equal(statusField(status, "VmSwap"), undefined);
  assert.equal(mb(51200 * 1024), "52.4");
});

Deno.test("agent memory - user plus system ticks of /proc/PID/stat, spaces in the name", () => {
  const stat = "4242 (deno task (x)) S 1 4242 4242 0 -1 4194560 900 0 0 0 37 5 0 0 20 0 9 0";
  assert.equal(cpuTicks(stat), 42);
});

Deno.test("agent memory - median of odd and even counts", () => {
  assert.equal(median([3, 1, 2]), 2);
  assert.equal(median([4, 1, 3, 2]), 2.5);
  assert.throws(() => median([]), RangeError);
});
