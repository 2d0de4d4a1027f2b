/**
 * `deno task bench`: what the coordinator costs per request, run the way users run it, beside
 * the same requests sent directly, through nginx and through a bare Deno pass-through. All on
 * loopback, on one machine; prints medians of several runs and asserts nothing.
 *
 * The rows (every proxy in front of the same upstream):
 * - direct: scripts/bench/upstream.ts, an Ollama-like server that answers from prepared bytes (8
 *   tokens at once for a small chat, one NDJSON line per token for a stream), in `--upstreams`
 *   processes sharing its port (one per CPU by default). Its c=32 rate must be at least 2×
 *   nginx's, or the upstream, not the proxies, limits every row; the bench prints this headroom.
 * - nginx: Debian's, one worker, `least_conn`, keepalive, buffering off: the reference.
 * - deno pass-through: scripts/bench/passthrough.ts, `Deno.serve` plus the coordinator's upstream
 *   client and nothing else: the floor of this runtime. Coordinator minus pass-through is what the
 *   coordinator's own work costs.
 * - coordinator (file db): `coordinator/main.ts` as `deno task coordinator` runs it, with default
 *   settings and its database a file in a temporary folder. It logs a line per request at the
 *   default level (stdout goes to /dev/null). Only AUTO_REGISTER_LOCAL_OLLAMA=false (so a stray
 *   server on :11434 cannot join), AGENT_TOKEN and ADMIN_PASSWORD are set. The upstream is
 *   registered as one agent with 512 parallel slots.
 * - coordinator (memory db): the same on `sqlite::memory:`, only as a comparison: the difference
 *   to the file row is what the disk costs.
 *
 * Each run measures every row (the order rotates from run to run), each phase `--duration` long:
 * - c=1: `wrk -t1 -c1 --latency` posting a small non-streaming chat: p50 and p99;
 * - c=32: `wrk -t1 -c32 --latency`, the same chat: requests per second, p50 and p99;
 * - 200 streams: 200 concurrent streaming chats of 400 tokens, each started again when it ends;
 *   NDJSON lines per second counted by this process (the same client for every row, so the rows
 *   compare; the direct row is lower because its chunks arrive one line at a time).
 * For every proxy row, the CPU time per request at c=1 and c=32: the proxy's process (all its
 * threads, nginx's worker included) over the phase, divided by the requests wrk completed. It
 * moves less than req/s when the machine is shared, and coordinator minus pass-through is the
 * coordinator's own work in µs.
 * For the coordinator rows and the pass-through, the event loop's delay inside the process during
 * each phase (p50, p99, max): how late its 10 ms sampling timer fired, i.e. how long a request
 * could wait for work not its own, such as a synchronous database write. Read from /metrics before
 * and after each phase; an idle loop shows about 0.1–0.3 ms (timer granularity), and time the
 * process waited for a CPU counts too, so a busy machine inflates it. The pass-through's delay is
 * the floor: a saturated loop runs the turns of many requests back to back, so the timer waits
 * for them even with nothing else to do.
 *
 * Before the runs every proxy row is warmed up: `--warmup` seconds of c=32 load in 2 s windows
 * (rounded up to whole windows; the CPU time per request of the first and last is printed), then
 * one short pass of every phase. A Deno process's JIT compiles its hot paths in background
 * threads, which get little CPU while the load keeps both cores busy: here the coordinator's
 * first 2 s of c=32 cost 234–328 µs of CPU per request, most of the fall to 125–135 came within
 * 4–6 s, and V8 went on optimizing for 15–20 s (`--trace-opt`); the pass-through settles within
 * 4 s (less code). A coordinator that has run a while is warm, so the runs measure it warm; the
 * first window shows what a cold one costs.
 *
 * Each row also gets `--rewarm` (8) s of c=32 right before its turn in every run. Between its
 * turns a row idles about a minute while the others are measured, and the collections of V8's
 * memory reducer then throw away optimized code: with `--trace-deopt`, about 340 functions (ours
 * and Deno's serving code) were marked for deoptimization ("embedded weak objects cleared": the
 * short-lived objects they were specialized to had all died) and were optimized again over the
 * next ~6 s of load (`--trace-opt`), the first 2 s costing about twice the CPU per request. With
 * `--v8-flags=--no-memory-reducer` none was, but the idle process kept 200–270 MB instead of
 * 115–125. The runs measure a coordinator under load; the median of the first re-warm window is
 * printed as what the first seconds after an idle minute cost.
 *
 * wrk is a C client with one thread: a fetch loop in Deno costs as much per request as the
 * servers it would measure. The machine's load average is printed first: on a shared machine,
 * compare rows of the same run rather than figures across days.
 *
 * Usage: deno task bench [--runs 5] [--duration 5] [--warmup 20] [--rewarm 8] [--upstreams CPUS]
 */
