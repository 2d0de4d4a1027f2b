/**
 * `deno task bench:scale`: the coordinator at fleet scale, on loopback.
 * 1. 1,000 simulated agents heartbeating every 5 s: the coordinator's CPU share and memory.
 * 2. The time one scheduling decision takes with 1,000 agents (in process).
 * 3. 2,000 concurrent slow streams: resident memory per stream, beside the same streams held by a
 *    bare Deno pass-through to the same simulator and by a bare `Deno.serve` with no upstream.
 * 4. (cluster) The same 1,000 agents spread over two coordinators sharing one PostgreSQL (a
 *    throwaway server, as the tests start): each coordinator's CPU share and PostgreSQL's own
 *    (every postgres process's CPU time from /proc, the server's exited backends included).
 * Prints figures; asserts nothing. Aims: < 5% of one core, < 50 µs, < 150 MB with 2,000 streams;
 * in the cluster, < 10% of one core per coordinator.
 * `--only heartbeats,decisions` runs some parts; `--runs 5` measures parts 1 and 4 in five windows
 * in a row and prints their median (the machine may be busy with other work: one window can
 * mislead); `--prompt-bytes 2000` gives part 3's requests a longer prompt.
 */
import { parseArgs } from "node:util";
import {
  freePort,
  registerSim,
  spawnCoordinator,
  spawnSimulator,
  waitUntilUp,
} from "../coordinator/testing/process.ts";
import { openStore } from "../coordinator/store/open.ts";
import { EventLog } from "../coordinator/telemetry/event_log.ts";
import { Registry } from "../coordinator/fleet/registry.ts";
import { Scheduler } from "../coordinator/scheduler/mod.ts";
import { cpuSeconds, fmt, median, rssBytes, treeCpuSeconds } from "./bench/procs.ts";
import { startPostgres } from "../coordinator/testing/postgres.ts";
import { TEST_AGENT_TOKEN } from "../coordinator/config.ts";

const { values } = parseArgs({
  options: {
    agents: { type: "string", default: "1000" },
    streams: { type: "string", default: "2000" },
    seconds: { type: "string", default: "30" },
    // Heartbeat measuring windows, one after the other on the same fleet (median reported).
    runs: { type: "string", default: "1" },
    // The prompt of each stream's request, in bytes (a chat's history makes real ones longer).
    "prompt-bytes": { type: "string", default: "4" },
    // Parts to run, comma-separated: heartbeats, decisions, streams, cluster (all by default).
    only: { type: "string", default: "heartbeats,decisions,streams,cluster" },
  },
});
const ONLY = new Set(values.only.split(",").map((p) => p.trim()));
for (const part of ONLY) {
  if (!["heartbeats", "decisions", "streams", "cluster"].includes(part)) {
    throw new RangeError(
      `Cannot run part "${part}": known parts are heartbeats, decisions, streams, cluster`,
    );
  }
}
const AGENTS = Number(values.agents);
const STREAMS = Number(values.streams);
const SECONDS = Number(values.seconds);
const RUNS = Math.max(1, Math.floor(Number(values.runs)));
const PROMPT = "x".repeat(Math.max(0, Math.floor(Number(values["prompt-bytes"]))));
const MODELS = [
  "llama3.2:latest",
  "qwen3:8b",
  "mistral:7b",
  "gemma3:4b",
  "nomic-embed-text:latest",
];
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Registers `AGENTS` agents spread over `urls` (agent i with coordinator i mod n) and returns
 * the loop that makes each heartbeat every 5 s to its coordinator, spread evenly.
 */
