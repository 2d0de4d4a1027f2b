/**
 * A live demo of the whole system on this machine: a coordinator (its own temporary SQLite
 * file), three agents each supervising a simulated Ollama of a different speed and set of
 * models, and light steady traffic through the coordinator. Prints the dashboard's URL; Ctrl-C
 * stops everything. Everything listens on 127.0.0.1 only.
 *
 *   deno task demo [--port 8080] [--rps 3] [--screenshots DIR]
 *
 * `--screenshots DIR` takes screenshots of every page (light and dark, laptop and phone width)
 * with Debian's Chromium after some traffic, then stops.
 */
import { parseArgs } from "node:util";
import { fileURLToPath } from "node:url";
import { loadConfig } from "../coordinator/config.ts";
import { type Coordinator, startCoordinator } from "../coordinator/server.ts";

const ROOT = fileURLToPath(new URL("../", import.meta.url));

/** One simulated machine. */
interface Machine {
  name: string;
  models: string[];
  tps: number;
  ttftMs: number;
  loadMs: number;
  parallel: number;
}

const MACHINES: Machine[] = [
  {
    name: "studio-gpu",
    models: ["llama3.2:latest", "qwen2.5:7b", "nomic-embed-text:latest"],
    tps: 140,
    ttftMs: 60,
    loadMs: 1200,
    parallel: 4,
  },
  {
    name: "mac-mini",
    models: ["llama3.2:latest", "phi3:mini", "nomic-embed-text:latest"],
    tps: 55,
    ttftMs: 180,
    loadMs: 2500,
    parallel: 2,
  },
  {
    name: "old-server",
    models: ["llama3.2:latest", "qwen2.5:7b"],
    tps: 18,
    ttftMs: 450,
    loadMs: 4000,
    parallel: 2,
  },
];

/** A model no simulated machine has: the demo's failed requests (a 404 each) ask for it. */
const MISSING_MODEL = "mistral:7b";

const PROMPTS = [
  "Why is the sky blue?",
  "Write a haiku about GPUs.",
  "Summarise the plot of Hamlet in two sentences.",
  "What is a good name for a cat?",
  "Explain recursion to a five-year-old.",
];

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

function pick<T>(xs: T[]): T {
  return xs[Math.floor(Math.random() * xs.length)];
}

async function startDemoCoordinator(
  port: number,
  dbPath: string,
  secrets: { token: string; password: string },
) {
  const env = {
    COORDINATOR_HOST: "127.0.0.1",
    COORDINATOR_PORT: String(port),
    DATABASE_URL: `sqlite://${dbPath}`,
    AUTO_REGISTER_LOCAL_OLLAMA: "false",
    HEALTH_CHECK_INTERVAL: "2",
    AGENT_TIMEOUT: "10",
    AGENT_HEARTBEAT_INTERVAL: "2",
    AGENT_TOKEN: secrets.token,
    ADMIN_PASSWORD: secrets.password,
    LOG_LEVEL: "warn",
  };
  const config = loadConfig([], env);
  if (config === "help") throw new Error("Cannot start the demo coordinator: no configuration");
  return await startCoordinator(config);
}

function startAgent(m: Machine, coordinatorUrl: string, token: string): Deno.ChildProcess {
  return new Deno.Command(Deno.execPath(), {
    // A process group of its own: Ctrl-C in a terminal signals the whole foreground group, and
    // agents stopping at once, under the requests still running, make the coordinator log their
    // failures. The demo stops them itself, in order: traffic first, then agents.
    detached: true,
    args: ["run", "--allow-all", `${ROOT}agent/main.ts`],
    cwd: ROOT,
    env: {
      COORDINATOR_URL: coordinatorUrl,
      AGENT_TOKEN: token,
      OLLAMA_BIN: `${ROOT}scripts/fake-ollama`,
      OLLAMA_PORT: String(freePort()),
      AGENT_OLLAMA_BIND: "127.0.0.1",
      AGENT_ADVERTISE_ADDRESS: "127.0.0.1",
      OLLAMA_AGENT_MACHINE_NAME: m.name,
      OLLAMA_NUM_PARALLEL: String(m.parallel),
      HEARTBEAT_INTERVAL: "2",
      COORDINATOR_REGISTER_RETRY_SECS: "1",
      LOG_LEVEL: "warn",
      SIM_MODELS: m.models.join(","),
      SIM_TPS: String(m.tps),
      SIM_TTFT_MS: String(m.ttftMs),
      SIM_LOAD_MS: String(m.loadMs),
    },
    stdin: "null",
    stdout: "inherit",
    stderr: "inherit",
  }).spawn();
}

