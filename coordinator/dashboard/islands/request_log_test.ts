import assert from "node:assert/strict";
import type { RequestRecord } from "../../telemetry/request_log.ts";
import { mergeByStart } from "./request_log.tsx";
import { requestRecord } from "../../testing/records.ts";

function rec(id: string, at: string): RequestRecord {
  return requestRecord(id, { at: `2026-01-01T00:00:${at}.000Z`, model: "llama3.2" });
}

Deno.test("request log view - live records join in start-time order, newest first", () => {
  const shown = [rec("c", "30"), rec("a", "10")];
  // They finish in this order: b (started at :20) took long, d (at :40) was quick.
  const next = mergeByStart(shown, [rec("d", "40"), rec("b", "20")], 10);
  assert.deepEqual(next.map((r) => r.id), ["d", "c", "b", "a"]);
  // A record already shown is not added twice; the limit keeps the newest starts.
  const again = mergeByStart(next, [rec("b", "20"), rec("e", "05")], 3);
  assert.deepEqual(again.map((r) => r.id), ["d", "c", "b"]);
});
