import assert from "node:assert/strict";
import { readLines } from "./lines.ts";

async function* chunks(...parts: (string | Uint8Array)[]): AsyncGenerator<Uint8Array> {
  for (const p of parts) yield typeof p === "string" ? new TextEncoder().encode(p) : p;
}

async function collect(source: AsyncIterable<Uint8Array>, maxLength?: number) {
  const out: string[] = [];
  for await (const line of readLines(source, { maxLength })) out.push(line);
  return out;
}

Deno.test("readLines - lines split anywhere, CRLF and a last line without newline", async () => {
  const box = new TextEncoder().encode("箱"); // three bytes, split between chunks below
  const lines = await collect(chunks(
    '{"a":1}\n{"b"',
    ":2}\r\n\n",
    box.subarray(0, 1),
    box.subarray(1),
    "\nlast",
  ));
  assert.deepEqual(lines, ['{"a":1}', '{"b":2}', "", "箱", "last"]);
});

Deno.test("readLines - a line longer than the limit is refused instead of buffered", async () => {
  const endless = (async function* () {
    for (let i = 0; i < 100; i++) yield new Uint8Array(100).fill(120);
  })();
  await assert.rejects(collect(endless, 1000), RangeError);
  assert.deepEqual(await collect(chunks("x".repeat(900) + "\nok\n"), 1000), [
    "x".repeat(900),
    "ok",
  ]);
});
