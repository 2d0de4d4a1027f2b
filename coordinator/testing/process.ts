/** Helpers for tests over real processes: free ports, simulators and coordinators as children. */

import { TEST_ADMIN_PASSWORD, TEST_AGENT_TOKEN } from "../config.ts";

const ROOT = new URL("../../", import.meta.url);

/** A loopback port nobody listens on right now. */
export function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

/** Polls `url` until it answers (any status), or throws after `timeoutMs`. */
export async function waitUntilUp(url: string, timeoutMs = 15_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (Date.now() < until) {
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(1000) });
      await res.body?.cancel();
      return;
    } catch {
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  throw new Error(`Cannot reach ${url} within ${timeoutMs} ms`);
}

/** A child process with its URL; `kill` sends a signal, `stop` ends it and waits. */
export interface Child {
  url: string;
  port: number;
  process: Deno.ChildProcess;
  kill(signal?: Deno.Signal): void;
  stop(): Promise<void>;
}

/** A child this module started: it can also tell what it printed and whether it is still up. */
export interface Spawned extends Child {
  /** What it printed (stdout and stderr) so far, when started with `capture`; else "". */
  output(): string;
  /** Whether it has exited. */
  exited(): boolean;
}

/** Options of the `spawn*` helpers. */
export interface SpawnOptions {
  /** Keep what the process prints (its last 1 MB) for `output()` instead of passing it on. */
  capture?: boolean;
}

/** Most text kept of a captured child's output. */
const CAPTURE_MAX_CHARS = 1_000_000;

function child(
  cmd: string[],
  port: number,
  env: Record<string, string> = {},
  options: {
    quiet?: boolean;
    capture?: boolean;
    /** Stop with SIGTERM first (an agent then stops the Ollama it started), SIGKILL after this. */
    graceMs?: number;
  } = {},
): Spawned {
  const { quiet = false, capture = false, graceMs = 0 } = options;
  const process = new Deno.Command(Deno.execPath(), {
    args: cmd,
    cwd: ROOT,
    env,
    stdin: "null",
    stdout: capture ? "piped" : "null",
    stderr: capture ? "piped" : quiet ? "null" : "inherit",
  }).spawn();
  let output = "";
  if (capture) {
    // Read both pipes to the end, or a chatty child would block on a full pipe.
    for (const stream of [process.stdout, process.stderr]) {
      void (async () => {
        for await (const text of stream.pipeThrough(new TextDecoderStream())) {
          output += text;
          if (output.length > CAPTURE_MAX_CHARS) output = output.slice(-CAPTURE_MAX_CHARS / 2);
        }
      })().catch(() => {});
    }
  }
  let exited = false;
  const status = process.status.then((s) => {
    exited = true;
    return s;
  });
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    process,
    output: () => output,
    exited: () => exited,
    kill(signal: Deno.Signal = "SIGKILL") {
      if (!exited) {
        try {
          process.kill(signal);
        } catch { /* already gone */ }
      }
    },
    async stop() {
      const signal = (s: Deno.Signal) => {
        if (exited) return;
        try {
          process.kill(s);
        } catch { /* already gone */ }
      };
      if (graceMs > 0) {
        signal("SIGTERM");
        let timer: ReturnType<typeof setTimeout> | undefined;
        await Promise.race([status, new Promise((r) => timer = setTimeout(r, graceMs))]);
        clearTimeout(timer);
      }
      signal("SIGKILL");
      await status;
    },
  };
}

/** Starts the simulator as its own process and waits until it answers. */
export async function spawnSimulator(args: string[] = [], port = freePort()): Promise<Spawned> {
  const c = child([
    "run",
    "-A",
    "simulator/cli.ts",
    "--quiet",
    "--port",
    String(port),
    ...args,
  ], port);
  await waitUntilUp(c.url);
  return c;
}

/** Starts the coordinator as its own process and waits until it answers. */
export async function spawnCoordinator(
  env: Record<string, string> = {},
  port = freePort(),
  options: SpawnOptions = {},
): Promise<Spawned> {
  // Without a database named, a file of its own in a temporary folder (as users run it, and never
  // a coordinator.db left in the checkout); removed when the child is stopped.
  const dir = env.DATABASE_URL ? undefined : await Deno.makeTempDir({ prefix: "oc_coordinator_" });
  const c = child(["run", "-A", "coordinator/main.ts"], port, {
    COORDINATOR_HOST: "127.0.0.1",
    COORDINATOR_PORT: String(port),
    AUTO_REGISTER_LOCAL_OLLAMA: "false",
    LOG_LEVEL: "warn",
    AGENT_TOKEN: TEST_AGENT_TOKEN,
    ADMIN_PASSWORD: TEST_ADMIN_PASSWORD,
    ...(dir ? { DATABASE_URL: `sqlite://${dir}/c.db` } : {}),
    ...env,
  }, options);
  if (dir) {
    const stop = c.stop.bind(c);
    c.stop = async () => {
      await stop();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    };
  }
  await waitUntilUp(c.url);
  return c;
}

