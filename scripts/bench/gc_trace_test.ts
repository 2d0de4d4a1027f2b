import assert from "node:assert/strict";
import { gcFigures, parseGcLine } from "./gc_trace.ts";

const line = (isolate: string, d: Record<string, unknown>) =>
  `[123:${isolate}:0]     2085 ms: GC: ${JSON.stringify(d)}`;

Deno.test("bench gc trace - reads a collection's kind, pause and sizes; other lines are null", () => {
  const text = line("0x55c1", {
    pause: 3.035,
    gc: "s",
    allocated: 27202896,
    promoted: 1024,
    new_space_survived: 1616504,
  });
  assert.deepEqual(parseGcLine(text), {
    isolate: "0x55c1",
    gc: "s",
    pause: 3.035,
    allocated: 27202896,
    survived: 1616504,
    promoted: 1024,
  });
  assert.equal(parseGcLine("[123:0x55c1:0]  81 ms: Memory pool: Removed pages: 0"), null);
  assert.equal(parseGcLine("2026-12-02T06:00:00.000Z INFO  request id=…"), null);
  assert.equal(parseGcLine("[1:0x1:0] GC: {not json"), null);
});

Deno.test("bench gc trace - figures per request come from the isolate that allocated most", () => {
  const events = [
    { isolate: "main", gc: "s", pause: 2, allocated: 30_000, survived: 400, promoted: 100 },
    { isolate: "main", gc: "s", pause: 4, allocated: 30_000, survived: 600, promoted: 300 },
    { isolate: "main", gc: "mc", pause: 10, allocated: 0, survived: 0, promoted: 0 },
    // A worker's collections are not the requests' cost.
    { isolate: "worker", gc: "s", pause: 50, allocated: 1_000, survived: 9e6, promoted: 9e6 },
  ];
  assert.deepEqual(gcFigures(events, 10), {
    allocatedPerRequest: 6_000,
    scavenges: 2,
    scavengePauseMs: 3,
    pausePerRequestUs: 600,
    survivedPerScavenge: 500,
    promotedPerScavenge: 200,
    promotedPerRequest: 40,
    majorPausePerRequestUs: 1_000,
  });
});
