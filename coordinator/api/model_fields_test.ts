import assert from "node:assert/strict";
import { parsePs, parseTags } from "../../agent/ollama_api.ts";
import { registration, testApp } from "../testing/app.ts";

const FIXTURE = JSON.parse(
  await Deno.readTextFile(new URL("../testing/fixtures/ollama_0.12.json", import.meta.url)),
);

/** An Ollama that answers what the fixture recorded. */
function recordedOllama() {
  return Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (req) => {
    const path = new URL(req.url).pathname;
    if (path === "/api/tags") return Response.json(FIXTURE.tags);
    if (path === "/api/ps") return Response.json(FIXTURE.ps);
    if (path === "/api/version") return Response.json({ version: "0.12.6" });
    return new Response("404 page not found", { status: 404 });
  });
}

Deno.test("model fields - every field an agent's Ollama sends reaches /api/tags and /api/ps", async () => {
  await using ollama = recordedOllama();
  await using t = await testApp();
  // The agent's own reading of the answers keeps every field too.
  const models = parseTags(FIXTURE.tags);
  const loaded = parsePs(FIXTURE.ps);
  assert.deepEqual(models, FIXTURE.tags.models);
  assert.deepEqual(loaded, FIXTURE.ps.models);
  const reg = await t.register(registration({
    ollama_port: ollama.addr.port,
    models,
    loaded_models: loaded,
  }));
  assert.ok(reg.agent_id);
  const tags = await (await t.request("/api/tags")).json();
  assert.deepEqual(tags.models, FIXTURE.tags.models);
  const ps = await (await t.request("/api/ps")).json();
  assert.deepEqual(ps.models, FIXTURE.ps.models);
  // And the admin's view of the agent, which the dashboard reads.
  const agent = await (await t.admin(`/api/agents/${reg.agent_id}`)).json();
  assert.deepEqual(agent.models, FIXTURE.tags.models);
});
