import assert from "node:assert/strict";
import { errorMessage, readLines, sleep } from "./util.ts";

function streamOf(...chunks: string[]): ReadableStream<Uint8Array> {
  const encoder = new TextEncoder();
  return new ReadableStream({
    start(controller) {
      for (const c of chunks) controller.enqueue(encoder.encode(c));
      controller.close();
    },
  });
}

Deno.test("util - lines are split across chunks, CRLF trimmed, last line kept", async () => {
  const lines: string[] = [];
  for await (const line of readLines(streamOf("a\r\nb", "c\n", "", "\nd"))) lines.push(line);
  assert.deepEqual(lines, ["a", "bc", "", "d"]);
});

Deno.test("util - aborting stops reading a stream that never ends", async () => {
  let cancelled = false;
  const endless = new ReadableStream<Uint8Array>({
    start(controller) {
      controller.enqueue(new TextEncoder().encode("first\n"));
    },
    cancel() {
      cancelled = true;
    },
  });
  const controller = new AbortController();
  const lines: string[] = [];
  for await (const line of readLines(endless, controller.signal)) {
    lines.push(line);
    controller.abort();
  }
  assert.deepEqual(lines, ["first"]);
  assert.equal(cancelled, true);
});

Deno.test("util - sleep ends early on abort", async () => {
  const controller = new AbortController();
  const slept = sleep(60_000, controller.signal);
  controller.abort();
  await slept;
  await sleep(0);
});

Deno.test("util - error messages include fetch's cause", () => {
  const error = new TypeError("fetch failed", { cause: new Error("Connection refused") });
  assert.equal(errorMessage(error), "fetch failed: Connection refused");
  assert.equal(errorMessage(new Error("plain")), "plain");
  assert.equal(errorMessage("text"), "text");
});
