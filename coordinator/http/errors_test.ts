import assert from "node:assert/strict";
import { errorResponse } from "./errors.ts";

const ID = "01a235e0-d9a9-78ed-9953-3c0db1c7139b";

Deno.test("errorResponse - each shape carries its content type and the request id", async () => {
  const ollama = errorResponse("ollama", 503, "No agent is online", ID);
  assert.equal(ollama.status, 503);
  assert.equal(ollama.headers.get("content-type"), "application/json; charset=utf-8");
  assert.equal(ollama.headers.get("x-request-id"), ID);
  assert.deepEqual(await ollama.json(), { error: "No agent is online" });

  const openai = errorResponse("openai", 404, "model not found", ID);
  assert.equal(openai.headers.get("content-type"), "application/json");
  assert.equal(openai.headers.get("x-request-id"), ID);
  assert.equal((await openai.json()).error.type, "not_found_error");

  const anthropic = errorResponse("anthropic", 429, "slow down", ID);
  assert.equal(anthropic.headers.get("x-request-id"), ID);
  assert.equal((await anthropic.json()).request_id, ID);
});

Deno.test("errorResponse - extra headers are kept beside the id, and no id means none", async () => {
  const withExtra = errorResponse("ollama", 503, "busy", ID, { "retry-after": "5" });
  assert.equal(withExtra.headers.get("retry-after"), "5");
  assert.equal(withExtra.headers.get("x-request-id"), ID);
  await withExtra.body?.cancel();

  const bare = errorResponse("ollama", 400, "bad", undefined, [["retry-after", "1"]]);
  assert.equal(bare.headers.get("x-request-id"), null);
  assert.equal(bare.headers.get("retry-after"), "1");
  assert.equal(bare.headers.get("content-type"), "application/json; charset=utf-8");
  await bare.body?.cancel();
});
