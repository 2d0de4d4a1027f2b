import assert from "node:assert/strict";
import { applyAgentMessage } from "./live.ts";

Deno.test("live - agent messages update, add and remove rows by id", () => {
  const list = [{ id: "a", v: 1 }, { id: "b", v: 1 }];
  const updated = applyAgentMessage(list, "agents", [{ id: "b", v: 2 }, { id: "c", v: 1 }]);
  assert.deepEqual(updated, [{ id: "a", v: 1 }, { id: "b", v: 2 }, { id: "c", v: 1 }]);
  assert.deepEqual(list, [{ id: "a", v: 1 }, { id: "b", v: 1 }]);
  assert.deepEqual(applyAgentMessage(updated, "removed", ["a", "c"]), [{ id: "b", v: 2 }]);
  assert.equal(applyAgentMessage(list, "stats", {}), list);
});
