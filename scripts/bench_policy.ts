/**
 * `deno task bench:policy`: what the smart scheduler buys over least-connections and round robin.
 * For each policy: a fresh coordinator, three real agents supervising simulated Ollamas of
 * different speeds (40, 120 and 400 tokens/s, 2 slots each, 1.5 s to load a model that is not in
 * memory, idle models unloaded after 5 s), and the same steady load of chats over three models
 * at a concurrency below the fleet's capacity. Prints medians and p95s; asserts nothing.
 */
import { parseArgs } from "node:util";
import {
  adminCookie,
  freePort,
  spawnAgent,
  spawnCoordinator,
} from "../coordinator/testing_process.ts";
import { fmt, median } from "./bench/procs.ts";

const { values } = parseArgs({
  options: {
    seconds: { type: "string", default: "20" },
    concurrency: { type: "string", default: "3" },
  },
});
const SECONDS = Number(values.seconds);
const CONCURRENCY = Number(values.concurrency);
const MODELS = ["llama3.2", "qwen3:0.6b", "gemma3:1b"];
const SPEEDS = [40, 120, 400];

function p95(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(s.length * 0.95))];
}

async function run(policy: string) {
  const dir = await Deno.makeTempDir();
  const co = await spawnCoordinator({
    DATABASE_URL: `sqlite://${dir}/c.db`,
    SCHEDULER_POLICY: policy,
    AGENT_HEARTBEAT_INTERVAL: "1",
    LOG_LEVEL: "error",
  });
  const agents = SPEEDS.map((tps, i) =>
    spawnAgent(co.url, `agent-${tps}tps`, freePort(), {
      SIM_MODELS: MODELS.join(","),
      SIM_LOADED: MODELS[i],
      SIM_TPS: String(tps),
      SIM_TTFT_MS: "30",
      SIM_LOAD_MS: "1500",
      OLLAMA_NUM_PARALLEL: "2",
    })
  );
  const cookie = await adminCookie(co.url);
  for (let i = 0; i < 200; i++) {
    const list = await (await fetch(`${co.url}/api/agents`, { headers: { cookie } })).json();
    if (list.length === 3 && list.every((a: { status: string }) => a.status === "online")) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  const latencies: number[] = [];
  const ttfts: number[] = [];
  let tokens = 0;
  let errors = 0;
  const until = performance.now() + SECONDS * 1000;
  await Promise.all(Array.from({ length: CONCURRENCY }, async (_, w) => {
    let i = w;
    while (performance.now() < until) {
      const model = MODELS[i++ % MODELS.length];
      const t0 = performance.now();
      const res = await fetch(`${co.url}/api/chat`, {
        method: "POST",
        body: JSON.stringify({
          model,
          messages: [{ role: "user", content: `q${i}` }],
          options: { num_predict: 30 },
          keep_alive: "5s",
        }),
      });
      let first = 0;
      let text = "";
      const decoder = new TextDecoder();
      for await (const chunk of res.body!) {
        if (!first) first = performance.now();
        text += decoder.decode(chunk, { stream: true });
      }
      if (!res.ok) {
        errors++;
        continue;
      }
      latencies.push(performance.now() - t0);
      ttfts.push(first - t0);
      const last = JSON.parse(text.trim().split("\n").at(-1)!);
      tokens += last.eval_count ?? 0;
    }
  }));
  const row = {
    policy,
    requests: latencies.length,
    errors,
    p50: median(latencies),
    p95: p95(latencies),
    ttft50: median(ttfts),
    ttft95: p95(ttfts),
    tps: tokens / SECONDS,
  };
  await Promise.all(agents.map((a) => a.stop()));
  await co.stop();
  await Deno.remove(dir, { recursive: true });
  return row;
}

console.log(
  `Scheduling policies: ${SECONDS} s each, concurrency ${CONCURRENCY}, agents at ${
    SPEEDS.join("/")
  } tokens/s`,
);
console.log(
  "| policy | requests | errors | latency p50 (ms) | p95 (ms) | TTFT p50 (ms) | TTFT p95 (ms) | tokens/s |",
);
console.log("| --- | --- | --- | --- | --- | --- | --- | --- |");
for (const policy of ["smart", "least_connections", "round_robin"]) {
  const r = await run(policy);
  console.log(
    `| ${r.policy} | ${r.requests} | ${r.errors} | ${fmt(r.p50, 0)} | ${fmt(r.p95, 0)} | ${
      fmt(r.ttft50, 0)
    } | ${fmt(r.ttft95, 0)} | ${fmt(r.tps, 0)} |`,
  );
}