async function fleet(urls: string[], simPort: number) {
  const models = MODELS.map((name, i) => ({ name, size: (i + 1) * 1e9, digest: `sha256:${i}` }));
  const ids: string[] = [];
  const secrets: string[] = [];
  const beats: number[] = [];
  const home = (i: number) => urls[i % urls.length];
  for (let i = 0; i < AGENTS; i++) {
    const res = await fetch(`${home(i)}/api/agents`, {
      method: "POST",
      headers: { authorization: `Bearer ${TEST_AGENT_TOKEN}` },
      body: JSON.stringify({
        machine_name: `node-${i}`,
        ip_address: "127.0.0.1",
        ollama_port: simPort,
        ollama_version: "0.12.6",
        parallel: 4,
        models,
      }),
    });
    const { agent_id, agent_secret } = await res.json();
    ids.push(agent_id);
    secrets.push(agent_secret);
  }
  const beat = (id: string, i: number) =>
    fetch(`${home(i)}/api/health`, {
      method: "POST",
      headers: { authorization: `Bearer ${secrets[i]}` },
      body: JSON.stringify({
        agent_id: id,
        cpu_usage: (i * 7) % 100,
        memory_usage: 40,
        active_requests: 0,
        memory_used: 8e9,
        memory_total: 16e9,
        gpus: [{
          name: "RTX 4090",
          utilization: 30,
          memory_used: 4e9,
          memory_total: 24e9,
          temperature: 60,
        }],
        // Like the agent: unchanged model lists ride along only on every twelfth heartbeat.
        ...((beats[i] = (beats[i] ?? 0) + 1) % 12 === 1
          ? { models, loaded_models: [{ name: MODELS[i % 5], size_vram: 4e9 }] }
          : {}),
      }),
    }).then((r) => r.body?.cancel());
  // Warm up one round, then measure: each agent beats every 5 s, spread evenly. The beating goes
  // on without a break through the windows; `measure` runs at the end of each.
  await Promise.all(ids.map(beat));
  return async (measure: (window: { wall: number; heartbeats: number }) => void) => {
    const t0 = performance.now();
    const interval = 5000 / AGENTS;
    let sent = 0;
    for (let run = 0; run < RUNS; run++) {
      const start = performance.now();
      const sent0 = sent;
      const until = t0 + (run + 1) * SECONDS * 1000;
      while (performance.now() < until) {
        const i = sent % AGENTS;
        void beat(ids[i], i);
        sent++;
        const due = t0 + sent * interval;
        const wait = due - performance.now();
        if (wait > 1) await sleep(wait);
      }
      if (run === RUNS - 1) await sleep(200);
      measure({ wall: (performance.now() - start) / 1000, heartbeats: sent - sent0 });
    }
  };
}

async function heartbeats() {
  const sim = await spawnSimulator(["--models", MODELS.join(",")]);
  const co = await spawnCoordinator({
    DATABASE_URL: "sqlite::memory:",
    LOG_LEVEL: "error",
    HEALTH_CHECK_INTERVAL: Deno.env.get("HCI") ?? "5",
  });
  const beat = await fleet([co.url], sim.port);
  const shares: number[] = [];
  let cpu0 = cpuSeconds(co.process.pid);
  await beat(({ wall, heartbeats }) => {
    const cpu = cpuSeconds(co.process.pid);
    shares.push(((cpu - cpu0) / wall) * 100);
    cpu0 = cpu;
    console.log(
      `1. ${AGENTS} agents heartbeating every 5 s for ${
        fmt(wall, 0)
      } s (${heartbeats} heartbeats, probes included):`,
    );
    console.log(
      `   coordinator CPU ${fmt(shares.at(-1)!, 1)}% of one core, resident ${
        fmt(rssBytes(co.process.pid) / 1e6, 1)
      } MB`,
    );
  });
  if (RUNS > 1) {
    console.log(
      `   median of ${RUNS} windows: ${fmt(median(shares), 1)}% of one core (${
        shares.map((x) => fmt(x, 1)).join(", ")
      })`,
    );
  }
  await co.stop();
  await sim.stop();
}

/** Part 4: the fleet of part 1 over two coordinators on one PostgreSQL. */
async function cluster() {
  const postgres = await startPostgres();
  const sim = await spawnSimulator(["--models", MODELS.join(",")]);
  const url = await postgres.createDatabase("bench_scale");
  const env = {
    DATABASE_URL: url,
    LOG_LEVEL: "error",
    HEALTH_CHECK_INTERVAL: Deno.env.get("HCI") ?? "5",
  };
  const coordinators = [await spawnCoordinator(env), await spawnCoordinator(env)];
  try {
    const beat = await fleet(coordinators.map((c) => c.url), sim.port);
    const pids = coordinators.map((c) => c.process.pid);
    const shares: number[][] = pids.map(() => []);
    const pgShares: number[] = [];
    let cpu0 = pids.map(cpuSeconds);
    let pg0 = treeCpuSeconds(postgres.pid!);
    await beat(({ wall, heartbeats }) => {
      const cpu = pids.map(cpuSeconds);
      const pg = treeCpuSeconds(postgres.pid!);
      cpu.forEach((c, i) => shares[i].push(((c - cpu0[i]) / wall) * 100));
      pgShares.push(((pg - pg0) / wall) * 100);
      cpu0 = cpu;
      pg0 = pg;
      console.log(
        `4. ${AGENTS} agents heartbeating every 5 s over 2 coordinators on PostgreSQL for ${
          fmt(wall, 0)
        } s (${heartbeats} heartbeats):`,
      );
      console.log(
        `   coordinator CPU ${
          shares.map((s) => `${fmt(s.at(-1)!, 1)}%`).join(" and ")
        } of one core (resident ${
          pids.map((p) => `${fmt(rssBytes(p) / 1e6, 1)} MB`).join(", ")
        }), PostgreSQL ${fmt(pgShares.at(-1)!, 1)}% of one core`,
      );
    });
    if (RUNS > 1) {
      console.log(
        `   medians of ${RUNS} windows: coordinators ${
          shares.map((s) => `${fmt(median(s), 1)}%`).join(" and ")
        }, PostgreSQL ${fmt(median(pgShares), 1)}% of one core`,
      );
    }
  } finally {
    await Promise.all(coordinators.map((c) => c.stop()));
    await sim.stop();
    await postgres.stop();
  }
}