/** Sends a few requests per second through the coordinator, at most `maxInFlight` at once. */
function startTraffic(url: string, rps: number, maxInFlight = 8): () => Promise<void> {
  let inFlight = 0;
  let stopped = false;
  const pending = new Set<Promise<void>>();
  // Stopping cancels what is still running: a client that goes away is logged quietly (499).
  const cancel = new AbortController();
  const one = async () => {
    const roll = Math.random();
    const tokens = 20 + Math.floor(Math.random() * 100);
    let path = "/api/chat";
    let body: Record<string, unknown>;
    if (roll < 0.12) {
      path = "/api/embed";
      body = { model: "nomic-embed-text", input: pick(PROMPTS) };
    } else if (roll < 0.27) {
      path = "/api/generate";
      body = {
        model: pick(["llama3.2", "qwen2.5:7b"]),
        prompt: pick(PROMPTS),
        stream: false,
        options: { num_predict: tokens },
      };
    } else if (roll < 0.37) {
      path = "/v1/chat/completions";
      body = {
        model: "llama3.2",
        messages: [{ role: "user", content: pick(PROMPTS) }],
        max_tokens: tokens,
        stream: true,
      };
    } else if (roll < 0.39) {
      body = { model: MISSING_MODEL, messages: [{ role: "user", content: "hi" }] };
    } else {
      body = {
        model: pick(["llama3.2", "llama3.2", "qwen2.5:7b", "phi3:mini"]),
        messages: [{ role: "user", content: pick(PROMPTS) }],
        stream: Math.random() < 0.7,
        options: { num_predict: tokens },
      };
    }
    try {
      const res = await fetch(url + path, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(body),
        signal: AbortSignal.any([cancel.signal, AbortSignal.timeout(60_000)]),
      });
      await res.arrayBuffer().catch(() => {});
    } catch { /* the coordinator may be stopping */ }
  };
  const loop = async () => {
    while (!stopped) {
      // Poisson arrivals: exponential gaps averaging 1/rps seconds.
      await new Promise((r) => setTimeout(r, -Math.log(1 - Math.random()) * 1000 / rps));
      if (stopped || inFlight >= maxInFlight) continue;
      inFlight++;
      const p = one().finally(() => {
        inFlight--;
        pending.delete(p);
      });
      pending.add(p);
    }
  };
  const running = loop();
  return async () => {
    stopped = true;
    cancel.abort();
    await running;
    await Promise.allSettled([...pending]);
  };
}

/**
 * A placement rule for the Placement page to show at work: phi3:mini, on one machine at start, is
 * wanted on two and kept loaded on one, so the coordinator pulls it onto another (with progress).
 */
async function placeDemoModel(url: string): Promise<void> {
  const rule = { model: "phi3:mini", on: { count: 2 }, warm: 1, keep_alive: "10m" };
  const res = await fetch(`${url}/api/admin/placements`, {
    method: "PUT",
    headers: adminHeaders,
    body: JSON.stringify(rule),
  });
  if (!res.ok) throw new Error(`Cannot set the demo's placement rule: ${await res.text()}`);
  await res.body?.cancel();
  console.log(`Placement rule: ${rule.model} on 2 machines, kept loaded on 1 (it starts on 1).`);
}

async function waitForAgents(url: string, n: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    try {
      const list = await (await fetch(`${url}/api/agents`, { headers: adminHeaders })).json();
      if (Array.isArray(list) && list.filter((a) => a.status === "online").length >= n) return;
    } catch { /* not yet */ }
    await new Promise((r) => setTimeout(r, 300));
  }
  throw new Error(`Cannot start the demo: fewer than ${n} agents came online in time`);
}

/** Headers for the management API, when the coordinator asks for an admin. */
const adminHeaders: Record<string, string> = {};