import { parseArgs } from "node:util";
import {
  adminCookie,
  type Child,
  freePort,
  registerSim,
  spawnCoordinator,
} from "../coordinator/testing/process.ts";
import { type LoopDelay, withLoopDelay } from "./bench/loop_delay.ts";
import { startNginx } from "./bench/nginx.ts";
import {
  fmt,
  median,
  rssBytes,
  spawnScript,
  spawnUpstream,
  treeCpuSeconds,
} from "./bench/procs.ts";
import { SMALL_CHAT as SMALL, which, wrk } from "./bench/wrk.ts";

const { values } = parseArgs({
  options: {
    runs: { type: "string", default: "5" },
    duration: { type: "string", default: "5" },
    warmup: { type: "string", default: "20" },
    rewarm: { type: "string", default: "8" },
    upstreams: { type: "string", default: String(navigator.hardwareConcurrency) },
    help: { type: "boolean", short: "h" },
  },
});
if (values.help) {
  console.log(
    "Usage: deno task bench [--runs N] [--duration SECONDS] [--warmup SECONDS] [--rewarm SECONDS]" +
      " [--upstreams N]",
  );
  Deno.exit(0);
}
const RUNS = Number(values.runs);
const DURATION = Number(values.duration);
const WARMUP = Number(values.warmup);
const REWARM = Number(values.rewarm);
const UPSTREAMS = Number(values.upstreams);
const STREAMS = 200;
/** Seconds of the short pass of every phase after the warm-up (c=1 and streams run other code). */
const PRIMER = 2;
/** Seconds per warm-up window. */
const WINDOW = 2;

const STREAM = JSON.stringify({
  model: "llama3.2",
  messages: [{ role: "user", content: "go" }],
  stream: true,
  options: { num_predict: 400 },
});

/** A coordinator as users run it, with the upstream registered; `databaseUrl` is the change. */
async function startCoordinator(databaseUrl: string, upstream: Child) {
  const child = await spawnCoordinator({ DATABASE_URL: databaseUrl, LOG_LEVEL: "info" });
  await registerSim(child.url, "bench", upstream, 512, { keepAlive: true });
  return { child, cookie: await adminCookie(child.url) };
}

/** NDJSON lines per second over `STREAMS` concurrent streams, restarted for `seconds`. */
async function streamRate(url: string, seconds: number): Promise<number> {
  const started = performance.now();
  const deadline = started + seconds * 1000;
  let lines = 0;
  let failed = 0;
  await Promise.all(Array.from({ length: STREAMS }, async () => {
    while (performance.now() < deadline) {
      try {
        const res = await fetch(`${url}/api/chat`, {
          method: "POST",
          body: STREAM,
          headers: { "content-type": "application/json" },
        });
        if (!res.ok) failed++;
        for await (const chunk of res.body!) {
          for (const b of chunk) if (b === 10) lines++;
        }
      } catch {
        failed++;
      }
    }
  }));
  if (failed) console.log(`  (${failed} streams failed at ${url})`);
  return lines / ((performance.now() - started) / 1000);
}

