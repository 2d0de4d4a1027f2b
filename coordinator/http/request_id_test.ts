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
