/**
 * The simulator's command line, which behaves like `ollama serve` for a supervisor: `serve`,
 * `OLLAMA_HOST`, `--version`, a clean exit on SIGINT/SIGTERM. `scripts/fake-ollama` runs it as
 * the `ollama` binary.
 *
 * `deno task simulator --help`
 *
 * @module
 */
import { parseArgs } from "node:util";
import { parseFault } from "./faults.ts";
import { type SimOptions, type Simulator, startSimulator } from "./server.ts";

/** Parses OLLAMA_HOST as `ollama serve` does: `host:port`, `host`, `:port`, `http://host:port`. */
export function parseOllamaHost(
  value: string | undefined,
): { hostname: string; port: number } {
  const fallback = { hostname: "127.0.0.1", port: 11434 };
  let s = (value ?? "").trim();
  if (s === "") return fallback;
  let defaultPort = 11434;
  const scheme = s.indexOf("://");
  if (scheme !== -1) {
    const proto = s.slice(0, scheme).toLowerCase();
    if (proto === "http") defaultPort = 80;
    if (proto === "https") defaultPort = 443;
    s = s.slice(scheme + 3);
  }
  s = s.split("/")[0];
  let hostname: string;
  let port: string;
  const v6 = s.match(/^\[([^\]]*)\](?::(\d*))?$/);
  if (v6) [hostname, port] = [v6[1], v6[2] ?? ""];
  else if ((s.match(/:/g) ?? []).length === 1) [hostname, port] = s.split(":");
  else [hostname, port] = [s, ""];
  const n = port === "" ? defaultPort : Number(port);
  if (!Number.isInteger(n) || n < 0 || n > 65535) return fallback;
  // An empty host with a port listens on every interface, as Go's net.Listen(":port") does.
  if (hostname === "") hostname = port === "" ? "127.0.0.1" : "0.0.0.0";
  return { hostname, port: n };
}

const HELP = `Ollama simulator: speaks Ollama's API without a GPU.

Usage: deno task simulator [serve] [options]   (or simulator/cli.ts, scripts/fake-ollama)

Options (flags win over environment variables):
  --host H          listen address, same forms as OLLAMA_HOST (env OLLAMA_HOST; 127.0.0.1:11434)
  --port N          listen port
  --models a,b      installed models (SIM_MODELS; llama3.2:latest,nomic-embed-text:latest)
  --loaded a,b      models in memory at start (SIM_LOADED)
  --tps N           tokens per second (SIM_TPS; 500)
  --ttft MS         time to first token (SIM_TTFT_MS; 5)
  --load MS         model load time (SIM_LOAD_MS; 0)
  --pull MS         how long a pull's download takes (SIM_PULL_MS; 0)
  --parallel N      slots per model (SIM_PARALLEL, then OLLAMA_NUM_PARALLEL; 4)
  --max-queue N     waiting requests before 503 (SIM_MAX_QUEUE, then OLLAMA_MAX_QUEUE; 512)
  --fault F         none | refuse | busy | hang | die_after:N (SIM_FAULT; none)
  --quiet           no request log, no start-up line
  -v, --version     print "ollama version is X"
  -h, --help        this help
`;

/** Builds the simulator options from CLI arguments and environment variables. */
export function cliOptions(
  args: string[],
  env: (name: string) => string | undefined,
): SimOptions & { help?: boolean; printVersion?: boolean } {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      host: { type: "string" },
      port: { type: "string" },
      models: { type: "string" },
      loaded: { type: "string" },
      tps: { type: "string" },
      ttft: { type: "string" },
      load: { type: "string" },
      pull: { type: "string" },
      parallel: { type: "string" },
      "max-queue": { type: "string" },
      fault: { type: "string" },
      quiet: { type: "boolean" },
      version: { type: "boolean", short: "v" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (
    positionals.length > 1 ||
    (positionals[0] !== undefined && positionals[0] !== "serve")
  ) {
    throw new TypeError(
      `Cannot run "${positionals.join(" ")}": only "serve" is simulated`,
    );
  }
  const number = (flag: string, value: string | undefined, integer = false) => {
    if (value === undefined || value === "") return undefined;
    const n = Number(value);
    if (!Number.isFinite(n) || n < 0 || (integer && !Number.isInteger(n))) {
      throw new RangeError(
        `Cannot use ${flag} "${value}": expected a number >= 0`,
      );
    }
    return n;
  };
  const list = (value: string | undefined) =>
    value === undefined ? undefined : value.split(",").map((s) => s.trim()).filter(Boolean);
  const { hostname, port } = parseOllamaHost(values.host ?? env("OLLAMA_HOST"));
  const fault = values.fault ?? env("SIM_FAULT");
  return {
    help: values.help,
    printVersion: values.version,
    hostname,
    port: number("--port", values.port, true) ?? port,
    models: list(values.models ?? env("SIM_MODELS")),
    loaded: list(values.loaded ?? env("SIM_LOADED")),
    tokensPerSecond: number("--tps", values.tps ?? env("SIM_TPS")),
    ttftMs: number("--ttft", values.ttft ?? env("SIM_TTFT_MS")),
    loadMs: number("--load", values.load ?? env("SIM_LOAD_MS")),
    pullMs: number("--pull", values.pull ?? env("SIM_PULL_MS")),
    parallel: number(
      "--parallel",
      values.parallel ?? env("SIM_PARALLEL") ?? env("OLLAMA_NUM_PARALLEL"),
      true,
    ),
    maxQueue: number(
      "--max-queue",
      values["max-queue"] ?? env("SIM_MAX_QUEUE") ?? env("OLLAMA_MAX_QUEUE"),
      true,
    ),
    fault: fault === undefined ? undefined : parseFault(fault),
    quiet: values.quiet,
  };
}

async function main(): Promise<void> {
  let opts: ReturnType<typeof cliOptions>;
  try {
    opts = cliOptions(Deno.args, (name) => Deno.env.get(name));
  } catch (e) {
    console.error(`Error: ${(e as Error).message}\n\n${HELP}`);
    Deno.exit(2);
  }
  if (opts.help) {
    console.log(HELP);
    return;
  }
  if (opts.printVersion) {
    console.log(`ollama version is ${opts.version ?? "0.12.6"}`);
    return;
  }
  const { help: _h, printVersion: _v, ...simOptions } = opts;
  // Drop undefined values so the defaults apply.
  const clean = Object.fromEntries(
    Object.entries(simOptions).filter(([, v]) => v !== undefined),
  ) as SimOptions;
  let sim: Simulator;
  try {
    sim = await startSimulator(clean);
  } catch (e) {
    console.error(
      `Error: Cannot listen on ${clean.hostname}:${clean.port}: ${(e as Error).message}`,
    );
    Deno.exit(1);
  }
  if (!clean.quiet) {
    console.error(
      `[sim] Listening on ${sim.url.replace("http://", "")} (version ${clean.version ?? "0.12.6"})`,
    );
  }
  const stop = async () => {
    await sim.close();
    Deno.exit(0);
  };
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    try {
      Deno.addSignalListener(signal, () => void stop());
    } catch {
      // SIGTERM cannot be listened to on Windows.
    }
  }
}

if (import.meta.main) await main();
