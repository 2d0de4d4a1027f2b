/**
 * `deno task bench:gc`: what the coordinator's requests cost its garbage collector, beside the
 * bare Deno pass-through in front of the same upstream. Each process runs with V8's
 * `--trace-gc-nvp`; this script reads the main isolate's collections during a `wrk -c8` phase of
 * small non-streaming chats and prints, per request and per young-generation collection
 * (scavenge): bytes allocated, what each scavenge kept alive and promoted to the old generation,
 * and the pauses. Garbage that dies young is cheap; request state kept across a scavenge is
 * copied, promoted and later marked and compacted, and every scavenge stops the event loop for
 * as long as it copies. Unlike req/s these figures barely move on a busy machine, so they catch
 * a change that makes requests outlive themselves (a `Set` churned per request did: 1.6 MB
 * promoted per scavenge, 6 ms pauses). Prints figures; asserts nothing.
 *
 * The coordinator runs as `deno task coordinator` runs it (default settings, a file database in
 * a temporary folder, a log line per request to /dev/null), the upstream registered as one agent
 * with 512 slots. Medians of `--runs` (3) phases of `--duration` (6) s, after a 2 s warm-up.
 *
 * Usage: deno task bench:gc [--runs 3] [--duration 6] [--connections 8]
 */
import { parseArgs } from "node:util";
import { TEST_ADMIN_PASSWORD, TEST_AGENT_TOKEN } from "../coordinator/config.ts";
import { freePort, registerSim, waitUntilUp } from "../coordinator/testing/process.ts";
import { fmt, median, spawnUpstream } from "./bench/procs.ts";
import { SMALL_CHAT as CHAT, which, wrk } from "./bench/wrk.ts";
import { type GcEvent, type GcFigures, gcFigures, parseGcLine } from "./bench/gc_trace.ts";

const { values } = parseArgs({
  options: {
    runs: { type: "string", default: "3" },
    duration: { type: "string", default: "6" },
    connections: { type: "string", default: "8" },
  },
});
const RUNS = Number(values.runs);
const DURATION = Number(values.duration);
const CONNECTIONS = Number(values.connections);

/** A process of this repository with GC tracing on; its GC lines are collected, the rest dropped. */
function traced(args: string[], env: Record<string, string> = {}) {
  const process = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--v8-flags=--trace-gc-nvp", ...args],
    cwd: new URL("..", import.meta.url).pathname,
    env,
    stdout: "piped",
    stderr: "null",
  }).spawn();
  let events: GcEvent[] = [];
  void (async () => {
    let rest = "";
    for await (const text of process.stdout.pipeThrough(new TextDecoderStream())) {
      const lines = (rest + text).split("\n");
      rest = lines.pop()!;
      for (const line of lines) {
        const e = parseGcLine(line);
        if (e) events.push(e);
      }
    }
  })();
  return {
    process,
    /** The collections since the last call. */
    take(): GcEvent[] {
      const out = events;
      events = [];
      return out;
    },
    async stop() {
      try {
        process.kill("SIGKILL");
      } catch { /* gone */ }
      await process.status;
    },
  };
}

if (!which("wrk")) {
  console.log("wrk not found: apt-get install -y wrk");
  Deno.exit(1);
}
const upstream = await spawnUpstream(1);
const floorPort = freePort();
const floor = traced(["scripts/bench/passthrough.ts", upstream.url, String(floorPort)]);
const dbDir = await Deno.makeTempDir({ prefix: "bench-gc-" });
const coordinatorPort = freePort();
const coordinator = traced(["coordinator/main.ts"], {
  COORDINATOR_HOST: "127.0.0.1",
  COORDINATOR_PORT: String(coordinatorPort),
  DATABASE_URL: `sqlite://${dbDir}/coordinator.db`,
  AUTO_REGISTER_LOCAL_OLLAMA: "false",
  AGENT_TOKEN: TEST_AGENT_TOKEN,
  ADMIN_PASSWORD: TEST_ADMIN_PASSWORD,
});
const rows = [
  { name: "deno pass-through", url: `http://127.0.0.1:${floorPort}`, proc: floor },
  { name: "coordinator (file db)", url: `http://127.0.0.1:${coordinatorPort}`, proc: coordinator },
];
try {
  for (const row of rows) await waitUntilUp(row.url);
  await registerSim(rows[1].url, "bench", upstream, 512, { keepAlive: true });
  await measureAndPrint();
} finally {
  await coordinator.stop();
  await floor.stop();
  await upstream.stop();
  await Deno.remove(dbDir, { recursive: true });
}

/** The phases, row by row in turn, and the table of their medians. */
async function measureAndPrint(): Promise<void> {
  console.log(
    `GC per request: ${RUNS} phases of ${DURATION} s at c=${CONNECTIONS} per row, medians; ` +
      `load average ${Deno.loadavg()[0].toFixed(2)} on ${navigator.hardwareConcurrency} CPUs`,
  );
  const samples = new Map<string, GcFigures[]>(rows.map((r) => [r.name, []]));
  for (const row of rows) {
    await wrk(`${row.url}/api/chat`, { connections: CONNECTIONS, seconds: 2, body: CHAT });
  }
  for (let run = 0; run < RUNS; run++) {
    for (const row of rows) {
      row.proc.take();
      const r = await wrk(`${row.url}/api/chat`, {
        connections: CONNECTIONS,
        seconds: DURATION,
        body: CHAT,
      });
      // The last lines of the phase may still be on their way.
      await new Promise((resolve) => setTimeout(resolve, 200));
      if (r.errors) console.log(`  (wrk saw ${r.errors} errors at ${row.name})`);
      samples.get(row.name)!.push(gcFigures(row.proc.take(), r.requests));
    }
  }

  const med = (name: string, k: keyof GcFigures) => median(samples.get(name)!.map((s) => s[k]));
  console.log(
    "\n| path | allocated per request (KB) | scavenges | scavenge pause (ms) | pause per request (µs) | kept per scavenge (KB) | promoted per scavenge (KB) | promoted per request (B) | major GC per request (µs) |",
  );
  console.log("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
  for (const { name } of rows) {
    console.log(
      `| ${name} | ${fmt(med(name, "allocatedPerRequest") / 1024, 1)} | ${
        fmt(med(name, "scavenges"), 0)
      } | ${fmt(med(name, "scavengePauseMs"), 2)} | ${fmt(med(name, "pausePerRequestUs"), 1)} | ${
        fmt(med(name, "survivedPerScavenge") / 1024, 0)
      } | ${fmt(med(name, "promotedPerScavenge") / 1024, 0)} | ${
        fmt(med(name, "promotedPerRequest"), 0)
      } | ${fmt(med(name, "majorPausePerRequestUs"), 1)} |`,
    );
  }
  const [pass, co] = rows.map((r) => r.name);
  console.log(
    `\n${co} vs ${pass}: ${
      fmt(med(co, "allocatedPerRequest") / med(pass, "allocatedPerRequest"))
    }× the bytes allocated per request, promoted ${fmt(med(co, "promotedPerRequest"), 0)} against ${
      fmt(med(pass, "promotedPerRequest"), 0)
    } B per request, scavenges pause ${fmt(med(co, "scavengePauseMs"), 2)} against ${
      fmt(med(pass, "scavengePauseMs"), 2)
    } ms`,
  );
}
