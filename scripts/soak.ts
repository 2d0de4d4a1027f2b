/**
 * `deno task bench:soak [--minutes 10] [--concurrency 8]`: moderate steady load through the
 * coordinator (a mix of streaming and non-streaming chats, embeddings and listings, against three
 * simulated Ollama processes), reporting the coordinator's resident memory every minute. After
 * warm-up it must not grow. Loopback only; stops by itself.
 */
import { parseArgs } from "node:util";
import { registerSim, spawnCoordinator, spawnSimulator } from "../coordinator/testing/process.ts";
import { fmt, rssBytes } from "./bench/procs.ts";

const { values } = parseArgs({
  options: {
    minutes: { type: "string", default: "10" },
    concurrency: { type: "string", default: "8" },
  },
});
const MINUTES = Number(values.minutes);
const CONCURRENCY = Number(values.concurrency);

const sims = await Promise.all(
  [200, 400, 800].map((tps) =>
    spawnSimulator([
      "--tps",
      String(tps),
      "--models",
      "llama3.2,qwen3:0.6b,nomic-embed-text",
      "--parallel",
      "8",
    ])
  ),
);
const dbDir = await Deno.makeTempDir();
const co = await spawnCoordinator({
  DATABASE_URL: `sqlite://${dbDir}/soak.db`,
  LOG_LEVEL: "error",
});
for (const [i, sim] of sims.entries()) {
  await registerSim(co.url, `soak-${i}`, sim, 8, { keepAlive: true });
}

const bodies = [
  ["/api/chat", {
    model: "llama3.2",
    messages: [{ role: "user", content: "hello" }],
    stream: true,
    options: { num_predict: 40 },
  }],
  ["/api/chat", {
    model: "qwen3:0.6b",
    messages: [{ role: "user", content: "hi" }],
    stream: false,
    options: { num_predict: 20 },
  }],
  ["/api/generate", { model: "llama3.2", prompt: "story", options: { num_predict: 60 } }],
  ["/api/embed", { model: "nomic-embed-text", input: ["a", "b", "c"] }],
  ["/v1/chat/completions", {
    model: "llama3.2",
    messages: [{ role: "user", content: "x" }],
    stream: true,
  }],
] as const;

let requests = 0, errors = 0;
const until = Date.now() + MINUTES * 60_000;
const workers = Array.from({ length: CONCURRENCY }, async (_, w) => {
  let i = w;
  while (Date.now() < until) {
    const [path, body] = bodies[i++ % bodies.length];
    try {
      const res = await fetch(`${co.url}${path}`, { method: "POST", body: JSON.stringify(body) });
      await res.arrayBuffer();
      if (!res.ok) errors++;
    } catch {
      errors++;
    }
    requests++;
    if (i % 20 === 0) await (await fetch(`${co.url}/api/tags`)).arrayBuffer();
  }
});

console.log(
  `Soak: ${MINUTES} min at concurrency ${CONCURRENCY} through the coordinator (3 simulated agents)`,
);
console.log("| minute | requests | errors | coordinator RSS (MB) |");
console.log("| --- | --- | --- | --- |");
const samples: number[] = [];
for (let m = 1; m <= MINUTES; m++) {
  await new Promise((r) => setTimeout(r, Math.max(0, Math.min(60_000, until - Date.now()))));
  const rss = rssBytes(co.process.pid) / 1e6;
  samples.push(rss);
  console.log(`| ${m} | ${requests} | ${errors} | ${fmt(rss, 1)} |`);
}
await Promise.all(workers);
if (samples.length >= 3) {
  const warm = samples[1];
  const last = samples[samples.length - 1];
  console.log(
    `RSS after warm-up (minute 2): ${fmt(warm, 1)} MB; at the end: ${fmt(last, 1)} MB; change ${
      fmt(last - warm, 1)
    } MB`,
  );
}
await co.stop();
await Promise.all(sims.map((s) => s.stop()));
await Deno.remove(dbDir, { recursive: true });
