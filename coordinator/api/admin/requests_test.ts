import assert from "node:assert/strict";
import type { RequestRecord } from "../../telemetry/request_log.ts";
import { testApp } from "../../testing/app.ts";
import { toCsv } from "./requests.ts";

function rec(i: number, overrides: Partial<RequestRecord> = {}): RequestRecord {
  return {
    id: `r${i}`,
    at: new Date(Date.UTC(2026, 0, 1, 0, 0, i)).toISOString(),
    route: "/api/chat",
    model: "llama3.2",
    agent_id: "a1",
    agent_name: "gpu-01",
    status: 200,
    latency_ms: 100 + i,
    ttft_ms: 10,
    queued_ms: 0,
    tokens_in: 5,
    tokens_out: 20,
    tokens_per_second: 50,
    attempts: 1,
    error: null,
    ...overrides,
  };
}

Deno.test("requests API - newest first, with filters", async () => {
  const t = await testApp();
  t.ctx.log.add(rec(1));
  t.ctx.log.add(rec(2, { model: "qwen2.5:7b", agent_id: "a2" }));
  t.ctx.log.add(rec(3, { status: 503, error: "All agents failed" }));
  t.ctx.log.add(rec(4, { route: "/v1/chat/completions", key_id: "k1" }));
  const all = await (await t.admin("/api/requests")).json();
  assert.deepEqual(all.map((r: RequestRecord) => r.id), ["r4", "r3", "r2", "r1"]);
  const ids = async (q: string) =>
    (await (await t.admin(`/api/requests?${q}`)).json()).map((r: RequestRecord) => r.id);
  assert.deepEqual(await ids("model=qwen2.5:7b"), ["r2"]);
  assert.deepEqual(await ids("agent_id=a2"), ["r2"]);
  assert.deepEqual(await ids("status=error"), ["r3"]);
  assert.deepEqual(await ids("route=/v1/chat/completions"), ["r4"]);
  assert.deepEqual(await ids("key_id=k1"), ["r4"]);
  assert.deepEqual(await ids("limit=2"), ["r4", "r3"]);
  assert.deepEqual(await ids("since=2026-01-01T00:00:02Z&until=2026-01-01T00:00:04Z"), [
    "r3",
    "r2",
  ]);
  // Empty form fields are ignored, as a plain HTML form sends them.
  assert.deepEqual(await ids("model=&status="), ["r4", "r3", "r2", "r1"]);
  await t.close();
});

Deno.test("requests API - bad filters are a 400 with a message", async () => {
  const t = await testApp();
  for (
    const q of [
      "limit=0",
      "limit=abc",
      "status=maybe",
      "since=yesterday",
      "format=xml",
      "color=red",
    ]
  ) {
    const res = await t.admin(`/api/requests?${q}`);
    assert.equal(res.status, 400, q);
    assert.equal(typeof (await res.json()).error, "string", q);
  }
  await t.close();
});

Deno.test("requests API - CSV and JSON exports download with the filters applied", async () => {
  const t = await testApp();
  t.ctx.log.add(rec(1));
  t.ctx.log.add(rec(2, { model: '=HYPERLINK("x")', status: 400, error: 'bad, "quoted"\nline' }));
  const csv = await t.admin("/api/requests?format=csv");
  assert.equal(csv.status, 200);
  assert.match(csv.headers.get("content-type")!, /^text\/csv/);
  assert.match(csv.headers.get("content-disposition")!, /attachment; filename="requests-.*\.csv"/);
  const text = await csv.text();
  const lines = text.split("\r\n");
  assert.equal(lines[0].split(",")[0], "at");
  assert.equal(lines.length, 4); // header, two rows, trailing newline
  // A formula is neutralised; commas, quotes and newlines are quoted.
  assert.ok(text.includes(`"'=HYPERLINK(""x"")"`));
  assert.ok(text.includes(`"bad, ""quoted""\nline"`));
  const json = await t.admin("/api/requests?format=json&status=ok");
  assert.match(json.headers.get("content-disposition")!, /\.json"/);
  assert.deepEqual((await json.json()).map((r: RequestRecord) => r.id), ["r1"]);
  await t.close();
});

Deno.test("requests API - toCsv writes empty cells for nulls and numbers as they are", () => {
  const csv = toCsv([rec(1, { ttft_ms: null, error: null })]);
  const row = csv.split("\r\n")[1].split(",");
  assert.equal(row[0], "2026-01-01T00:00:01.000Z");
  assert.equal(row[7], "101");
  assert.equal(row[8], "");
});
