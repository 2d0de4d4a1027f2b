import assert from "node:assert/strict";
import { memberSpan, ModelEcho, replaceMember } from "./rewrite.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const bytes = (s: string) => encoder.encode(s);
const text = (b: Uint8Array) => decoder.decode(b);

Deno.test("rewrite - the top-level model member changes and every other byte stays", () => {
  const body = '{ "messages": [{"role":"user","content":"say \\"model\\": \\"x\\"",' +
    '"model":"nested"}],\n  "model" :  "gpt-4o-mini", "options":{"model":"n2"},"stream":true}';
  const out = text(replaceMember(bytes(body), "model", "llama3.2:3b"));
  assert.equal(out, body.replace('"gpt-4o-mini"', '"llama3.2:3b"'));
  assert.equal(JSON.parse(out).model, "llama3.2:3b");
  assert.equal(JSON.parse(out).options.model, "n2");
});

Deno.test("rewrite - the last of repeated members is the one JSON.parse keeps and we change", () => {
  const body = '{"model":"a","x":[1,{"y":"}"}],"model":"gpt-4o-mini"}';
  const out = text(replaceMember(bytes(body), "model", "real"));
  assert.equal(out, '{"model":"a","x":[1,{"y":"}"}],"model":"real"}');
  assert.equal(JSON.parse(out).model, "real");
});

Deno.test("rewrite - strings with escapes, brackets and long content are skipped whole", () => {
  const image = "A".repeat(100_000);
  const body = `{"prompt":"a \\\\\\" { [ \\\\","images":["${image}"],"name":"gpt"}`;
  const span = memberSpan(bytes(body), "name");
  assert.deepEqual(span, [body.length - 6, body.length - 1]);
  assert.equal(memberSpan(bytes(body), "model"), undefined);
  // The older `name` member of /api/show.
  const out = text(replaceMember(bytes(body), "name", "llama3.2"));
  assert.equal(JSON.parse(out).name, "llama3.2");
  assert.equal(JSON.parse(out).images[0].length, 100_000);
});

Deno.test("rewrite - a member name written with escapes is parsed and written again", () => {
  const body = '{"mod\\u0065l":"gpt-4o-mini","n":1.50}';
  const out = JSON.parse(text(replaceMember(bytes(body), "model", "real")));
  assert.deepEqual(out, { model: "real", n: 1.5 });
});

Deno.test("rewrite - the answer's model names the alias in a whole body", () => {
  const echo = new ModelEcho("llama3.2:3b", "gpt-4o-mini");
  const whole = bytes('{"model":"llama3.2:3b","a":1,"b":{"model":"llama3.2:3b"}}');
  assert.equal(
    text(echo.whole(whole)),
    '{"model":"gpt-4o-mini","a":1,"b":{"model":"gpt-4o-mini"}}',
  );
  // Nothing to change: the same bytes, not a copy.
  const other = bytes('{"model":"llama3.2:3bx","content":"\\"model\\":\\"llama3.2:3b\\""}');
  assert.equal(echo.whole(other), other);
});

Deno.test("rewrite - a stream is rewritten whatever its chunks, split tokens included", () => {
  const echo = new ModelEcho("llama3.2:3b", "gpt-4o-mini");
  const stream = '{"model":"llama3.2:3b","response":"a"}\n{"model":"llama3.2:3b","done":true}\n' +
    '{"x":"\\"mo"}\n';
  const expected = stream.replaceAll('"model":"llama3.2:3b"', '"model":"gpt-4o-mini"');
  const all = bytes(stream);
  for (let a = 0; a <= all.length; a++) {
    for (let b = a; b <= all.length; b += 7) {
      const rewriter = echo.stream();
      const parts = [all.subarray(0, a), all.subarray(a, b), all.subarray(b)].map((p) =>
        text(rewriter.chunk(p))
      );
      assert.equal(parts.join("") + text(rewriter.flush()), expected, `cut at ${a}, ${b}`);
    }
  }
  // A chunk that ends at a line (nearly all of them) is passed on whole, held back nothing.
  const rewriter = echo.stream();
  const line = bytes('{"model":"llama3.2:3b","done":false}\n');
  assert.equal(text(rewriter.chunk(line)), '{"model":"gpt-4o-mini","done":false}\n');
  assert.equal(rewriter.flush().length, 0);
});