async function decisions() {
  const store = await openStore("sqlite::memory:");
  const registry = new Registry(store, {
    agentTimeoutMs: 60_000,
    events: new EventLog(store),
  });
  for (let i = 0; i < AGENTS; i++) {
    await registry.register({
      machine_name: `node-${i}`,
      ip_address: "127.0.0.1",
      ollama_port: 10000 + i,
      ollama_version: "0.12.6",
      parallel: 4,
      models: MODELS.map((name) => ({ name, size: 4e9 })),
      loaded_models: i % 3 === 0 ? [{ name: MODELS[i % 5] }] : [],
    });
  }
  const scheduler = new Scheduler(registry);
  const runs: number[] = [];
  for (let r = 0; r < 5; r++) {
    const n = 20_000;
    const t = performance.now();
    for (let i = 0; i < n; i++) {
      const model = MODELS[i % 4];
      const agent = scheduler.choose(model, scheduler.candidates(model));
      if (!agent) throw new Error("no agent");
    }
    runs.push(((performance.now() - t) * 1000) / n);
  }
  console.log(
    `2. one scheduling decision among ${AGENTS} agents: median ${
      fmt(median(runs), 1)
    } µs (5 runs of 20,000)`,
  );
  await store.close();
}

/** One row of part 3: a server holding the streams, and what each stream asks it. */
interface StreamTarget {
  url: string;
  pid: number;
  path: string;
  /** Warms the path up before the baseline is taken. */
  warm: () => Promise<void>;
}

/** What holding `STREAMS` streams cost a server, measured while all of them are open. */
interface StreamCost {
  base: number;
  /** Median resident memory while every stream is open. */
  held: number;
  perStreamKb: number;
  cpu: number;
  chunkRate: number;
  /** Streams open at the end of the window (all of them, or the figure means little). */
  open: number;
}

/**
 * Opens `STREAMS` streams on `target` at once and samples the server's resident memory every
 * 250 ms over a 5 s window that starts 2 s after the last stream has opened (a single sample
 * says more about when the garbage collector last ran than about the streams); the median is
 * reported. The streams would last four minutes: all stay open through the window however long
 * a busy machine takes to open them, and are cancelled after it.
 */
async function holdStreams(target: StreamTarget): Promise<StreamCost> {
  await target.warm();
  await sleep(500);
  const base = rssBytes(target.pid);
  const body = JSON.stringify({
    model: "llama3.2",
    prompt: PROMPT,
    options: { num_predict: 1000 },
  });
  let opened = 0;
  let ended = 0;
  let chunks = 0;
  const readers: ReadableStreamDefaultReader<Uint8Array>[] = [];
  const clients = Array.from({ length: STREAMS }, async () => {
    const res = await fetch(`${target.url}${target.path}`, { method: "POST", body });
    if (!res.ok || !res.body) {
      throw new Error(`Cannot open a stream: HTTP ${res.status} ${await res.text()}`);
    }
    const reader = res.body.getReader();
    readers.push(reader);
    opened++;
    try {
      while (!(await reader.read()).done) chunks++;
    } catch { /* cancelled below */ }
    ended++;
  });
  while (opened < STREAMS) await sleep(100);
  await sleep(2000);
  const samples: number[] = [];
  const cpu0 = cpuSeconds(target.pid);
  const chunks0 = chunks;
  const t0 = performance.now();
  while (performance.now() - t0 < 5000) {
    samples.push(rssBytes(target.pid));
    await sleep(250);
  }
  const wall = (performance.now() - t0) / 1000;
  const held = median(samples);
  const cost = {
    base,
    held,
    perStreamKb: (held - base) / STREAMS / 1024,
    cpu: (cpuSeconds(target.pid) - cpu0) / wall,
    chunkRate: (chunks - chunks0) / wall,
    open: opened - ended,
  };
  await Promise.all(readers.map((r) => r.cancel().catch(() => {})));
  await Promise.all(clients);
  return cost;
}

