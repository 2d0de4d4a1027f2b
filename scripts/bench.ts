/**
 * `deno task bench`: what the coordinator costs on the hot path, against a direct connection to
 * the (simulated) Ollama and against nginx (Debian's, `least_conn`, keepalive, buffering off,
 * started here in the foreground) proxying the same upstream, all in one process tree on
 * loopback. Prints medians of several runs; asserts nothing.
 *
 * A fourth row, a bare Deno pass-through (scripts/bench/passthrough.ts), shows what Deno itself
 * costs, so the coordinator's own share can be read off.
 *
 * Measures small non-streaming chats at concurrency 1 (p50/p99 latency) and 32 (wrk: requests
 * per second, p50/p99), the aggregate token rate of 200 concurrent streams, and the
 * coordinator's resident memory.
 */
import { parseArgs } from "node:util";
import {
  freePort,
  registerSim,
  spawnCoordinator,
  spawnSimulator,
  waitUntilUp,
} from "../coordinator/testing/process.ts";
import { fmt, median, rssBytes } from "./bench/procs.ts";

const { values } = parseArgs({
  options: {
    runs: { type: "string", default: "5" },
    duration: { type: "string", default: "5" },
    help: { type: "boolean", short: "h" },
  },
});
if (values.help) {
  console.log("Usage: deno task bench [--runs N] [--duration SECONDS]");
  Deno.exit(0);
}
const RUNS = Number(values.runs);
const DURATION = Number(values.duration);
const STREAMS = 200;

const SMALL = JSON.stringify({
  model: "llama3.2",
  messages: [{ role: "user", content: "hi" }],
  stream: false,
  options: { num_predict: 8 },
});
const STREAM = JSON.stringify({
  model: "llama3.2",
  messages: [{ role: "user", content: "go" }],
  stream: true,
  options: { num_predict: 400 },
});

function which(cmd: string): string | null {
  for (const dir of (Deno.env.get("PATH") ?? "").split(":").concat(["/usr/sbin", "/sbin"])) {
    try {
      if (Deno.statSync(`${dir}/${cmd}`).isFile) return `${dir}/${cmd}`;
    } catch { /* not here */ }
  }
  return null;
}

async function startNginx(
  upstreamPort: number,
): Promise<{ url: string; stop: () => Promise<void> } | null> {
  const nginx = which("nginx");
  if (!nginx) return null;
  const dir = await Deno.makeTempDir();
  const port = freePort();
  await Deno.writeTextFile(
    `${dir}/nginx.conf`,
    `
worker_processes 1;
daemon off;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path ${dir}; proxy_temp_path ${dir}; fastcgi_temp_path ${dir};
  uwsgi_temp_path ${dir}; scgi_temp_path ${dir};
  upstream ollama { least_conn; server 127.0.0.1:${upstreamPort}; keepalive 64; }
  server {
    listen 127.0.0.1:${port};
    location / {
      proxy_pass http://ollama;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host 127.0.0.1:${upstreamPort};
      proxy_buffering off;
    }
  }
}`,
  );
  const child = new Deno.Command(nginx, {
    args: ["-c", `${dir}/nginx.conf`, "-p", dir],
    stdout: "null",
    stderr: "inherit",
  }).spawn();
  const url = `http://127.0.0.1:${port}`;
  await waitUntilUp(url);
  return {
    url,
    stop: async () => {
      child.kill("SIGQUIT");
      await child.status;
      await Deno.remove(dir, { recursive: true });
    },
  };
}

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(s.length * p))];
}

/** p50 and p99 latency (ms) of small non-streaming chats, one at a time. */
async function latency(url: string, n = 500): Promise<{ p50: number; p99: number }> {
  const times: number[] = [];
  for (let i = 0; i < n; i++) {
    const t = performance.now();
    const res = await fetch(`${url}/api/chat`, {
      method: "POST",
      body: SMALL,
      headers: { "content-type": "application/json" },
    });
    await res.arrayBuffer();
    times.push(performance.now() - t);
  }
  return { p50: median(times), p99: pct(times, 0.99) };
}

