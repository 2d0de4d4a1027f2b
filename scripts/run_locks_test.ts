import assert from "node:assert/strict";
import { pinned, RUN_LOCKS, staleRunLocks } from "./run_locks.ts";

Deno.test("run locks - hold exactly what the coordinator and the agent import, no test tools", async () => {
  assert.deepEqual(await staleRunLocks(), [], "run deno task lock:run");
  for (const { lock } of RUN_LOCKS) {
    const names = Object.keys(
      pinned(await Deno.readTextFile(new URL(`../${lock}`, import.meta.url))),
    );
    for (const tool of ["playwright-core", "openai", "ollama"]) {
      assert.ok(!names.some((n) => n.startsWith(`${tool}@`)), `${lock} pins ${tool}`);
    }
  }
});
