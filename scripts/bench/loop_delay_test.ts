import assert from "node:assert/strict";
import { EventLoopDelay } from "../../coordinator/telemetry/metrics.ts";
import { parseLoopDelay } from "./loop_delay.ts";

Deno.test("bench loop delay - reads the coordinator's own exposition in ms", () => {
  const delay = new EventLoopDelay();
  for (const s of [0.0001, 0.0002, 0.0003, 0.004]) delay.record(s);
  const out = ["# first line"];
  delay.render(out);
  const read = parseLoopDelay(out.join("\n") + "\n");
  assert.deepEqual(read, { p50: 0.3, p99: 4, max: 4 });
});

Deno.test("bench loop delay - a coordinator without the series reads as NaN", () => {
  const read = parseLoopDelay("# nothing\nprocess_open_fds 3\n");
  assert.ok(Number.isNaN(read.p50) && Number.isNaN(read.p99) && Number.isNaN(read.max));
});
