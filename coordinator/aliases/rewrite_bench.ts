/**
 * What aliases cost, per request and per streamed chunk:
 * `deno bench --lock=deno.lock coordinator/aliases/rewrite_bench.ts`.
 */
import { ModelAliases } from "./mod.ts";
import { ModelEcho, replaceMember } from "./rewrite.ts";

const encoder = new TextEncoder();
const settings = () => {
  const map = new Map<string, string>();
  return {
    setting: (k: string) => map.get(k),
    setSetting: (k: string, v: string) => {
      map.set(k, v);
      return Promise.resolve();
    },
  };
};
const none = new ModelAliases(settings());
const many = new ModelAliases(settings());
for (let i = 0; i < 100; i++) await many.set(`alias-${i}`, `model-${i}`);

Deno.bench("resolve, no aliases", { group: "resolve", baseline: true }, () => {
  none.resolve("llama3.2:3b");
});
Deno.bench("resolve, 100 aliases, a model that is none", { group: "resolve" }, () => {
  many.resolve("llama3.2:3b");
});
Deno.bench("resolve, 100 aliases, an alias", { group: "resolve" }, () => {
  many.resolve("alias-42");
});

const chat = encoder.encode(JSON.stringify({
  model: "gpt-4o-mini",
  messages: Array.from({ length: 8 }, (_, i) => ({
    role: i % 2 ? "assistant" : "user",
    content: "A question about rivers and mountains, asked at some length. ".repeat(3),
  })),
  stream: true,
  options: { temperature: 0.7 },
}));
const image = encoder.encode(JSON.stringify({
  messages: [{ role: "user", content: "What is this?", images: ["A".repeat(4 * 1024 * 1024)] }],
  model: "gpt-4o-mini",
}));

Deno.bench(`request body ${chat.length} B: model rewritten`, { group: "body" }, () => {
  replaceMember(chat, "model", "llama3.2:3b");
});
Deno.bench(`request body ${image.length} B (an image): model rewritten`, { group: "body" }, () => {
  replaceMember(image, "model", "llama3.2:3b");
});

const echo = new ModelEcho("llama3.2:3b", "gpt-4o-mini");
const chunks = {
  ndjson: encoder.encode(
    '{"model":"llama3.2:3b","created_at":"2026-01-01T00:00:00.000000Z","message":' +
      '{"role":"assistant","content":" river"},"done":false}\n',
  ),
  openai: encoder.encode(
    'data: {"id":"chatcmpl-514","object":"chat.completion.chunk","created":1767225600,' +
      '"model":"llama3.2:3b","system_fingerprint":"fp_ollama","choices":[{"index":0,"delta":' +
      '{"role":"assistant","content":" river"},"finish_reason":null}]}\n\n',
  ),
  anthropic: encoder.encode(
    'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":' +
      '{"type":"text_delta","text":" river"}}\n\n',
  ),
  coalesced: encoder.encode(
    ('{"model":"llama3.2:3b","created_at":"2026-01-01T00:00:00.000000Z","message":' +
      '{"role":"assistant","content":" river"},"done":false}\n').repeat(32),
  ),
};
const decoder = new TextDecoder();
for (const [name, chunk] of Object.entries(chunks)) {
  const rewriter = echo.stream();
  Deno.bench(
    `${name} chunk, ${chunk.length} B: model echoed`,
    { group: name, baseline: true },
    () => {
      rewriter.chunk(chunk);
    },
  );
  // For comparison: what the same would cost by parsing each line and writing it again.
  Deno.bench(`${name} chunk, ${chunk.length} B: parsed and written again`, { group: name }, () => {
    const lines = decoder.decode(chunk).split("\n");
    const out = lines.map((line) => {
      const at = line.indexOf("{");
      if (at === -1) return line;
      const v = JSON.parse(line.slice(at));
      if (v.model) v.model = "gpt-4o-mini";
      return line.slice(0, at) + JSON.stringify(v);
    });
    encoder.encode(out.join("\n"));
  });
}