async function screenshots(url: string, dir: string, password: string): Promise<void> {
  // Loaded only for screenshots: the demo itself needs no browser driver.
  const { chromium } = await import("../shared/test_clients.ts");
  await Deno.mkdir(dir, { recursive: true });
  const browser = await chromium.launch({
    executablePath: "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"],
  });
  try {
    const list = await (await fetch(`${url}/api/agents`, { headers: adminHeaders })).json();
    const pages: [string, string][] = [
      ["overview", "/dashboard"],
      ["agents", "/dashboard/agents"],
      ["agent", `/dashboard/agents/${list[0].id}`],
      ["models", "/dashboard/models"],
      ["placement", "/dashboard/placement"],
      ["requests", "/dashboard/requests"],
      ["keys", "/dashboard/keys"],
      ["events", "/dashboard/events"],
    ];
    const sizes = [["laptop", 1366, 900], ["phone", 390, 844]] as const;
    for (const scheme of ["light", "dark"] as const) {
      for (const [label, width, height] of sizes) {
        const context = await browser.newContext({
          viewport: { width, height },
          colorScheme: scheme,
          deviceScaleFactor: label === "phone" ? 2 : 1,
          isMobile: label === "phone",
          hasTouch: label === "phone",
        });
        const page = await context.newPage();
        await page.goto(`${url}/login`);
        await page.getByLabel("Admin password").fill(password);
        await page.getByRole("button", { name: "Sign in" }).click();
        await page.waitForURL(`${url}/dashboard`);
        for (const [name, path] of pages) {
          await page.goto(url + path);
          await page.waitForSelector(".live.live", { timeout: 10_000 });
          await page.waitForTimeout(1200);
          const file = `${dir}/${name}-${label}-${scheme}.png`;
          await page.screenshot({ path: file, fullPage: true });
          console.log(`  ${file}`);
        }
        await context.close();
      }
    }
  } finally {
    await browser.close();
  }
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      port: { type: "string" },
      rps: { type: "string", default: "3" },
      screenshots: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    console.log("Usage: deno task demo [--port N] [--rps N] [--screenshots DIR]");
    Deno.exit(0);
  }
  const rps = Number(values.rps);
  if (!(rps > 0 && rps <= 50)) {
    console.error("Cannot start the demo: --rps must be a number from 0 to 50");
    Deno.exit(2);
  }
  const tmp = await Deno.makeTempDir({ prefix: "oc-demo-" });
  const secrets = {
    token: crypto.randomUUID(),
    password: Deno.env.get("ADMIN_PASSWORD") || crypto.randomUUID().slice(0, 13),
  };
  let coordinator: Coordinator;
  const wanted = values.port === undefined ? 8080 : Number(values.port);
  try {
    coordinator = await startDemoCoordinator(wanted, `${tmp}/coordinator.db`, secrets);
  } catch (e) {
    if (values.port !== undefined || !(e instanceof Deno.errors.AddrInUse)) throw e;
    coordinator = await startDemoCoordinator(0, `${tmp}/coordinator.db`, secrets);
  }
  const url = coordinator.url;
  adminHeaders.authorization = `Bearer ${
    (await coordinator.ctx.security.createKey("demo", "admin")).key
  }`;
  console.log(`Coordinator on ${url}; starting ${MACHINES.length} agents…`);
  const agents = MACHINES.map((m) => startAgent(m, url, secrets.token));
  let stopTraffic = async () => {};
  let stopping: Promise<void> | undefined;
  const stop = () =>
    stopping ??= (async () => {
      console.log("\nStopping the demo…");
      await stopTraffic();
      for (const a of agents) {
        try {
          a.kill("SIGTERM");
        } catch { /* already gone */ }
      }
      const exited = Promise.allSettled(agents.map((a) => a.status));
      const timer = setTimeout(() => {
        for (const a of agents) {
          try {
            a.kill("SIGKILL");
          } catch { /* already gone */ }
        }
      }, 8000);
      await exited;
      clearTimeout(timer);
      await coordinator.stop();
      await Deno.remove(tmp, { recursive: true }).catch(() => {});
    })();
  // A closed terminal (SIGHUP) stops the demo too: the agents do not share its process group.
  for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
    Deno.addSignalListener(signal, () => void stop().then(() => Deno.exit(0)));
  }
  try {
    await waitForAgents(url, MACHINES.length, 60_000);
  } catch (e) {
    console.error((e as Error).message);
    await stop();
    Deno.exit(1);
  }
  await placeDemoModel(url);
  stopTraffic = startTraffic(url, rps);
  console.log(`\nDashboard: ${url}/dashboard (admin password: ${secrets.password})`);
  console.log(`Traffic: about ${rps} requests per second. Press Ctrl-C to stop.`);
  console.log(
    `About 2 % of them ask for ${MISSING_MODEL}, which no agent has, to show failed requests.\n`,
  );
  if (values.screenshots) {
    await new Promise((r) => setTimeout(r, 25_000));
    console.log(`Screenshots into ${values.screenshots}:`);
    try {
      await screenshots(url, values.screenshots, secrets.password);
    } finally {
      await stop();
    }
    Deno.exit(0);
  }
}
