import assert from "node:assert/strict";
import { type Json, start } from "./testing.ts";

Deno.test("simulator - answers the liveness and listing routes like Ollama", async () => {
  await using sim = await start();
  assert.match(sim.url, /^http:\/\/127\.0\.0\.1:\d+$/);
  let res = await fetch(sim.url + "/");
  assert.equal(res.status, 200);
  assert.equal(await res.text(), "Ollama is running");
  res = await fetch(sim.url + "/", { method: "HEAD" });
  assert.equal(res.status, 200);
  assert.equal(await res.text(), "");
  res = await fetch(sim.url + "/api/version");
  assert.deepEqual(await res.json(), { version: "0.12.6" });
  res = await fetch(sim.url + "/api/version", { method: "HEAD" });
  assert.equal(res.status, 200);
  await res.body?.cancel();

  res = await fetch(sim.url + "/api/tags");
  const tags = await res.json();
  assert.deepEqual(tags.models.map((m: Json) => m.name), [
    "llama3.2:latest",
    "nomic-embed-text:latest",
  ]);
  const llama = tags.models[0];
  assert.equal(llama.model, "llama3.2:latest");
  assert.match(llama.digest, /^[0-9a-f]{64}$/);
  assert.ok(llama.size > 0);
  assert.ok(!Number.isNaN(Date.parse(llama.modified_at)));
  assert.deepEqual(llama.details, {
    parent_model: "",
    format: "gguf",
    family: "llama",
    families: ["llama"],
    parameter_size: "3.2B",
    quantization_level: "Q4_K_M",
  });
  res = await fetch(sim.url + "/api/tags", { method: "HEAD" });
  assert.equal(res.status, 200);
  await res.body?.cancel();

  res = await fetch(sim.url + "/api/ps");
  assert.deepEqual(await res.json(), { models: [] });
  sim.update({ loaded: ["llama3.2"] });
  const ps = await (await fetch(sim.url + "/api/ps")).json();
  assert.equal(ps.models.length, 1);
  assert.equal(ps.models[0].name, "llama3.2:latest");
  assert.equal(ps.models[0].size_vram, ps.models[0].size);
  assert.ok(Date.parse(ps.models[0].expires_at) > Date.now());

  res = await fetch(sim.url + "/api/nothing");
  assert.equal(res.status, 404);
  assert.equal(typeof (await res.json()).error, "string");
  res = await fetch(sim.url + "/api/generate");
  assert.equal(res.status, 405);
  assert.equal(typeof (await res.json()).error, "string");
  res = await fetch(sim.url + "/api/tags", { method: "PUT" });
  assert.equal(res.status, 405);
  await res.body?.cancel();
  res = await fetch(sim.url + "/v1/nothing");
  assert.equal(res.status, 404);
  const err = (await res.json()).error;
  assert.equal(err.type, "not_found_error");
  assert.equal(err.param, null);
  assert.equal(err.code, null);
});

Deno.test("simulator - rejects a Host header that is not local, like Ollama on loopback", async () => {
  await using sim = await start();
  // fetch() cannot set Host, so speak HTTP by hand.
  const ask = async (host: string) => {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: sim.port });
    await conn.write(
      new TextEncoder().encode(
        `GET /api/version HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`,
      ),
    );
    const text = new TextDecoder().decode(
      await new Response(conn.readable).arrayBuffer(),
    );
    return Number(text.split(" ")[1]);
  };
  assert.equal(await ask("evil.example.com"), 403);
  assert.equal(await ask("localhost:11434"), 200);
  assert.equal(await ask(`127.0.0.1:${sim.port}`), 200);
  assert.equal(await ask("gpu.internal"), 200);
});
