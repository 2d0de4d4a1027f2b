import assert from "node:assert/strict";
import { registration, testApp } from "../../testing/app.ts";

/** Reads SSE events from a response until `done` says stop (or the stream ends). */
async function readEvents(
  res: Response,
  done: (events: { event: string; data: unknown }[]) => boolean,
): Promise<{ raw: string; events: { event: string; data: unknown }[] }> {
  const reader = res.body!.getReader();
  const decoder = new TextDecoder();
  let raw = "";
  const events: { event: string; data: unknown }[] = [];
  while (!done(events)) {
    const { value, done: end } = await reader.read();
    if (end) break;
    raw += decoder.decode(value, { stream: true });
    let i;
    while ((i = raw.indexOf("\n\n")) !== -1) {
      const block = raw.slice(0, i);
      raw = raw.slice(i + 2);
      const event = /^event: (.*)$/m.exec(block)?.[1];
      const data = /^data: (.*)$/m.exec(block)?.[1];
      if (event && data) events.push({ event, data: JSON.parse(data) });
      else if (block.startsWith("retry:")) events.push({ event: "retry", data: block });
    }
  }
  await reader.cancel();
  return { raw, events };
}

Deno.test("live API - /api/stats gives the summary and chart data; bad input is a 4xx", async () => {
  const t = await testApp();
  const { agent_id } = await t.register(registration());
  const res = await t.admin("/api/stats?range=1h");
  assert.equal(res.status, 200);
  const body = await res.json();
  assert.equal(body.summary.agents_online, 1);
  assert.equal(body.summary.requests_per_second, 0);
  assert.equal(body.series.range, "1h");
  assert.equal(body.series.t.length, 60);
  const bad = await t.admin("/api/stats?range=7d");
  assert.equal(bad.status, 400);
  assert.match((await bad.json()).error, /range/);
  const agent = await (await t.admin(`/api/stats?agent_id=${agent_id}`)).json();
  assert.equal(agent.agent.requests, 0);
  assert.equal(agent.series.t.length, 60);
  const unknown = await t.admin("/api/stats?agent_id=nobody");
  assert.equal(unknown.status, 404);
  assert.ok((await unknown.json()).error);
  await t.close();
});

Deno.test("live API - /api/fleet lists agents with capacity and drain", async () => {
  const t = await testApp();
  const { agent_id } = await t.register(registration());
  await t.admin(`/api/agents/${agent_id}`, { method: "PATCH", json: { drain: true, weight: 2 } });
  const { agents, figures } = await (await t.admin("/api/fleet")).json();
  assert.equal(agents.length, 1);
  assert.equal(agents[0].capacity, 4);
  assert.equal(agents[0].drain, true);
  assert.equal(agents[0].status, "draining");
  assert.deepEqual(figures, {});
  await t.close();
});

Deno.test("live API - the stream sends retry, hello and stats, then every bus change", async () => {
  const t = await testApp();
  const res = await t.admin("/api/stream?topics=agents,events,stats");
  assert.equal(res.status, 200);
  assert.match(res.headers.get("content-type")!, /^text\/event-stream/);
  const first = readEvents(res, (evs) => evs.some((e) => e.event === "agents"));
  // Once the stream is open, a registration reaches it as an agent and an event.
  await new Promise((r) => setTimeout(r, 20));
  await t.register(registration({ machine_name: "late" }));
  const { events } = await first;
  assert.equal(events[0].event, "retry");
  assert.match(String(events[0].data), /^retry: \d+/);
  assert.equal(events[1].event, "hello");
  assert.ok(events.some((e) => e.event === "stats"));
  const agents = events.find((e) => e.event === "agents")!.data as { machine_name: string }[];
  assert.equal(agents[0].machine_name, "late");
  await t.close();
});

Deno.test("live API - agent rows carry the state at the flush; a removed agent is not sent", async () => {
  const t = await testApp();
  const a = await t.register(registration({ machine_name: "a" }));
  const b = await t.register(registration({ machine_name: "b" }));
  const res = await t.admin("/api/stream?topics=agents");
  const got = readEvents(res, (evs) => evs.some((e) => e.event === "removed"));
  for (const cpu of [10, 20, 30]) {
    const hb = await t.heartbeat(a.agent_secret, {
      agent_id: a.agent_id,
      cpu_usage: cpu,
      memory_usage: 1,
      active_requests: 0,
    });
    assert.equal(hb.status, 200);
  }
  await t.admin(`/api/agents/${b.agent_id}`, { method: "DELETE" });
  const { events } = await got;
  type Row = { id: string; capacity: number; metrics: { cpu_usage: number } };
  const batches = events.filter((e) => e.event === "agents").map((e) => e.data as Row[]);
  for (const rows of batches) {
    assert.equal(new Set(rows.map((r) => r.id)).size, rows.length, "one row per agent per flush");
    assert.ok(!rows.some((r) => r.id === b.agent_id), "a removed agent has no row");
  }
  const last = batches.flat().filter((r) => r.id === a.agent_id).at(-1)!;
  assert.equal(last.metrics.cpu_usage, 30);
  assert.equal(last.capacity, 2);
  assert.deepEqual(events.find((e) => e.event === "removed")!.data, [b.agent_id]);
  await t.close();
});

Deno.test("live API - topics filter the stream; closing the hub ends it", async () => {
  const t = await testApp();
  const res = await t.admin("/api/stream?topics=events");
  assert.equal(t.ctx.live.size, 1);
  await t.register(registration());
  const got = readEvents(res, () => false);
  setTimeout(() => t.ctx.live.close(), 400);
  const { events } = await got;
  const kinds = events.map((e) => e.event);
  assert.ok(kinds.includes("events"));
  assert.ok(!kinds.includes("agents") && !kinds.includes("stats"));
  assert.equal(t.ctx.live.size, 0);
  const bad = await t.admin("/api/stream?topics=agents,secrets");
  assert.equal(bad.status, 400);
  assert.match((await bad.json()).error, /Unknown topic "secrets"/);
  await t.close();
});
