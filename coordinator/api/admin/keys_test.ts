import assert from "node:assert/strict";
import { FakeClock, testApp } from "../../testing/app.ts";
import type { RequestRecord } from "../../telemetry/request_log.ts";
import { requestRecord } from "../../testing/records.ts";

Deno.test("keys API - limits are set at creation, changed field by field and lifted with null", async () => {
  await using t = await testApp();
  const created = await t.admin("/api/keys", {
    json: { name: "batch", limits: { requests_per_minute: 60, concurrent: 2, weight: 0.5 } },
  });
  assert.equal(created.status, 201);
  const key = await created.json();
  assert.match(key.key, /^oc_/);
  assert.deepEqual(key.limits, {
    requests_per_minute: 60,
    tokens_per_minute: null,
    concurrent: 2,
    weight: 0.5,
  });
  const patched = await t.admin(`/api/keys/${key.id}`, {
    method: "PATCH",
    json: { limits: { tokens_per_minute: 10_000, concurrent: null } },
  });
  assert.equal(patched.status, 200);
  assert.deepEqual((await patched.json()).limits, {
    requests_per_minute: 60,
    tokens_per_minute: 10_000,
    concurrent: null,
    weight: 0.5,
  });
  // Stored, and what the quotas read for the key's next request.
  assert.deepEqual((await t.ctx.store.load()).keys.find((k) => k.id === key.id)?.limits, {
    requests_per_minute: 60,
    tokens_per_minute: 10_000,
    concurrent: null,
    weight: 0.5,
  });
  assert.equal(t.ctx.security.keyById(key.id)?.limits.tokens_per_minute, 10_000);
  const renamed = await t.admin(`/api/keys/${key.id}`, { method: "PATCH", json: { name: "etl" } });
  assert.equal((await renamed.json()).name, "etl");
  const list = await (await t.admin("/api/keys")).json();
  const row = list.find((k: { id: string }) => k.id === key.id);
  assert.equal(row.name, "etl");
  assert.equal(row.in_flight, 0);
  assert.equal(row.limits.requests_per_minute, 60);
  assert.equal("hash" in row, false);
});

Deno.test("keys API - bad limits are a 400; an unknown or revoked key is a 404", async () => {
  await using t = await testApp();
  const bad = [
    { name: "x", limits: { requests_per_minute: 0 } },
    { name: "x", limits: { requests_per_minute: 1.5 } },
    { name: "x", limits: { weight: 0 } },
    { name: "x", limits: { burst: 3 } },
    { name: "x", limits: "none" },
  ];
  for (const json of bad) {
    const res = await t.admin("/api/keys", { json });
    assert.equal(res.status, 400, JSON.stringify(json));
    assert.match((await res.json()).error, /limits/);
  }
  const missing = await t.admin("/api/keys/nope", { method: "PATCH", json: { name: "x" } });
  assert.equal(missing.status, 404);
  const key = await (await t.admin("/api/keys", { json: { name: "gone" } })).json();
  assert.equal((await t.admin(`/api/keys/${key.id}`, { method: "DELETE" })).status, 204);
  const revoked = await t.admin(`/api/keys/${key.id}`, { method: "PATCH", json: { name: "x" } });
  assert.equal(revoked.status, 404);
  // Changing keys is for admins only.
  const asClient = await t.request(`/api/keys/${key.id}`, {
    method: "PATCH",
    json: { name: "x" },
  });
  assert.equal(asClient.status, 401);
});

Deno.test("keys API - usage per key and minute comes from the request log", async () => {
  const clock = new FakeClock(Date.parse("2026-01-01T10:30:20Z"));
  await using t = await testApp({}, { now: clock.now });
  const record = (id: string, at: string, over: Partial<RequestRecord>) =>
    requestRecord(id, { at, model: "llama3.2", tokens_in: 1, tokens_out: 2, ...over });
  t.ctx.log.add(record("a", "2026-01-01T10:29:10.000Z", { key_id: "k1" }));
  t.ctx.log.add(record("b", "2026-01-01T10:30:01.000Z", { key_id: "k1", status: 429 }));
  t.ctx.log.add(record("c", "2026-01-01T10:30:02.000Z", { key_id: "k2", tokens_out: 40 }));
  // Older than the hour shown, and a request without a key: not in the answer.
  t.ctx.log.add(record("d", "2026-01-01T09:29:59.000Z", { key_id: "k1" }));
  t.ctx.log.add(record("e", "2026-01-01T10:30:03.000Z", {}));
  const res = await t.admin("/api/keys/usage?range=1h");
  assert.equal(res.status, 200);
  const usage = await res.json();
  const minute = Date.parse("2026-01-01T10:30:00Z");
  assert.equal(usage.bucket_ms, 60_000);
  assert.equal(usage.buckets, 60);
  assert.equal(usage.since, minute - 59 * 60_000);
  assert.deepEqual(usage.rows, [
    { key_id: "k1", t: minute - 60_000, requests: 1, tokens_in: 1, tokens_out: 2, limited: 0 },
    { key_id: "k1", t: minute, requests: 1, tokens_in: 1, tokens_out: 2, limited: 1 },
    { key_id: "k2", t: minute, requests: 1, tokens_in: 1, tokens_out: 40, limited: 0 },
  ]);
  assert.equal((await t.admin("/api/keys/usage?range=1y")).status, 400);
});

Deno.test("keys API - a revoked key's quota counts go with it", async () => {
  await using t = await testApp();
  const key = await (await t.admin("/api/keys", { json: { name: "gone" } })).json();
  const res = await t.request("/api/chat", {
    json: { model: "m", messages: [] },
    headers: { authorization: `Bearer ${key.key}` },
  });
  await res.body?.cancel();
  assert.equal(t.ctx.quotas.counts().has(key.id), true);
  assert.equal((await t.admin(`/api/keys/${key.id}`, { method: "DELETE" })).status, 204);
  assert.equal(t.ctx.quotas.counts().has(key.id), false);
});
