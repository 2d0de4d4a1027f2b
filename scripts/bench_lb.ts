/**
 * `deno task bench:lb`: the scheduling policies under the same open-loop workload.
 * A heterogeneous fleet of real agents supervising simulated Ollamas — 60, 30 and 10 tokens/s,
 * 2 slots each, two models each installed on a subset, 3 s to load a model — with time compressed
 * tenfold (600/300/100 tokens/s, 0.3 s loads), and Poisson arrivals near 80 % of the fleet's
 * capacity with mixed prompt and answer lengths (seeded, identical for every policy). Prints p50
 * and p95 end-to-end latency, p95 time to first token, throughput and failures per policy.
 * Loopback only; asserts nothing.
 *
 * `--coordinators N` (N > 1) runs each policy twice on one throwaway PostgreSQL behind nginx
 * (round robin): through one coordinator, then through N sharing the database, with the agents
 * given every coordinator's URL. The rows compare what splitting the traffic over coordinators
 * costs the scheduling (aim for smart: p95 within 1.2× of one coordinator's).
 */
import { parseArgs } from "node:util";
import {
  adminCookie,
  type Child,
  freePort,
  spawnAgent,
  spawnCoordinator,
} from "../coordinator/testing/process.ts";
import { fmt, median } from "./bench/procs.ts";
import { startNginx } from "../coordinator/testing/nginx.ts";
import { startPostgres, type TestPostgres } from "../coordinator/testing/postgres.ts";

const { values } = parseArgs({
  options: {
    seconds: { type: "string", default: "20" },
    load: { type: "string", default: "0.8" },
    policies: { type: "string", default: "smart,least_connections,round_robin" },
    coordinators: { type: "string", default: "1" },
  },
});
const SECONDS = Number(values.seconds);
const LOAD = Number(values.load);
const COORDINATORS = Math.max(1, Math.floor(Number(values.coordinators)));

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

/** Where the workload goes: one coordinator on SQLite, or `count` on PostgreSQL behind nginx. */
interface Setup {
  count: number;
  postgres?: TestPostgres;
}

let databases = 0;

async function run(policy: string, jobs: Job[], setup: Setup = { count: 1 }) {
  const dir = await Deno.makeTempDir();
  const databaseUrl = setup.postgres
    ? await setup.postgres.createDatabase(`bench_lb_${++databases}`)
    : `sqlite://${dir}/c.db`;
  const coordinators: Child[] = [];
  for (let i = 0; i < setup.count; i++) {
    coordinators.push(
      await spawnCoordinator({
        DATABASE_URL: databaseUrl,
        SCHEDULER_POLICY: policy,
        AGENT_HEARTBEAT_INTERVAL: "1",
        QUEUE_MAX_LENGTH: "10000",
        QUEUE_TIMEOUT: "120",
        LOG_LEVEL: "error",
      }),
    );
  }
  const nginx = setup.postgres ? await startNginx(coordinators.map((c) => c.port)) : undefined;
  if (setup.postgres && !nginx) throw new Error("Cannot run through nginx: it is not installed");
  const url = nginx?.url ?? coordinators[0].url;
  const agents = AGENTS.map((a) =>
    spawnAgent(coordinators.map((c) => c.url).join(","), a.name, freePort(), {
      SIM_MODELS: a.models.join(","),
      SIM_TPS: String(a.tps),
      SIM_TTFT_MS: "20",
      SIM_LOAD_MS: "300",
      OLLAMA_NUM_PARALLEL: String(PARALLEL),
    })
  );
  // Every coordinator must see every agent online before the clock starts.
  for (const co of coordinators) {
    const cookie = await adminCookie(co.url);
    for (let i = 0; i < 300; i++) {
      const list = await (await fetch(`${co.url}/api/agents`, { headers: { cookie } })).json();
      if (
        list.length === AGENTS.length &&
        list.every((a: { status: string }) => a.status === "online")
      ) break;
      await new Promise((r) => setTimeout(r, 100));
    }
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
      const res = await fetch(`${url}/api/chat`, {
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
  await nginx?.stop();
  await Promise.all(coordinators.map((c) => c.stop()));
  await Deno.remove(dir, { recursive: true });
  return {
    policy: setup.postgres ? `${policy} (${setup.count} on PostgreSQL via nginx)` : policy,
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
type Result = Awaited<ReturnType<typeof run>>;
const printRow = (r: Result) =>
  console.log(
    `| ${r.policy} | ${r.requests} | ${r.failures} | ${fmt(r.p50, 0)} | ${fmt(r.p95, 0)} | ${
      fmt(r.ttft95, 0)
    } | ${fmt(r.throughput, 0)} |`,
  );
const rows: Record<string, Result> = {};
if (COORDINATORS === 1) {
  for (const policy of values.policies!.split(",")) {
    const r = await run(policy, jobs);
    rows[policy] = r;
    printRow(r);
  }
  const s = rows.smart;
  if (s && rows.round_robin && rows.least_connections) {
    console.log(
      `smart p95 = ${fmt(s.p95 / rows.round_robin.p95)}× round robin's (aim ≤ 0.6), ` +
        `${fmt(s.p95 / rows.least_connections.p95)}× least connections' (aim ≤ 0.8)`,
    );
  }
} else {
  const postgres = await startPostgres();
  try {
    const ratios: string[] = [];
    for (const policy of values.policies!.split(",")) {
      const one = await run(policy, jobs, { count: 1, postgres });
      printRow(one);
      const many = await run(policy, jobs, { count: COORDINATORS, postgres });
      printRow(many);
      ratios.push(
        `${policy} p95 through ${COORDINATORS} coordinators = ${fmt(many.p95 / one.p95)}× ` +
          `one coordinator's${policy === "smart" ? " (aim ≤ 1.2)" : ""}`,
      );
    }
    for (const line of ratios) console.log(line);
  } finally {
    await postgres.stop();
  }
}
