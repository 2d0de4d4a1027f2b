import assert from "node:assert/strict";
import { Hono } from "hono";
import type { AppEnv } from "./env.ts";
import { requestId } from "./request_id.ts";
import { testApp } from "../testing/app.ts";

Deno.test("request id - set once by middleware, read as c.var.requestId, on every answer", async () => {
  const app = new Hono<AppEnv>();
  app.use(requestId());
  app.get("/", (c) => c.text(c.var.requestId));
  const fresh = await app.request("/");
  const id = fresh.headers.get("x-request-id")!;
  assert.match(id, /^[0-9a-f-]{36}$/);
  assert.equal(await fresh.text(), id);
  const given = await app.request("/", { headers: { "x-request-id": "client-id.1" } });
  assert.equal(given.headers.get("x-request-id"), "client-id.1");
  assert.equal(await given.text(), "client-id.1");
  const insane = await app.request("/", { headers: { "x-request-id": "a b\u00e9" } });
  assert.match(insane.headers.get("x-request-id")!, /^[0-9a-f-]{36}$/);
});

Deno.test("request id - the app's own answers carry one, errors included", async () => {
  const t = await testApp();
  for (const path of ["/", "/api/unknown", "/api/agents", "/login"]) {
    const res = await t.request(path);
    assert.match(res.headers.get("x-request-id") ?? "", /^[0-9a-f-]{36}$/, path);
    await res.body?.cancel();
  }
  await t.close();
});
