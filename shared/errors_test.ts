import assert from "node:assert/strict";
import { anthropicError, ollamaError, openaiError } from "./errors.ts";

Deno.test("error builders - a Headers given is taken over with the shape's content type", async () => {
  for (
    const [build, type] of [
      [ollamaError, "application/json; charset=utf-8"],
      [openaiError, "application/json"],
      [anthropicError, "application/json"],
    ] as const
  ) {
    const given = new Headers({ "x-request-id": "r1" });
    const res = build(503, "busy", given);
    assert.equal(given.get("content-type"), type);
    assert.equal(res.headers.get("content-type"), type);
    assert.equal(res.headers.get("x-request-id"), "r1");
    await res.body?.cancel();
  }
});

Deno.test("error builders - headers given as a record or pairs are copied, not changed", async () => {
  const record = { "retry-after": "5" };
  const pairs: [string, string][] = [["retry-after", "5"]];
  const a = ollamaError(503, "busy", record);
  const b = ollamaError(503, "busy", pairs);
  assert.deepEqual(record, { "retry-after": "5" });
  assert.deepEqual(pairs, [["retry-after", "5"]]);
  for (const res of [a, b]) {
    assert.equal(res.headers.get("retry-after"), "5");
    assert.deepEqual(await res.json(), { error: "busy" });
  }
});
