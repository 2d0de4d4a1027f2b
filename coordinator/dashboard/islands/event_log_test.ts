import assert from "node:assert/strict";
import type { FleetEvent } from "../../telemetry/bus.ts";
import { linkable } from "./event_log.tsx";

function event(id: number, kind: string, agent_id: string | null): FleetEvent {
  return { id, at: "2026-01-01T00:00:00.000Z", kind, agent_id, message: kind };
}

Deno.test("event log view - live events link to agents they name, not to removed ones", () => {
  const known = new Set(["a1"]);
  const next = linkable(known, [
    event(1, "registered", "a2"),
    event(2, "removed", "a1"),
    event(3, "status", null),
  ]);
  assert.deepEqual([...next].sort(), ["a2"]);
  assert.deepEqual([...known], ["a1"]);
  // Removed, then registered again under the same id: linkable again.
  assert.ok(linkable(next, [event(4, "registered", "a1")]).has("a1"));
});
