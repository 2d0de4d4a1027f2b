/**
 * `deno task bench:log`: does PostgreSQL keep up with the request log at the benchmark's c=32
 * rate? One coordinator on a throwaway PostgreSQL (as the tests start it, with synchronous
 * commit on for its database), the bench's prepared-bytes upstream registered as one agent with
 * 512 slots, and `wrk -t1 -c32` posting the bench's small chat for `--seconds`. Every second it
 * reads from the coordinator's `/metrics` how many requests it answered (counted when the row is
 * handed to the request log) and how many rows wait in its write-behind buffer, and counts the
 * rows in PostgreSQL. Flat after warm-up means the database keeps up; growing means the buffer
 * would fill and drop rows (the dropped count is printed too). Asserts nothing.
 *
 * Usage: deno task bench:log [--seconds 30] [--warmup 5]
 */
import { parseArgs } from "node:util";
import { TEST_AGENT_TOKEN } from "../coordinator/config.ts";
import { spawnCoordinator } from "../coordinator/testing/process.ts";
import { startPostgres } from "../coordinator/testing/postgres.ts";
import { openPostgresStore } from "../coordinator/store/postgres/store.ts";
import { serveUpstream } from "./bench/upstream.ts";
import { SMALL_CHAT as SMALL, which, wrk } from "./bench/wrk.ts";
import { cpuSeconds, fmt, treeCpuSeconds } from "./bench/procs.ts";

const { values } = parseArgs({
  options: {
    seconds: { type: "string", default: "30" },
    warmup: { type: "string", default: "5" },
  },
});
const SECONDS = Number(values.seconds);
const WARMUP = Number(values.warmup);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

if (!which("wrk")) {
  console.log("wrk not found: apt-get install -y wrk");
  Deno.exit(1);
}
const upstream = serveUpstream(0);
const postgres = await startPostgres();
const url = await postgres.createDatabase("bench_log");
await postgres.psql("ALTER DATABASE bench_log SET synchronous_commit = on");
const co = await spawnCoordinator({ DATABASE_URL: url, LOG_LEVEL: "info", METRICS_PUBLIC: "true" });
const store = await openPostgresStore(url, { max: 1 });
let heartbeats: ReturnType<typeof setInterval> | undefined;

try {
  const tags = await (await fetch(`http://127.0.0.1:${upstream.addr.port}/api/tags`)).json();
  const reg = await fetch(`${co.url}/api/agents`, {
    method: "POST",
    headers: { authorization: `Bearer ${TEST_AGENT_TOKEN}` },
    body: JSON.stringify({
      machine_name: "bench",
      ip_address: "127.0.0.1",
      ollama_port: upstream.addr.port,
      ollama_version: "0.12.6",
      parallel: 512,
      models: tags.models,
    }),
  });
  if (!reg.ok) throw new Error(`Cannot register the upstream: ${await reg.text()}`);
  const { agent_id, agent_secret } = await reg.json();
  // Heartbeats keep it online past AGENT_TIMEOUT: without them the last seconds of a long run
  // were fast 503s ("no agent online"), counted as answered requests.
  heartbeats = setInterval(() => {
    fetch(`${co.url}/api/health`, {
      method: "POST",
      headers: { authorization: `Bearer ${agent_secret}` },
      body: JSON.stringify({ agent_id, cpu_usage: 1, memory_usage: 1, active_requests: 0 }),
    }).then((r) => r.body?.cancel(), () => {});
  }, 5000);

  /** From /metrics: requests answered (and handed to the request log), rows buffered, dropped. */
  const metrics = async () => {
    const text = await (await fetch(`${co.url}/metrics`)).text();
    let answered = 0;
    for (const m of text.matchAll(/^ollama_coordinator_requests_total\{[^}]*\} (\d+)/gm)) {
      answered += Number(m[1]);
    }
    const value = (name: string) =>
      Number(new RegExp(`^ollama_coordinator_${name}(?:\\{[^}]*\\})? (\\S+)`, "m").exec(text)?.[1]);
    return {
      answered,
      buffered: value("request_log_buffered_rows"),
      dropped: value("request_log_dropped_rows_total"),
    };
  };
  const rows = async () => (await store.counts()).requests;

  const [load1] = Deno.loadavg();
  console.log(
    `Request log into PostgreSQL at c=32: ${WARMUP} s warm-up, then ${SECONDS} s measured; ` +
      `load average ${load1.toFixed(2)} on ${navigator.hardwareConcurrency} CPUs`,
  );
  const total = WARMUP + SECONDS;
  const load = wrk(`${co.url}/api/chat`, { connections: 32, seconds: total, body: SMALL });
  const samples: { t: number; answered: number; buffered: number; rows: number }[] = [];
  const t0 = performance.now();
  const cpuNow = () => ({
    at: performance.now(),
    co: cpuSeconds(co.process.pid),
    pg: treeCpuSeconds(postgres.pid!),
  });
  let cpuAtWarm = cpuNow();
  for (let s = 1; s <= total; s++) {
    await sleep(t0 + s * 1000 - performance.now());
    const [m, r] = await Promise.all([metrics(), rows()]);
    samples.push({ t: s, answered: m.answered, buffered: m.buffered, rows: r });
    if (s === WARMUP) cpuAtWarm = cpuNow();
  }
  const cpuEnd = cpuNow();
  const result = await load;
  // Let the coordinator write what it buffered, then count once more.
  await sleep(1500);
  const [final, finalRows] = await Promise.all([metrics(), rows()]);

  console.log(
    "\n| s | answered | buffered (/metrics) | rows in PostgreSQL | answered − rows (buffered or being written) |",
  );
  console.log("| --- | --- | --- | --- | --- |");
  for (const x of samples) {
    console.log(
      `| ${x.t} | ${x.answered} | ${x.buffered} | ${x.rows} | ${x.answered - x.rows} |`,
    );
  }
  const measured = samples.filter((x) => x.t > WARMUP);
  const lag = measured.map((x) => x.buffered);
  const third = Math.max(1, Math.floor(lag.length / 3));
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
  const first = measured[0];
  const last = measured.at(-1)!;
  const span = last.t - first.t || 1;
  console.log(
    `\nwrk: ${fmt(result.rps, 0)} req/s at c=32 (p50 ${fmt(result.p50, 2)} ms, p99 ${
      fmt(result.p99, 2)
    } ms, ${result.errors} errors)`,
  );
  console.log(
    `after warm-up: ${fmt((last.answered - first.answered) / span, 0)} requests/s answered, ` +
      `${
        fmt((last.rows - first.rows) / span, 0)
      } rows/s written; buffered rows (/metrics): first third ` +
      `mean ${fmt(mean(lag.slice(0, third)), 0)}, last third mean ${
        fmt(mean(lag.slice(-third)), 0)
      }, max ${Math.max(...lag)}`,
  );
  const wall = (cpuEnd.at - cpuAtWarm.at) / 1000;
  console.log(
    `CPU after warm-up: coordinator ${fmt(((cpuEnd.co - cpuAtWarm.co) / wall) * 100, 0)}%, ` +
      `PostgreSQL ${fmt(((cpuEnd.pg - cpuAtWarm.pg) / wall) * 100, 0)}% of one core`,
  );
  console.log(
    `after the load: ${final.answered} answered, ${finalRows} rows in PostgreSQL ` +
      `(${final.answered - finalRows} missing), ${final.dropped} dropped`,
  );
} finally {
  clearInterval(heartbeats);
  await store.close();
  await co.stop();
  await postgres.stop();
  await upstream.shutdown();
}