type Phase = "c1" | "c32" | "streams";
interface Row {
  name: string;
  url: string;
  /** Where its event-loop delay is read (the coordinators and the pass-through sample theirs). */
  loop?: { url: string; cookie: string };
  /** The proxy's process, whose CPU time per request is measured. */
  pid?: number;
}
interface Sample {
  /** CPU µs per request at c=1 and c=32 (NaN for a row without a process to read). */
  c1cpu: number;
  c32cpu: number;
  c1p50: number;
  c1p99: number;
  rps: number;
  c32p50: number;
  c32p99: number;
  tokens: number;
  delay: Partial<Record<Phase, LoopDelay>>;
}

/**
 * c=32 load on `url` for `seconds`, rounded up to windows of {@linkcode WINDOW} s: the CPU µs per
 * request of process `pid` in each window.
 */
async function warmUp(url: string, pid: number, seconds: number): Promise<number[]> {
  const windows: number[] = [];
  for (let elapsed = 0; elapsed < seconds; elapsed += WINDOW) {
    const cpu0 = treeCpuSeconds(pid);
    const r = await wrk(`${url}/api/chat`, { connections: 32, seconds: WINDOW, body: SMALL });
    windows.push(((treeCpuSeconds(pid) - cpu0) / r.requests) * 1e6);
  }
  return windows;
}

/** One run of the three phases against a row. */
async function measure(row: Row, seconds: number): Promise<Sample> {
  const load = async (connections: number) => {
    const cpu0 = row.pid ? treeCpuSeconds(row.pid) : NaN;
    const r = await wrk(`${row.url}/api/chat`, { connections, seconds, body: SMALL });
    const cpu = row.pid ? ((treeCpuSeconds(row.pid) - cpu0) / r.requests) * 1e6 : NaN;
    if (r.errors) console.log(`  (wrk saw ${r.errors} errors at ${row.name}, c=${connections})`);
    return { ...r, cpu };
  };
  const c1 = await withLoopDelay(row.loop, () => load(1));
  const c32 = await withLoopDelay(row.loop, () => load(32));
  const streams = await withLoopDelay(row.loop, () => streamRate(row.url, seconds));
  return {
    c1cpu: c1.result.cpu,
    c32cpu: c32.result.cpu,
    c1p50: c1.result.p50,
    c1p99: c1.result.p99,
    rps: c32.result.rps,
    c32p50: c32.result.p50,
    c32p99: c32.result.p99,
    tokens: streams.result,
    delay: { c1: c1.delay, c32: c32.delay, streams: streams.delay },
  };
}

if (!which("wrk")) {
  console.log("wrk not found: apt-get install -y wrk nginx (every latency and req/s is n/a)");
}
const upstream = await spawnUpstream(UPSTREAMS);
const floorPort = freePort();
const floor = await spawnScript(
  "./passthrough.ts",
  [upstream.url, String(floorPort)],
  floorPort,
);
const nginx = await startNginx(upstream.port);
if (!nginx) console.log("nginx not found: apt-get install -y nginx for the nginx row");
const dbDir = await Deno.makeTempDir({ prefix: "bench-coordinator-" });
const fileDb = await startCoordinator(`sqlite://${dbDir}/coordinator.db`, upstream);
const memoryDb = await startCoordinator("sqlite::memory:", upstream);

const FILE = "coordinator (file db)";
const MEMORY = "coordinator (memory db)";
const rows: Row[] = [
  { name: "direct", url: upstream.url },
  ...(nginx ? [{ name: "nginx", url: nginx.url, pid: nginx.pid }] : []),
  {
    name: "deno pass-through",
    url: floor.url,
    loop: { url: floor.url, cookie: "" },
    pid: floor.process.pid,
  },
  {
    name: FILE,
    url: fileDb.child.url,
    loop: { url: fileDb.child.url, ...fileDb },
    pid: fileDb.child.process.pid,
  },
  {
    name: MEMORY,
    url: memoryDb.child.url,
    loop: { url: memoryDb.child.url, ...memoryDb },
    pid: memoryDb.child.process.pid,
  },
];

