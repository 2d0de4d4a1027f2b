import assert from "node:assert/strict";
import { Hono } from "hono";
import type { AppEnv } from "./env.ts";
import { newRequestId, requestId } from "./request_id.ts";
import { testApp } from "../testing/app.ts";

Deno.test("request id - set once by middleware, read as c.var.requestId, on every answer", async () => {
  const app = new Hono<AppEnv>();
  app.use(requestId());
  app.get("/", (c) => c.text(c.var.requestId));
  const fresh = await app.request("/");
  const id = fresh.headers.get("x-request-id")!;
  assert.match(id, /^[0-9a-f-]{36}$/);
  assert.equal(await fresh.text(), id);
  // A client's own id never replaces ours (ten requests could share one request-log row).
  const given = await app.request("/", { headers: { "x-request-id": "client-id.1" } });
  const ours = given.headers.get("x-request-id")!;
  assert.match(ours, /^[0-9a-f-]{36}$/);
  assert.notEqual(ours, id);
  assert.equal(await given.text(), ours);
});

Deno.test("request id - the app's own answers carry one, errors included; the client's is echoed apart", async () => {
  const t = await testApp();
  for (const path of ["/", "/api/unknown", "/api/agents", "/login"]) {
    const res = await t.request(path, { headers: { "x-request-id": "client-id.1" } });
    assert.match(res.headers.get("x-request-id") ?? "", /^[0-9a-f-]{36}$/, path);
    assert.equal(res.headers.get("x-client-request-id"), "client-id.1", path);
    await res.body?.cancel();
  }
  await t.close();
});

Deno.test("request id - a time-ordered UUID (version 7): later ids sort after earlier ones", () => {
  const ids = [newRequestId(1_700_000_000_000), newRequestId(1_700_000_000_001)];
  for (const id of ids) {
    assert.match(id, /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  }
  assert.ok(ids[0] < ids[1]);
  assert.ok(ids[0].startsWith("018bcfe5-6800-"), ids[0]);
  assert.notEqual(newRequestId(1), newRequestId(1));
});
