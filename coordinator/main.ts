/**
 * The coordinator's entry point: configuration → database → app → serve.
 * `deno task coordinator --help` lists the settings.
 *
 * With `LOG_FORMAT=json` every line the process writes is one JSON object shaped like the
 * {@linkcode Logger}'s: its own start-up and shutdown lines, the first-start secrets, a bad
 * setting, uncaught errors, and whatever other modules print with `console`.
 */
import { ConfigError, helpText, loadConfig } from "./config.ts";
import { hostname } from "node:os";
import { closeContext, type Coordinator, startCoordinator } from "./server.ts";
import type { LocalOllama } from "./fleet/local_ollama.ts";
import { redactUrl } from "./store/open.ts";
import { Logger, routeConsole, writeStderr } from "./telemetry/logger.ts";

/** Secrets generated at the first start. */
type FirstStart = { agentToken?: string; adminPassword?: string };

/** Shows the secrets generated at the first start, once, with the command that starts an agent. */
function printFirstStart(first: FirstStart, port: number) {
  if (!first.agentToken && !first.adminPassword) return;
  const lines = ["", "First start: these secrets are shown once and stored only as hashes."];
  if (first.agentToken) {
    lines.push(
      `  Agent token: ${first.agentToken}`,
      "  Start an agent on each Ollama machine with:",
      `    ${agentCommand(first.agentToken, port)}`,
    );
  }
  if (first.adminPassword) {
    lines.push(
      `  Admin password: ${first.adminPassword}`,
      `  Sign in to the dashboard at ${dashboardUrl(port)}`,
    );
  }
  lines.push("  Set AGENT_TOKEN / ADMIN_PASSWORD to choose your own instead.", "");
  console.log(lines.join("\n"));
}

function agentCommand(token: string, port: number): string {
  return `COORDINATOR_URL=http://${hostname()}:${port} AGENT_TOKEN=${token} deno task agent`;
}

function dashboardUrl(port: number): string {
  return `http://${hostname()}:${port}/dashboard`;
}

/** "1 agent", "2 agents". */
export function agentCount(n: number): string {
  return `${n} agent${n === 1 ? "" : "s"}`;
}

/**
 * What to do next when a coordinator starts with no agent at all (a first start without Ollama),
 * or null when it has some: where it looked for a local Ollama, and the ways to give it one.
 */
export function nextSteps(
  state: { agents: number; localOllama: LocalOllama | null; port: number; firstStart: boolean },
): { message: string; steps: string[] } | null {
  if (state.agents > 0) return null;
  const local = state.localOllama;
  const message = local?.found === "none"
    ? `No local Ollama answered at ${local.url} (LOCAL_OLLAMA_URL), and no agents are known yet`
    : "No agents are known yet";
  const command = state.firstStart
    ? "the command printed above"
    : agentCommand("<your agent token>", state.port);
  return {
    message,
    steps: [
      `On each machine that runs Ollama, start an agent: ${command}`,
      "No GPU at hand? `deno task demo` runs a coordinator with three simulated agents and traffic",
      "Or start a simulated Ollama here with `deno task simulator --port 11434`, then start the " +
      "coordinator again: it registers the Ollama it finds at LOCAL_OLLAMA_URL",
    ],
  };
}

/**
 * The first-start secrets as one JSON log line. They are the one exception to "no secrets in
 * logs": an operator who runs with JSON logs must still be able to read them once.
 */
function logFirstStart(logger: Logger, first: FirstStart, port: number) {
  if (!first.agentToken && !first.adminPassword) return;
  logger.info("First start: these secrets are shown once and stored only as hashes", {
    agent_token: first.agentToken,
    agent_command: first.agentToken ? agentCommand(first.agentToken, port) : undefined,
    admin_password: first.adminPassword,
    dashboard_url: first.adminPassword ? dashboardUrl(port) : undefined,
    hint: "Set AGENT_TOKEN / ADMIN_PASSWORD to choose your own instead",
  });
}

/**
 * Whether JSON logs were asked for, read from the raw flags and environment: a bad setting must be
 * reported in the asked-for format although the configuration could not be loaded.
 */
function jsonRequested(args: string[], env: Record<string, string | undefined>): boolean {
  let flag: string | undefined;
  for (const [i, arg] of args.entries()) {
    if (arg === "--log-format") flag = args[i + 1];
    else if (arg.startsWith("--log-format=")) flag = arg.slice("--log-format=".length);
  }
  return (flag ?? env.LOG_FORMAT) === "json";
}

/**
 * Tells stop signals apart: the first; the same one delivered again within `windowMs` (`deno
 * task`, npx, a terminal and systemd's `KillMode=control-group` each pass SIGTERM or SIGINT on,
 * so one stop often arrives twice within milliseconds); and a second one sent on purpose, later.
 */
export function signalCounter(
  options: { windowMs?: number; now?: () => number } = {},
): () => "first" | "repeat" | "second" {
  const windowMs = options.windowMs ?? 1000;
  const now = options.now ?? (() => performance.now());
  let first: number | undefined;
  return () => {
    if (first === undefined) {
      first = now();
      return "first";
    }
    return now() - first < windowMs ? "repeat" : "second";
  };
}

function describe(error: unknown): string {
  return error instanceof Error ? error.stack ?? error.message : String(error);
}

