import assert from "node:assert/strict";
import { testApp } from "./testing/app.ts";
import { startRetention } from "./server.ts";
import { requestRecord } from "./testing/records.ts";

Deno.test("retention - a flood of rows is pruned before the hour is up, down to the row limits", async () => {
  await using t = await testApp({ requestLogMaxRows: 1000 });
  const stop = startRetention(t.ctx, { checkMs: 5 });
  const now = new Date().toISOString();
  for (let i = 0; i < 25_000; i++) {
    t.ctx.log.add(requestRecord(`r${i}`, { at: now, route: "/api/pull", model: "x" }));
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

Deno.test("retention - events are kept down to EVENT_MAX_ROWS, pruned after a tenth as many new rows", async () => {
  await using t = await testApp({ eventMaxRows: 1000 });
  const stop = startRetention(t.ctx, { checkMs: 5 });
  // 1,150 rows: past the limit by more than a tenth of it, far fewer than the 20,000 that call
  // for a prune otherwise.
  for (let i = 0; i < 1150; i++) t.ctx.events.record("model", null, `API pull of "m${i}"`);
  await t.ctx.events.flush();
  try {
    let rows = Infinity;
    for (let i = 0; i < 400 && rows > 1000; i++) {
      rows = (await t.ctx.store.counts()).events;
      if (rows > 1000) await new Promise((r) => setTimeout(r, 10));
    }
    assert.equal(rows, 1000);
    const [newest] = await t.ctx.events.query({ limit: 1 });
    assert.equal(newest.message, 'API pull of "m1149"');
  } finally {
    stop();
  }
});
