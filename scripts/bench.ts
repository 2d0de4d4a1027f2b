/**
 * `deno task bench`: what the coordinator costs on the hot path, against a direct connection to
 * the (simulated) Ollama and against nginx proxying the same upstream, all in one process tree
 * on loopback. Prints medians of several runs and the ratios; asserts nothing.
 *
 * Measures: latency at concurrency 1 (non-streaming), requests per second at concurrency 32
 * (wrk), streaming throughput of one long NDJSON answer, and the coordinator's resident memory.
 */
import { parseArgs } from "node:util";
import {
  freePort,
  registerSim,
  spawnCoordinator,
  spawnSimulator,
  waitUntilUp,
} from "../coordinator/testing_process.ts";
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

const SMALL = JSON.stringify({
  model: "llama3.2",
  prompt: "hi",
  stream: false,
  options: { num_predict: 8 },
});
const LONG = JSON.stringify({
  model: "llama3.2",
  prompt: "long",
  stream: true,
  options: { num_predict: 20000 },
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
  client_body_temp_path ${dir}; proxy_temp_path ${dir}; fastcgi_temp_path ${dir}; uwsgi_temp_path ${dir}; scgi_temp_path ${dir};
  upstream ollama { server 127.0.0.1:${upstreamPort}; keepalive 64; }
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

async function latencyMs(url: string, n = 300): Promise<number> {
  const times: number[] = [];
  for (let i = 0; i < n; i++) {
    const t = performance.now();
    const res = await fetch(`${url}/api/generate`, {
      method: "POST",
      body: SMALL,
      headers: { "content-type": "application/json" },
    });
    await res.arrayBuffer();
    times.push(performance.now() - t);
  }
  return median(times);
}

async function wrkRps(url: string, connections: number): Promise<number> {
  const wrk = which("wrk");
  if (!wrk) return NaN;
  const script = await Deno.makeTempFile({ suffix: ".lua" });
  await Deno.writeTextFile(
    script,
    `wrk.method = "POST"\nwrk.body = '${SMALL}'\nwrk.headers["Content-Type"] = "application/json"\n`,
  );
  const out = await new Deno.Command(wrk, {
    args: ["-t2", `-c${connections}`, `-d${DURATION}s`, "-s", script, `${url}/api/generate`],
    stdout: "piped",
    stderr: "piped",
  }).output();
  await Deno.remove(script);
  const text = new TextDecoder().decode(out.stdout);
  const m = /Requests\/sec:\s+([\d.]+)/.exec(text);
  const errors = /Non-2xx or 3xx responses: (\d+)/.exec(text);
  if (errors) console.log(`  (wrk saw ${errors[1]} non-2xx responses at ${url})`);
  return m ? Number(m[1]) : NaN;
}

async function streamMBps(url: string): Promise<number> {
  const t = performance.now();
  const res = await fetch(`${url}/api/generate`, { method: "POST", body: LONG });
  let bytes = 0;
  for await (const chunk of res.body!) bytes += chunk.byteLength;
  return bytes / 1e6 / ((performance.now() - t) / 1000);
}

const sim = await spawnSimulator([
  "--tps",
  "1000000",
  "--ttft",
  "0",
  "--parallel",
  "256",
  "--models",
  "llama3.2",
]);
const coordinator = await spawnCoordinator({
  DATABASE_URL: "sqlite::memory:",
  LOG_LEVEL: "error",
  QUEUE_MAX_LENGTH: "10000",
});
await registerSim(coordinator.url, "bench", sim, 256, { keepAlive: true });
const nginx = await startNginx(sim.port);
if (!nginx) {
  console.log("nginx not found: install it (apt-get install -y nginx wrk) for the nginx column");
}

const targets: [string, string][] = [["direct", sim.url], ["coordinator", coordinator.url]];
if (nginx) targets.push(["nginx", nginx.url]);

console.log(
  `Ollama Coordinator benchmark: ${RUNS} runs each, medians; loopback, simulated Ollama at 1M tokens/s`,
);
const results: Record<string, { lat: number[]; rps: number[]; mbps: number[] }> = {};
for (const [name] of targets) results[name] = { lat: [], rps: [], mbps: [] };
for (let run = 0; run < RUNS; run++) {
  for (const [name, url] of targets) {
    results[name].lat.push(await latencyMs(url));
    results[name].rps.push(await wrkRps(url, 32));
    results[name].mbps.push(await streamMBps(url));
  }
}
const row = (name: string) => {
  const r = results[name];
  return { lat: median(r.lat), rps: median(r.rps), mbps: median(r.mbps) };
};
const direct = row("direct");
console.log("\n| target | latency c=1 (ms) | req/s c=32 | stream MB/s |");
console.log("| --- | --- | --- | --- |");
for (const [name] of targets) {
  const r = row(name);
  console.log(`| ${name} | ${fmt(r.lat, 3)} | ${fmt(r.rps, 0)} | ${fmt(r.mbps, 1)} |`);
}
const c = row("coordinator");
console.log(
  `\ncoordinator vs direct: +${fmt(c.lat - direct.lat, 3)} ms latency, ${
    fmt(c.rps / direct.rps)
  }x req/s, ${fmt(c.mbps / direct.mbps)}x stream throughput`,
);
if (nginx) {
  const n = row("nginx");
  console.log(
    `nginx vs direct:       +${fmt(n.lat - direct.lat, 3)} ms latency, ${
      fmt(n.rps / direct.rps)
    }x req/s, ${fmt(n.mbps / direct.mbps)}x stream throughput`,
  );
  console.log(
    `coordinator vs nginx:  ${fmt(c.rps / n.rps)}x req/s, ${
      fmt(c.mbps / n.mbps)
    }x stream throughput`,
  );
}
console.log(
  `coordinator resident memory after the runs: ${
    fmt(rssBytes(coordinator.process.pid) / 1e6, 1)
  } MB`,
);

await nginx?.stop();
await coordinator.stop();
await sim.stop();