function describeCost(c: StreamCost): string {
  return `${fmt(c.held / 1e6, 1)} MB (baseline ${fmt(c.base / 1e6, 1)} MB, ${
    fmt(c.perStreamKb, 1)
  } KB per stream), CPU ${fmt(c.cpu * 100, 1)}% of one core, ${fmt(c.chunkRate, 0)} chunks/s` +
    (c.open < STREAMS ? `; only ${c.open} streams were open at the end of the window` : "");
}

/** Starts a script of scripts/bench/ as a server on a free port and waits until it answers. */
/** {@linkcode holdStreams} through a bench script of its own (a floor), stopped afterwards. */
async function holdThrough(
  script: string,
  args: string[],
  path: string,
  warm: (url: string) => () => Promise<void>,
): Promise<StreamCost> {
  const child = await spawnScript(script, args);
  try {
    return await holdStreams({ url: child.url, pid: child.pid, path, warm: warm(child.url) });
  } finally {
    await child.stop();
  }
}

async function spawnScript(script: string, args: string[]) {
  const port = freePort();
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `scripts/bench/${script}`, ...args, String(port)],
    stdout: "null",
    stderr: "inherit",
  }).spawn();
  const url = `http://127.0.0.1:${port}`;
  await waitUntilUp(url);
  return {
    url,
    pid: child.pid,
    async stop() {
      child.kill();
      await child.status;
    },
  };
}

const warmGenerate = (url: string) => async () => {
  for (let i = 0; i < 50; i++) {
    await (await fetch(`${url}/api/generate`, {
      method: "POST",
      body: JSON.stringify({
        model: "llama3.2",
        prompt: "w",
        stream: false,
        options: { num_predict: 1 },
      }),
    })).text();
  }
};

/**
 * Part 3: the same slow streams held by the coordinator (file database, as users run it), by a
 * bare Deno pass-through to the same simulator (the fair floor: it too holds a client and an
 * upstream connection per stream), and by a bare `Deno.serve` with nothing behind it (Deno's
 * own share for the client side alone).
 */
async function streams() {
  const sim = await spawnSimulator([
    "--tps",
    "4",
    "--ttft",
    "0",
    "--parallel",
    String(STREAMS + 10),
    "--models",
    "llama3.2",
  ]);
  try {
    const co = await spawnCoordinator({ LOG_LEVEL: "error", QUEUE_MAX_LENGTH: "100000" });
    let coordinator: StreamCost;
    try {
      // An agent has at most 1,024 slots: several agents share the one simulator. They report
      // the model in memory, as a real agent would once it has answered: else the scheduler
      // queues the streams for the one agent that has (its estimate counts in a model load).
      for (let i = 0; i * 500 < STREAMS + 10; i++) {
        await registerSim(co.url, `slow-${i}`, sim, 500, {
          keepAlive: true,
          loaded: ["llama3.2:latest"],
        });
      }
      coordinator = await holdStreams({
        url: co.url,
        pid: co.process.pid,
        path: "/api/generate",
        warm: warmGenerate(co.url),
      });
    } finally {
      await co.stop();
    }
    console.log(
      `3. ${STREAMS} concurrent streams at 4 tokens/s each (prompt of ${PROMPT.length} bytes):`,
    );
    console.log(`   coordinator (file database): ${describeCost(coordinator)}`);
    const passthrough = await holdThrough(
      "passthrough.ts",
      [sim.url],
      "/api/generate",
      warmGenerate,
    );
    console.log(
      `   bare Deno pass-through to the same simulator (fair floor): ${describeCost(passthrough)}`,
    );
    const floor = await holdThrough("stream_floor.ts", [], "/", (url) => async () => {
      await Promise.all(
        Array.from({ length: 50 }, async () => await (await fetch(`${url}/?lines=1`)).text()),
      );
    });
    console.log(
      `   bare Deno.serve with no upstream (client side only): ${describeCost(floor)}`,
    );
    console.log(
      `   coordinator per stream: ${fmt(coordinator.perStreamKb / passthrough.perStreamKb, 2)}× ` +
        `the pass-through's, ${fmt(coordinator.perStreamKb / floor.perStreamKb, 2)}× the bare ` +
        `Deno.serve's`,
    );
  } finally {
    await sim.stop();
  }
}

if (ONLY.has("decisions")) await decisions();
if (ONLY.has("heartbeats")) await heartbeats();
if (ONLY.has("streams")) await streams();
if (ONLY.has("cluster")) await cluster();
