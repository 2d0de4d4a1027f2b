import assert from "node:assert/strict";
import { testApp } from "../../testing/app.ts";

Deno.test("aliases API - admins add, list, change and remove aliases; each change is an event", async () => {
  await using t = await testApp();
  const put = await t.admin("/api/admin/aliases", {
    method: "PUT",
    json: { alias: "gpt-4o-mini", model: "llama3.2:3b" },
  });
  assert.equal(put.status, 200);
  assert.deepEqual(await put.json(), [
    { alias: "gpt-4o-mini", model: "llama3.2:3b", listed: false },
  ]);
  const listed = await t.admin("/api/admin/aliases", {
    method: "PUT",
    json: { alias: "gpt-4o-mini", model: "llama3.2:3b", listed: true },
  });
  assert.deepEqual(await listed.json(), [
    { alias: "gpt-4o-mini", model: "llama3.2:3b", listed: true },
  ]);
  assert.deepEqual(await (await t.admin("/api/admin/aliases")).json(), [
    { alias: "gpt-4o-mini", model: "llama3.2:3b", listed: true },
  ]);
  assert.match(t.ctx.security.setting("model_aliases") ?? "", /gpt-4o-mini/);

  const del = await t.admin("/api/admin/aliases", {
    method: "DELETE",
    json: { alias: "gpt-4o-mini" },
  });
  assert.deepEqual(await del.json(), []);
  const again = await t.admin("/api/admin/aliases", {
    method: "DELETE",
    json: { alias: "gpt-4o-mini" },
  });
  assert.equal(again.status, 404);
  assert.match((await again.json()).error, /does not exist/);

  await t.ctx.events.flush();
  const messages = (await t.ctx.registry.events()).filter((e) => e.kind === "alias")
    .map((e) => e.message);
  assert.deepEqual(messages.sort(), [
    'Alias "gpt-4o-mini" now served by model "llama3.2:3b"',
    'Alias "gpt-4o-mini" now served by model "llama3.2:3b" (listed)',
    'Alias "gpt-4o-mini" removed',
  ]);
});

Deno.test("aliases API - admin only, and bad aliases are refused with the reason", async () => {
  await using t = await testApp({ apiKeys: ["client-key-123456789"] });
  const anonymous = await t.request("/api/admin/aliases");
  assert.equal(anonymous.status, 401);
  await anonymous.body?.cancel();
  const client = await t.request("/api/admin/aliases", {
    method: "PUT",
    json: { alias: "a", model: "b" },
    headers: { authorization: "Bearer client-key-123456789" },
  });
  assert.equal(client.status, 401);
  await client.body?.cancel();

  const bad = async (json: unknown, message: RegExp) => {
    const res = await t.admin("/api/admin/aliases", { method: "PUT", json });
    assert.equal(res.status, 400, JSON.stringify(json));
    assert.match((await res.json()).error, message);
  };
  await bad({ alias: "gpt", model: "" }, /model/);
  await bad({ alias: "has space", model: "llama3.2" }, /alias/);
  await bad({ alias: "gpt", model: "llama3.2", listed: "yes" }, /listed/);
  await bad({ alias: "gpt", model: "llama3.2", extra: 1 }, /extra|Unrecognized/);
  await bad({ alias: "llama3.2", model: "llama3.2:latest" }, /to itself/);
  assert.deepEqual(t.ctx.aliases.list(), []);
});