/**
 * In JSON mode: console output of every module, and uncaught errors, become JSON lines. An
 * uncaught error still ends the process, with exit code 1 as Deno's own handler would.
 */
function jsonEverywhere(): { out: Logger; err: Logger } {
  // Everything is written whatever LOG_LEVEL says, as in text mode: the level filters the
  // request and event lines, not the coordinator's own messages.
  const out = new Logger({ level: "debug", format: "json" });
  const err = new Logger({ level: "debug", format: "json", write: writeStderr });
  routeConsole(out, err);
  globalThis.addEventListener("error", (e) => {
    e.preventDefault();
    err.error("Uncaught error, stopping", { error: describe(e.error ?? e.message) });
    Deno.exit(1);
  });
  globalThis.addEventListener("unhandledrejection", (e) => {
    e.preventDefault();
    err.error("Unhandled promise rejection, stopping", { error: describe(e.reason) });
    Deno.exit(1);
  });
  return { out, err };
}

if (import.meta.main) {
  let config;
  try {
    config = loadConfig();
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e;
    if (jsonRequested(Deno.args, Deno.env.toObject())) {
      new Logger({ format: "json", write: writeStderr }).error(e.message, { exit_code: 2 });
    } else {
      console.error(e.message);
    }
    Deno.exit(2);
  }
  if (config === "help") {
    console.log(helpText());
    Deno.exit(0);
  }
  const logs = config.logFormat === "json" ? jsonEverywhere() : null;
  const json = logs?.out;
  // The stop signals are listened for before anything else: a stop during start-up waits for the
  // start and then drains, and Deno 2.9.6 sets up signal handling lazily and panics if descriptors
  // have run out by then (a flood of connections), so it must be set up before listening.
  let started: Coordinator | undefined;
  const signals = signalCounter();
  let forced = false;
  const stop = async (signal: string) => {
    const which = signals();
    if (which === "repeat") {
      // The stop already under way, delivered again: not a request to cut the drain short.
      if (json) json.info("Signal repeated within a second: taken as the same stop", { signal });
      else console.log(`${signal} again within a second: taken as the same stop`);
      return;
    }
    if (which === "second") {
      forced = true;
      // A second signal: stop now. What is flushed is kept; streams still running are cut.
      if (json) json.warn("Second signal: stopping now", { signal });
      else console.log(`Second ${signal}: stopping now`);
      if (started) {
        const { ctx } = started;
        ctx.upstream.cutAll("The coordinator is shutting down");
        // Whatever the store takes within a second is kept; the graceful stop may be closing it.
        await Promise.race([
          closeContext(ctx).catch(() => {}),
          new Promise((r) => setTimeout(r, 1000)),
        ]);
      }
      Deno.exit(signal === "SIGINT" ? 130 : 143);
    }
    if (json) {
      json.info("Stopping: finishing in-flight requests", {
        signal,
        shutdown_timeout_s: config.shutdownTimeout,
      });
    } else {
      console.log(`${signal} received: finishing in-flight requests, then stopping`);
    }
    // Stopped while starting: let the start finish, then stop what it started.
    const coordinator = await starting;
    // The start failed: its error ends the process.
    if (!coordinator) return;
    await coordinator.stop();
    // A second signal came meanwhile: it ends the process with its own exit code.
    if (forced) return;
    json?.info("Stopped", { signal });
    Deno.exit(0);
  };
  Deno.addSignalListener("SIGINT", () => stop("SIGINT"));
  if (Deno.build.os !== "windows") Deno.addSignalListener("SIGTERM", () => stop("SIGTERM"));
  // No await between the listeners and this line: a signal's handler always finds `starting`.
  const start = startCoordinator(config);
  const starting = start.then((c) => c, () => undefined);
  let coordinator: Coordinator;
  try {
    coordinator = started = await start;
  } catch (e) {
    if (!logs) throw e;
    logs.err.error("Cannot start the coordinator", { error: describe(e) });
    Deno.exit(1);
  }
  const { registry } = coordinator.ctx;
  const listening = `http://${config.host}:${coordinator.port}`;
  const port = config.port === 0 ? coordinator.port : config.port;
  const agents = registry.all().length;
  const next = nextSteps({
    agents,
    localOllama: coordinator.localOllama,
    port,
    firstStart: coordinator.firstStart.agentToken !== undefined,
  });
  if (json) {
    json.info("Ollama Coordinator listening", {
      address: listening,
      database: redactUrl(config.databaseUrl),
      agents,
      ollama_url: coordinator.url,
      openai_url: `${coordinator.url}/v1`,
    });
    logFirstStart(json, coordinator.firstStart, port);
    if (next) {
      json.info(next.message, {
        local_ollama_url: coordinator.localOllama?.url,
        next_steps: next.steps,
      });
    }
  } else {
    console.log(
      `Ollama Coordinator listening on ${listening} ` +
        `(database ${redactUrl(config.databaseUrl)}, ${agentCount(agents)} known)`,
    );
    console.log(
      `Point Ollama clients at ${coordinator.url} and OpenAI clients at ${coordinator.url}/v1`,
    );
    printFirstStart(coordinator.firstStart, port);
    if (next) {
      console.log([`${next.message}. Next:`, ...next.steps.map((s) => `  - ${s}`)].join("\n"));
    }
  }
}
