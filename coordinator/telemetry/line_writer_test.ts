import assert from "node:assert/strict";
import { LineWriter } from "./line_writer.ts";

function sink() {
  const writes: string[] = [];
  let release: (() => void) | undefined;
  let stuck = false;
  const decoder = new TextDecoder();
  return {
    writes,
    stick() {
      stuck = true;
    },
    unstick() {
      stuck = false;
      release?.();
    },
    write(bytes: Uint8Array) {
      writes.push(decoder.decode(bytes));
      if (!stuck) return Promise.resolve(bytes.length);
      return new Promise<number>((r) => release = () => r(bytes.length));
    },
    writeSync(bytes: Uint8Array) {
      writes.push(decoder.decode(bytes));
      return bytes.length;
    },
  };
}

Deno.test("line writer - lines of one turn go out in one write, in order, never synchronously", async () => {
  const s = sink();
  const w = new LineWriter(s);
  w.write("a");
  w.write("b");
  assert.deepEqual(s.writes, []);
  await w.flush();
  w.write("c");
  await w.flush();
  assert.deepEqual(s.writes, ["a\nb\n", "c\n"]);
});

Deno.test("line writer - a stuck stream costs a bounded buffer; the drop is counted and said", async () => {
  const s = sink();
  const w = new LineWriter(s, { maxChars: 20 });
  s.stick();
  w.write("first");
  await Promise.resolve();
  await Promise.resolve();
  for (let i = 0; i < 10; i++) w.write(`line ${i}`);
  assert.ok(w.dropped > 0);
  s.unstick();
  await w.flush();
  const out = s.writes.join("");
  assert.match(out, /^first\n/);
  assert.match(out, /\d+ log lines dropped: output was not taken\n/);
  assert.match(out, /line 0\n/);
});

Deno.test("line writer - what is queued at exit is written synchronously", () => {
  const s = sink();
  const w = new LineWriter(s);
  w.write("last words");
  w.flushSync();
  assert.deepEqual(s.writes, ["last words\n"]);
});

Deno.test("line writer - with a delay, lines until it passes go out in one write; a flush does not wait", async () => {
  const s = sink();
  const w = new LineWriter(s, { delayMs: 60_000 });
  w.write("a");
  await new Promise((r) => setTimeout(r, 0));
  w.write("b");
  await new Promise((r) => setTimeout(r, 0));
  assert.deepEqual(s.writes, []);
  await w.flush();
  assert.deepEqual(s.writes, ["a\nb\n"]);
});
