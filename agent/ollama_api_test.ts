import assert from "node:assert/strict";
import { startSimulator } from "@oc/simulator";
import {
  getOllamaVersion,
  isOllamaUp,
  listInstalledModels,
  listLoadedModels,
  ollamaUrl,
  parsePs,
  parseTags,
} from "./ollama_api.ts";

Deno.test("ollama api - tags and ps replies become wire models, bad entries skipped", () => {
  const tags = {
    models: [
      {
        name: "llama3.2:latest",
        model: "llama3.2:latest",
        modified_at: "2025-01-01T00:00:00Z",
        size: 2019393189,
        digest: "a80c4f17acd5",
        details: {
          parent_model: "",
          format: "gguf",
          family: "llama",
          families: null,
          parameter_size: "3.2B",
          quantization_level: "Q4_K_M",
        },
      },
      { name: "" },
      { size: 1 },
    ],
  };
  // Every field Ollama sent is kept, the ones the coordinator does not read too.
  assert.deepEqual(parseTags(tags), [tags.models[0]]);
  assert.deepEqual(parseTags({ models: null }), []);
  assert.deepEqual(parseTags("nope"), []);
  assert.deepEqual(
    parsePs({ models: [{ name: "m", size_vram: 10, context_length: 4096, expires_at: "x" }] }),
    [{ name: "m", size_vram: 10, context_length: 4096, expires_at: "x" }],
  );
});

Deno.test("ollama api - reads liveness, version and models from a running Ollama", async () => {
  const sim = await startSimulator({
    models: ["llama3.2", "qwen3:0.6b"],
    loaded: ["llama3.2"],
    quiet: true,
  });
  try {
    const url = ollamaUrl(sim.port);
    assert.equal(await isOllamaUp(url), true);
    assert.equal(await getOllamaVersion(url), "0.12.6");
    const names = (await listInstalledModels(url)).map((m) => m.name).sort();
    assert.deepEqual(names, ["llama3.2:latest", "qwen3:0.6b"]);
    assert.deepEqual((await listLoadedModels(url)).map((m) => m.name), ["llama3.2:latest"]);
  } finally {
    await sim.close();
  }
  assert.equal(await isOllamaUp(ollamaUrl(sim.port)), false);
});