const [load1] = Deno.loadavg();
console.log(
  `Ollama Coordinator benchmark: ${RUNS} runs of ${DURATION} s per phase, medians; loopback; ` +
    `load average ${load1.toFixed(2)} on ${navigator.hardwareConcurrency} CPUs before the runs`,
);
for (const row of rows) {
  if (!row.pid) continue;
  const windows = await warmUp(row.url, row.pid, WARMUP);
  if (windows.length > 1) {
    console.log(
      `warm-up at c=32, ${row.name}: ${fmt(windows[0], 0)} µs of CPU per request in the first ` +
        `${WINDOW} s, ${fmt(windows.at(-1)!, 0)} µs in the last (${
          windows.map((w) => fmt(w, 0)).join(", ")
        })`,
    );
  }
}
for (const row of rows) await measure(row, PRIMER);
const samples: Record<string, Sample[]> = Object.fromEntries(rows.map((r) => [r.name, []]));
/** Per row, the CPU µs per request of the first re-warm window of each run (after its pause). */
const afterPause: Record<string, number[]> = Object.fromEntries(rows.map((r) => [r.name, []]));
for (let run = 0; run < RUNS; run++) {
  // Rotating the order spreads a slow spell of a shared machine over every row.
  for (let i = 0; i < rows.length; i++) {
    const row = rows[(i + run) % rows.length];
    if (row.pid && REWARM > 0) {
      afterPause[row.name].push((await warmUp(row.url, row.pid, REWARM))[0]);
    }
    samples[row.name].push(await measure(row, DURATION));
  }
}

type Figure = Exclude<keyof Sample, "delay">;
const med = (name: string, k: Figure) => median(samples[name].map((s) => s[k]));
const medDelay = (name: string, phase: Phase, k: keyof LoopDelay) =>
  median(samples[name].map((s) => s.delay[phase]?.[k] ?? NaN));

console.log(
  `\n| path | c=1 p50 (ms) | c=1 p99 (ms) | c=32 req/s | c=32 p50 (ms) | c=32 p99 (ms) | ${STREAMS} streams, tokens/s |`,
);
console.log("| --- | --- | --- | --- | --- | --- | --- |");
for (const { name } of rows) {
  console.log(
    `| ${name} | ${fmt(med(name, "c1p50"), 3)} | ${fmt(med(name, "c1p99"), 3)} | ${
      fmt(med(name, "rps"), 0)
    } | ${fmt(med(name, "c32p50"), 2)} | ${fmt(med(name, "c32p99"), 2)} | ${
      fmt(med(name, "tokens"), 0)
    } |`,
  );
}

console.log(
  `\nEvent loop delay inside the process, ms (p50 / p99 / max; medians of the runs):\n`,
);
console.log(`| path | c=1 | c=32 | ${STREAMS} streams |`);
console.log("| --- | --- | --- | --- |");
for (const name of ["deno pass-through", FILE, MEMORY]) {
  const cell = (phase: Phase) =>
    (["p50", "p99", "max"] as const).map((k) => fmt(medDelay(name, phase, k), 2)).join(" / ");
  console.log(`| ${name} | ${cell("c1")} | ${cell("c32")} | ${cell("streams")} |`);
}

