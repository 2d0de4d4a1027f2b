import assert from "node:assert/strict";
import * as agent from "./mod.ts";

Deno.test("mod - exposes the agent's entry points", () => {
  for (
    const name of [
      "runAgent",
      "main",
      "configFrom",
      "loadConfig",
      "createSupervisor",
      "CoordinatorClient",
      "createMetricsSampler",
      "pullModel",
      "createLogger",
    ] as const
  ) {
    assert.equal(typeof agent[name], "function", name);
  }
  assert.match(agent.AGENT_VERSION, /^\d+\.\d+\.\d+/);
});