/**
 * Registers a simulator with a coordinator as an agent; returns the agent id. With `keepAlive`
 * (benchmarks that run longer than AGENT_TIMEOUT) it heartbeats every two seconds on an unref'd
 * timer until the coordinator goes away.
 */
export async function registerSim(
  coordinatorUrl: string,
  name: string,
  sim: Child,
  parallel = 4,
  options: {
    keepAlive?: boolean;
    /** Models the agent reports in memory (else none: the scheduler counts in a load for them). */
    loaded?: string[];
  } = {},
): Promise<string> {
  const tags = await (await fetch(`${sim.url}/api/tags`)).json();
  const res = await fetch(`${coordinatorUrl}/api/agents`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${TEST_AGENT_TOKEN}` },
    body: JSON.stringify({
      machine_name: name,
      ip_address: "127.0.0.1",
      ollama_port: sim.port,
      ollama_version: "0.12.6",
      parallel,
      models: tags.models,
      ...(options.loaded ? { loaded_models: options.loaded.map((name) => ({ name })) } : {}),
    }),
  });
  const reply = await res.json();
  if (!res.ok) throw new Error(`Cannot register simulator "${name}": ${reply.error}`);
  const { agent_id, agent_secret } = reply;
  if (!options.keepAlive) return agent_id;
  const timer = setInterval(() => {
    fetch(`${coordinatorUrl}/api/health`, {
      method: "POST",
      headers: { authorization: `Bearer ${agent_secret}` },
      body: JSON.stringify({ agent_id, cpu_usage: 0, memory_usage: 0, active_requests: 0 }),
    }).then((r) => r.body?.cancel(), () => clearInterval(timer));
  }, 2000);
  Deno.unrefTimer(timer as unknown as number);
  return agent_id;
}

/** Runs `total` tasks with at most `concurrency` at once. */
export async function pool<T>(
  total: number,
  concurrency: number,
  task: (i: number) => Promise<T>,
): Promise<T[]> {
  const results: T[] = new Array(total);
  let next = 0;
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (next < total) {
      const i = next++;
      results[i] = await task(i);
    }
  }));
  return results;
}

/**
 * Starts the real agent as its own process, supervising a simulator (`scripts/fake-ollama`) on
 * `ollamaPort`, and reporting to `coordinatorUrl` every second.
 */
export function spawnAgent(
  coordinatorUrl: string,
  name: string,
  ollamaPort = freePort(),
  env: Record<string, string> = {},
): Spawned {
  return child(
    ["run", "-A", "agent/main.ts"],
    ollamaPort,
    {
      COORDINATOR_URL: coordinatorUrl,
      OLLAMA_PORT: String(ollamaPort),
      OLLAMA_BIN: new URL("scripts/fake-ollama", ROOT).pathname,
      AGENT_OLLAMA_BIND: "127.0.0.1",
      AGENT_ADVERTISE_ADDRESS: "127.0.0.1",
      OLLAMA_AGENT_MACHINE_NAME: name,
      HEARTBEAT_INTERVAL: "1",
      COORDINATOR_REGISTER_RETRY_SECS: "0.2",
      SIM_MODELS: "llama3.2",
      AGENT_TOKEN: TEST_AGENT_TOKEN,
      SIM_TPS: "2000",
      LOG_LEVEL: "error",
      PATH: Deno.env.get("PATH") ?? "",
      ...env,
    },
    { quiet: true, graceMs: 3000 },
  );
}

/** Signs in to a coordinator as admin; returns the Cookie header for read-only admin calls. */
export async function adminCookie(coordinatorUrl: string): Promise<string> {
  const res = await fetch(`${coordinatorUrl}/login`, {
    method: "POST",
    body: new URLSearchParams({ password: TEST_ADMIN_PASSWORD }),
    redirect: "manual",
  });
  await res.body?.cancel();
  const cookie = res.headers.get("set-cookie");
  if (!cookie) throw new Error(`Cannot sign in to ${coordinatorUrl}: HTTP ${res.status}`);
  return cookie.split(";")[0];
}