/** Requests per second and p50/p99 latency (ms) with `connections` at once, measured by wrk. */
async function wrk(
  url: string,
  connections: number,
): Promise<{ rps: number; p50: number; p99: number }> {
  const bin = which("wrk");
  if (!bin) return { rps: NaN, p50: NaN, p99: NaN };
  const script = await Deno.makeTempFile({ suffix: ".lua" });
  await Deno.writeTextFile(
    script,
    `wrk.method = "POST"\nwrk.body = '${SMALL}'\nwrk.headers["Content-Type"] = "application/json"\n`,
  );
  const out = await new Deno.Command(bin, {
    args: [
      "-t2",
      `-c${connections}`,
      `-d${DURATION}s`,
      "--latency",
      "-s",
      script,
      `${url}/api/chat`,
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  await Deno.remove(script);
  const text = new TextDecoder().decode(out.stdout);
  const ms = (label: string) => {
    const m = new RegExp(`\\s${label}%\\s+([\\d.]+)(us|ms|s)\\b`).exec(text);
    if (!m) return NaN;
    const v = Number(m[1]);
    return m[2] === "us" ? v / 1000 : m[2] === "s" ? v * 1000 : v;
  };
  const errors = /Non-2xx or 3xx responses: (\d+)/.exec(text);
  if (errors) console.log(`  (wrk saw ${errors[1]} non-2xx responses at ${url})`);
  const rps = /Requests\/sec:\s+([\d.]+)/.exec(text);
  return { rps: rps ? Number(rps[1]) : NaN, p50: ms("50"), p99: ms("99") };
}

/** Aggregate NDJSON lines (tokens) per second over `STREAMS` concurrent streams. */
async function tokenRate(url: string): Promise<number> {
  const t = performance.now();
  const counts = await Promise.all(Array.from({ length: STREAMS }, async () => {
    const res = await fetch(`${url}/api/chat`, { method: "POST", body: STREAM });
    let lines = 0;
    for await (const chunk of res.body!) {
      for (const b of chunk) if (b === 10) lines++;
    }
    return lines;
  }));
  return counts.reduce((a, b) => a + b, 0) / ((performance.now() - t) / 1000);
}

const sim = await spawnSimulator([
  "--tps",
  "1000000",
  "--ttft",
  "0",
  "--parallel",
  "512",
  "--models",
  "llama3.2",
]);
const coordinator = await spawnCoordinator({
  DATABASE_URL: "sqlite::memory:",
  LOG_LEVEL: "error",
  QUEUE_MAX_LENGTH: "10000",
});
await registerSim(coordinator.url, "bench", sim, 512, { keepAlive: true });
const nginx = await startNginx(sim.port);
if (!nginx) console.log("nginx not found: apt-get install -y nginx wrk for the nginx row");
const floorPort = freePort();
const floor = new Deno.Command(Deno.execPath(), {
  args: ["run", "-A", "scripts/bench/passthrough.ts", sim.url, String(floorPort)],
  stdout: "null",
  stderr: "inherit",
}).spawn();
const floorUrl = `http://127.0.0.1:${floorPort}`;
await waitUntilUp(floorUrl);

const targets: [string, string][] = [
  ["direct", sim.url],
  ["coordinator", coordinator.url],
  ["deno pass-through", floorUrl],
];
if (nginx) targets.push(["nginx", nginx.url]);

type Row = {
  c1p50: number;
  c1p99: number;
  rps: number;
  c32p50: number;
  c32p99: number;
  tokens: number;
};
const results: Record<string, Row[]> = {};
for (const [name] of targets) results[name] = [];
console.log(
  `Ollama Coordinator benchmark: ${RUNS} runs, medians; loopback; simulated Ollama at 1M tokens/s`,
);
for (let run = 0; run < RUNS; run++) {
  for (const [name, url] of targets) {
    const c1 = await latency(url);
    const c32 = await wrk(url, 32);
    results[name].push({
      c1p50: c1.p50,
      c1p99: c1.p99,
      rps: c32.rps,
      c32p50: c32.p50,
      c32p99: c32.p99,
      tokens: await tokenRate(url),
    });
  }
}
const med = (name: string): Row => {
  const rows = results[name];
  const m = (k: keyof Row) => median(rows.map((r) => r[k]));
  return {
    c1p50: m("c1p50"),
    c1p99: m("c1p99"),
    rps: m("rps"),
    c32p50: m("c32p50"),
    c32p99: m("c32p99"),
    tokens: m("tokens"),
  };
};
console.log(
  `\n| path | c=1 p50 (ms) | c=1 p99 (ms) | c=32 req/s | c=32 p50 (ms) | c=32 p99 (ms) | ${STREAMS} streams, tokens/s |`,
);
console.log("| --- | --- | --- | --- | --- | --- | --- |");
for (const [name] of targets) {
  const r = med(name);
  console.log(
    `| ${name} | ${fmt(r.c1p50, 3)} | ${fmt(r.c1p99, 3)} | ${fmt(r.rps, 0)} | ${
      fmt(r.c32p50, 2)
    } | ${fmt(r.c32p99, 2)} | ${fmt(r.tokens, 0)} |`,
  );
}
const d = med("direct");
const c = med("coordinator");
console.log(
  `\ncoordinator adds ${fmt(c.c1p50 - d.c1p50, 3)} ms at p50 and ${
    fmt(c.c1p99 - d.c1p99, 3)
  } ms at p99 at c=1 (aims ≤ 0.15 and ≤ 1)`,
);
const f = med("deno pass-through");
console.log(
  `a bare Deno pass-through (Deno.serve + the same upstream client, nothing else) adds ${
    fmt(f.c1p50 - d.c1p50, 3)
  } ms at p50 and ${fmt(f.c1p99 - d.c1p99, 3)} ms at p99: Deno's own floor`,
);
if (nginx) {
  const n = med("nginx");
  console.log(
    `nginx adds ${fmt(n.c1p50 - d.c1p50, 3)} ms at p50 and ${fmt(n.c1p99 - d.c1p99, 3)} ms at p99`,
  );
  console.log(
    `coordinator vs nginx: ${fmt(c.rps / n.rps)}x req/s at c=32 (aim ≥ 0.5), ${
      fmt(c.tokens / n.tokens)
    }x stream tokens/s (aim ≥ 0.5)`,
  );
  console.log(
    `deno pass-through vs nginx: ${fmt(f.rps / n.rps)}x req/s at c=32, ${
      fmt(f.tokens / n.tokens)
    }x stream tokens/s`,
  );
}
console.log(
  `coordinator resident memory after the runs: ${
    fmt(rssBytes(coordinator.process.pid) / 1e6, 1)
  } MB`,
);

await nginx?.stop();
floor.kill();
await floor.status;
await coordinator.stop();
await sim.stop();