console.log(`\nCPU time per request, µs (the proxy's process, all its threads; medians):\n`);
console.log("| path | c=1 | c=32 |");
console.log("| --- | --- | --- |");
for (const { name, pid } of rows) {
  if (pid) {
    console.log(`| ${name} | ${fmt(med(name, "c1cpu"), 0)} | ${fmt(med(name, "c32cpu"), 0)} |`);
  }
}
if (REWARM > 0) {
  const cold = rows.filter((r) => r.pid).map((r) =>
    `${r.name} ${fmt(median(afterPause[r.name]), 0)}`
  );
  console.log(
    `\nThe first ${WINDOW} s of c=32 after each row's pause between its turns (about a minute ` +
      `idle), CPU µs per request (medians): ${cold.join(", ")}`,
  );
}

const ratio = (a: number, b: number) => `${fmt(a / b)}×`;
const plus = (a: number, b: number) => `${a >= b ? "+" : ""}${fmt(a - b, 3)} ms`;
const pass = "deno pass-through";
console.log("");
if (nginx) {
  const headroom = med("direct", "rps") / med("nginx", "rps");
  console.log(
    `upstream headroom: direct ${fmt(med("direct", "rps"), 0)} req/s at c=32 = ${
      fmt(headroom)
    }× nginx's${
      headroom < 2 ? " — UNDER 2×: the upstream, not the proxies, may limit the rows" : ""
    } (needs ≥ 2×)`,
  );
}
console.log(
  `${FILE} vs ${pass}: ${ratio(med(FILE, "rps"), med(pass, "rps"))} req/s at c=32 (aim ≥ 0.8), ` +
    `c=1 p50 ${plus(med(FILE, "c1p50"), med(pass, "c1p50"))} (aim ≤ +0.05), ` +
    `c=1 p99 ${plus(med(FILE, "c1p99"), med(pass, "c1p99"))} (aim ≤ +0.5)`,
);
if (nginx) {
  console.log(
    `${FILE} vs nginx: ${ratio(med(FILE, "rps"), med("nginx", "rps"))} req/s at c=32 ` +
      `(aim ≥ 0.5), ${ratio(med(FILE, "tokens"), med("nginx", "tokens"))} stream tokens/s ` +
      `(aim ≥ 0.8)`,
  );
  console.log(
    `${pass} vs nginx: ${ratio(med(pass, "rps"), med("nginx", "rps"))} req/s at c=32, ` +
      `${ratio(med(pass, "tokens"), med("nginx", "tokens"))} stream tokens/s`,
  );
}
console.log(
  `${FILE}'s own work over the ${pass}: ${
    fmt(med(FILE, "c32cpu") - med(pass, "c32cpu"), 0)
  } µs of CPU per request at c=32 (${ratio(med(FILE, "c32cpu"), med(pass, "c32cpu"))}), ${
    fmt(med(FILE, "c1cpu") - med(pass, "c1cpu"), 0)
  } µs at c=1`,
);
console.log(
  `${FILE} vs ${MEMORY}: ${ratio(med(FILE, "rps"), med(MEMORY, "rps"))} req/s at c=32, ` +
    `c=1 p99 ${plus(med(FILE, "c1p99"), med(MEMORY, "c1p99"))}`,
);
console.log(
  `event loop delay of the ${FILE} at c=32: p99 ${fmt(medDelay(FILE, "c32", "p99"), 2)} ms ` +
    `(aim ≤ 2), max ${fmt(medDelay(FILE, "c32", "max"), 2)} ms (aim ≤ 10); the ${pass}'s ` +
    `(the floor): p99 ${fmt(medDelay(pass, "c32", "p99"), 2)} ms, max ${
      fmt(medDelay(pass, "c32", "max"), 2)
    } ms`,
);
console.log(
  `resident memory after the runs: ${FILE} ${
    fmt(rssBytes(fileDb.child.process.pid) / 1e6, 1)
  } MB, ${MEMORY} ${fmt(rssBytes(memoryDb.child.process.pid) / 1e6, 1)} MB`,
);

await nginx?.stop();
await floor.stop();
await fileDb.child.stop();
await memoryDb.child.stop();
await upstream.stop();
await Deno.remove(dbDir, { recursive: true });
