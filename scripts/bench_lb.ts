/**
 * `deno task bench:lb`: the scheduling policies under the same open-loop workload.
 * A heterogeneous fleet of real agents supervising simulated Ollamas — 60, 30 and 10 tokens/s,
 * 2 slots each, two models each installed on a subset, 3 s to load a model — with time compressed
 * tenfold (600/300/100 tokens/s, 0.3 s loads), and Poisson arrivals near 80 % of the fleet's
 * capacity with mixed prompt and answer lengths (seeded, identical for every policy). Prints p50
 * and p95 end-to-end latency, p95 time to first token, throughput and failures per policy.
 * Loopback only; asserts nothing.
 */
import { parseArgs } from "node:util";
import {
  adminCookie,
  freePort,
  spawnAgent,
  spawnCoordinator,
} from "../coordinator/testing/process.ts";
import { fmt, median } from "./bench/procs.ts";

const { values } = parseArgs({
  options: {
    seconds: { type: "string", default: "20" },
    load: { type: "string", default: "0.8" },
    policies: { type: "string", default: "smart,least_connections,round_robin" },
  },
});
const SECONDS = Number(values.seconds);
const LOAD = Number(values.load);

const AGENTS = [
  { name: "fast", tps: 600, models: ["llama3.2", "qwen3:8b"] },
  { name: "medium", tps: 300, models: ["llama3.2"] },
  { name: "slow", tps: 100, models: ["llama3.2", "qwen3:8b"] },
];
const PARALLEL = 2;
const MEAN_TOKENS = 110; // answers of 20 to 200 tokens

/** mulberry32: the same workload for every policy. */
function rng(seed: number) {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface Job {
  at: number;
  model: string;
  tokens: number;
  prompt: string;
}

function workload(): Job[] {
  const r = rng(42);
  const capacityTokens = AGENTS.reduce((s, a) => s + a.tps * PARALLEL, 0);
  const rate = (LOAD * capacityTokens) / MEAN_TOKENS; // requests per second
  const jobs: Job[] = [];
  for (let t = 0; t < SECONDS * 1000;) {
    t += (-Math.log(1 - r()) / rate) * 1000;
    jobs.push({
      at: t,
      model: r() < 0.7 ? "llama3.2" : "qwen3:8b",
      tokens: 20 + Math.floor(r() * 181),
      prompt: "word ".repeat(5 + Math.floor(r() * 400)),
    });
  }
  return jobs;
}

function pct(xs: number[], p: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(s.length * p))];
}

async function run(policy: string, jobs: Job[]) {
  const dir = await Deno.makeTempDir();
  const co = await spawnCoordinator({
    DATABASE_URL: `sqlite://${dir}/c.db`,
    SCHEDULER_POLICY: policy,
    AGENT_HEARTBEAT_INTERVAL: "1",
    QUEUE_MAX_LENGTH: "10000",
    QUEUE_TIMEOUT: "120",
    LOG_LEVEL: "error",
  });
  const agents = AGENTS.map((a) =>
    spawnAgent(co.url, a.name, freePort(), {
      SIM_MODELS: a.models.join(","),
      SIM_TPS: String(a.tps),
      SIM_TTFT_MS: "20",
      SIM_LOAD_MS: "300",
      OLLAMA_NUM_PARALLEL: String(PARALLEL),
    })
  );
  const cookie = await adminCookie(co.url);
  for (let i = 0; i < 300; i++) {
    const list = await (await fetch(`${co.url}/api/agents`, { headers: { cookie } })).json();
    if (
      list.length === AGENTS.length && list.every((a: { status: string }) => a.status === "online")
    ) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  const latencies: number[] = [];
  const ttfts: number[] = [];
  let tokens = 0;
  let failures = 0;
  const t0 = performance.now();
  await Promise.all(jobs.map(async (job) => {
    const wait = t0 + job.at - performance.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    const start = performance.now();
    try {
      const res = await fetch(`${co.url}/api/chat`, {
        method: "POST",
        body: JSON.stringify({
          model: job.model,
          messages: [{ role: "user", content: job.prompt }],
          options: { num_predict: job.tokens },
          keep_alive: "10s",
        }),
      });
      let first = 0;
      let text = "";
      const decoder = new TextDecoder();
      for await (const chunk of res.body!) {
        if (!first) first = performance.now();
        text += decoder.decode(chunk, { stream: true });
      }
      const last = JSON.parse(text.trim().split("\n").at(-1)!);
      if (!res.ok || last.error || !last.done) {
        failures++;
        return;
      }
      latencies.push(performance.now() - start);
      ttfts.push(first - start);
      tokens += last.eval_count ?? 0;
    } catch {
      failures++;
    }
  }));
  const wall = (performance.now() - t0) / 1000;
  await Promise.all(agents.map((a) => a.stop()));
  await co.stop();
  await Deno.remove(dir, { recursive: true });
  return {
    policy,
    requests: latencies.length,
    failures,
    p50: median(latencies),
    p95: pct(latencies, 0.95),
    ttft95: pct(ttfts, 0.95),
    throughput: tokens / wall,
  };
}

const jobs = workload();
console.log(
  `Load balancing: ${jobs.length} requests over ${SECONDS} s (Poisson, ${
    LOAD * 100
  }% of capacity), ` +
    `agents at ${AGENTS.map((a) => a.tps).join("/")} tokens/s × ${PARALLEL} slots`,
);
console.log("| policy | ok | failed | latency p50 (ms) | p95 (ms) | TTFT p95 (ms) | tokens/s |");
console.log("| --- | --- | --- | --- | --- | --- | --- |");
const rows: Record<string, Awaited<ReturnType<typeof run>>> = {};
for (const policy of values.policies!.split(",")) {
  const r = await run(policy, jobs);
  rows[policy] = r;
  console.log(
    `| ${r.policy} | ${r.requests} | ${r.failures} | ${fmt(r.p50, 0)} | ${fmt(r.p95, 0)} | ${
      fmt(r.ttft95, 0)
    } | ${fmt(r.throughput, 0)} |`,
  );
}
const s = rows.smart;
if (s && rows.round_robin && rows.least_connections) {
  console.log(
    `smart p95 = ${fmt(s.p95 / rows.round_robin.p95)}× round robin's (aim ≤ 0.6), ` +
      `${fmt(s.p95 / rows.least_connections.p95)}× least connections' (aim ≤ 0.8)`,
  );
}
