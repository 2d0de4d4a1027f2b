import assert from "node:assert/strict";
import { testApp } from "./testing/app.ts";
import { startRetention } from "./server.ts";

Deno.test("retention - a flood of rows is pruned before the hour is up, down to the row limits", async () => {
  await using t = await testApp({ requestLogMaxRows: 1000 });
  const stop = startRetention(t.ctx, { checkMs: 5 });
  const now = new Date().toISOString();
  for (let i = 0; i < 25_000; i++) {
    t.ctx.log.add({
      id: `r${i}`,
      at: now,
      route: "/api/pull",
      model: "x",
      agent_id: null,
      agent_name: null,
      status: 200,
      latency_ms: 1,
      ttft_ms: null,
      queued_ms: null,
      tokens_in: null,
      tokens_out: null,
      tokens_per_second: null,
      attempts: 1,
      error: null,
    });
  }
  await t.ctx.log.flush();
  try {
    // The first prune ran at once on an empty log; the next follows the volume written since.
    let rows = Infinity;
    for (let i = 0; i < 400 && rows > 1000; i++) {
      rows = (await t.ctx.store.counts()).requests;
      if (rows > 1000) await new Promise((r) => setTimeout(r, 10));
    }
    assert.equal(rows, 1000);
  } finally {
    stop();
  }
});
