/**
 * The agent's settings: environment variables and command-line flags (flags win), validated with
 * zod. A bad value stops start-up with one line that names the setting and the value.
 *
 * `zod/mini` rather than zod's classic API: the same validation with lighter schema objects, which
 * keeps the idle agent's resident memory down (see shared/schemas.ts).
 */
import { parseArgs } from "node:util";
import * as z from "zod/mini";
import type { LogFormat, LogLevel } from "./log.ts";
import agentPackage from "./deno.json" with { type: "json" };

/** The agent's version, reported to the coordinator as `agent_version`. */
export const AGENT_VERSION: string = agentPackage.version;

/**
 * Intervals and limits that are not user settings; tests shrink them to run fast.
 * All values are milliseconds.
 */
export interface AgentTiming {
  /** How long to wait for a freshly started Ollama to answer `HEAD /`. */
  ollamaReadyTimeoutMs: number;
  /** Pause between two readiness probes. */
  ollamaProbeIntervalMs: number;
  /** First delay before restarting an Ollama that exited; doubles on each failure. */
  restartBackoffMinMs: number;
  /** Largest restart delay. */
  restartBackoffMaxMs: number;
  /** An Ollama that stayed up this long resets the restart delay to the minimum. */
  restartResetAfterMs: number;
  /** Time between SIGTERM and SIGKILL when stopping Ollama. */
  stopGraceMs: number;
  /** After Ollama exits, how long to keep reading output from children that hold its pipes. */
  pipeDrainMs: number;
  /** Least time between two progress reports to the coordinator. */
  progressPostMs: number;
  /** Least time between two progress log lines when the output is not a terminal. */
  progressLogMs: number;
  /** Retry delay after the coordinator rejected the agent token (401). */
  unauthorizedRetryMs: number;
  /** Timeout of one request to the coordinator or to Ollama's small endpoints. */
  requestTimeoutMs: number;
}

/** Default {@linkcode AgentTiming}. */
export const DEFAULT_TIMING: AgentTiming = {
  ollamaReadyTimeoutMs: 60_000,
  ollamaProbeIntervalMs: 250,
  restartBackoffMinMs: 1_000,
  restartBackoffMaxMs: 60_000,
  restartResetAfterMs: 60_000,
  stopGraceMs: 10_000,
  pipeDrainMs: 2_000,
  progressPostMs: 300,
  progressLogMs: 5_000,
  unauthorizedRetryMs: 30_000,
  requestTimeoutMs: 10_000,
};

/** Everything the agent needs to run. */
export interface AgentConfig {
  /**
   * Base URLs of the coordinators, without trailing slashes: the agent uses the first that
   * answers and moves to the next when it stops answering.
   */
  coordinatorUrls: string[];
  /** Port of the local Ollama. */
  ollamaPort: number;
  /** Address the Ollama the agent starts listens on (the host part of its `OLLAMA_HOST`). */
  ollamaBindHost: string;
  /** Name this machine registers under. */
  machineName: string;
  /** Limit of one model pull in seconds; 0 = none. */
  pullTimeoutSecs: number;
  /** Pause between two registration attempts in seconds; 0 = at once. */
  registerRetrySecs: number;
  /** Registration attempts at start-up before giving up; 0 = until it succeeds. */
  registerMaxRetries: number;
  /** The Ollama executable. */
  ollamaBin: string;
  /** Seconds between heartbeats unless the coordinator says otherwise. */
  heartbeatIntervalSecs: number;
  /** Host or IP the coordinator should use to reach this Ollama; detected when unset. */
  advertiseAddress?: string;
  /** Models to keep installed. */
  defaultModels: string[];
  /** Sent as `Authorization: Bearer` when registering. */
  agentToken?: string;
  /** `OLLAMA_NUM_PARALLEL` for the Ollama the agent starts; reported as `parallel`. */
  numParallel?: number;
  logFormat: LogFormat;
  logLevel: LogLevel;
  timing: AgentTiming;
}

/** A setting that cannot be used; its message is one line naming the setting and the value. */
export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ConfigError";
  }
}

type Key = Exclude<keyof AgentConfig, "timing">;

interface Setting {
  key: Key;
  env: string;
  flag: string;
  help: string;
  /** What a valid value looks like, for the error message. */
  expect: string;
  /** For comma-separated lists: what one entry looks like; a bad entry is named in the error. */
  item?: string;
  schema: z.ZodMiniType;
}

/** A trimmed string that must match `pattern`, then `next` (after `transform`, if any). */
const trimmed = (pattern: RegExp) => z.string().check(z.trim(), z.regex(pattern));
const intText = (min: number, max: number) =>
  z.pipe(
    z.pipe(trimmed(/^\d+$/), z.transform(Number)),
    z.int().check(z.gte(min), z.lte(max)),
  );
const secondsText = (min: number, max: number) =>
  z.pipe(
    z.pipe(trimmed(/^\d+(\.\d+)?$/), z.transform(Number)),
    z.number().check(z.gte(min), z.lte(max)),
  );
const hostText = z.string().check(
  z.trim(),
  z.minLength(1),
  z.maxLength(253),
  z.regex(/^[\w.:%\[\]-]+$/),
);
const lowerText = z.string().check(z.trim(), z.toLowerCase());
/** Comma-separated entries, trimmed, empty ones dropped, each checked by `entry`. */
const listText = (entry: z.ZodMiniType<string, string>) =>
  z.pipe(
    z.pipe(z.string(), z.transform((s) => s.split(",").map((m) => m.trim()).filter(Boolean))),
    z.array(entry),
  );
const httpUrl = z.pipe(
  z.url({ protocol: /^https?$/ }),
  z.transform((u) => u.replace(/\/+$/, "")),
);

/** Every setting, in the order `--help` lists them. */
export const SETTINGS: readonly Setting[] = [
  {
    key: "coordinatorUrls",
    env: "COORDINATOR_URL",
    flag: "coordinator-url",
    help: "Coordinator base URL, or several comma-separated: the first that answers is used " +
      "(default http://localhost:8080)",
    expect: "one or more comma-separated http:// or https:// URLs",
    item: "an http:// or https:// URL",
    schema: z.pipe(
      listText(httpUrl).check(z.minLength(1)),
      z.transform((urls) => [...new Set(urls)]),
    ),
  },
  {
    key: "ollamaPort",
    env: "OLLAMA_PORT",
    flag: "ollama-port",
    help: "Port of the local Ollama (default 11434)",
    expect: "an integer from 1 to 65535",
    schema: intText(1, 65535),
  },
  {
    key: "ollamaBindHost",
    env: "AGENT_OLLAMA_BIND",
    flag: "ollama-bind",
    help: "Address the Ollama started by the agent listens on (default 0.0.0.0)",
    expect: "an IP address or host name",
    schema: hostText,
  },
  {
    key: "machineName",
    env: "OLLAMA_AGENT_MACHINE_NAME",
    flag: "machine-name",
    help: "Name to register under (else OLLAMA_MACHINE_NAME, HOSTNAME, the host name)",
    expect: "1 to 128 characters",
    schema: z.string().check(z.trim(), z.minLength(1), z.maxLength(128)),
  },
  {
    key: "pullTimeoutSecs",
    env: "OLLAMA_PULL_TIMEOUT_SECS",
    flag: "pull-timeout-secs",
    help: "Limit of one model pull in seconds (default 0 = none)",
    expect: "a whole number of seconds, 0 or more",
    schema: intText(0, 10_000_000),
  },
  {
    key: "registerRetrySecs",
    env: "COORDINATOR_REGISTER_RETRY_SECS",
    flag: "register-retry-secs",
    help: "Seconds between registration attempts (default 5, 0 = at once)",
    expect: "a number of seconds, 0 or more",
    schema: secondsText(0, 86_400),
  },
  {
    key: "registerMaxRetries",
    env: "COORDINATOR_REGISTER_MAX_RETRIES",
    flag: "register-max-retries",
    help: "Registration attempts at start-up (default 0 = until it succeeds)",
    expect: "a whole number, 0 or more",
    schema: intText(0, 1_000_000),
  },
  {
    key: "ollamaBin",
    env: "OLLAMA_BIN",
    flag: "ollama-bin",
    help: "Ollama executable (default ollama on PATH)",
    expect: "a path or a command name",
    schema: z.string().check(z.trim(), z.minLength(1), z.maxLength(4096)),
  },
  {
    key: "heartbeatIntervalSecs",
    env: "HEARTBEAT_INTERVAL",
    flag: "heartbeat-interval",
    help: "Seconds between heartbeats (default 5; the coordinator's reply may override it)",
    expect: "a number of seconds from 0.01 to 3600",
    schema: secondsText(0.01, 3600),
  },
  {
    key: "advertiseAddress",
    env: "AGENT_ADVERTISE_ADDRESS",
    flag: "advertise-address",
    help: "IP or host the coordinator uses to reach this Ollama (default: detected)",
    expect: "an IP address or host name",
    schema: hostText,
  },
  {
    key: "defaultModels",
    env: "OLLAMA_DEFAULT_MODELS",
    flag: "default-models",
    help: "Comma-separated models to keep installed (pulled at start when missing)",
    expect: "comma-separated model names",
    item: "a model name without spaces, at most 253 characters",
    schema: listText(z.string().check(z.maxLength(253), z.regex(/^[^\s,]+$/))),
  },
  {
    key: "agentToken",
    env: "AGENT_TOKEN",
    flag: "agent-token",
    help: "Token sent when registering (prefer the variable: flags show in ps)",
    expect: "a token without spaces",
    schema: z.string().check(z.trim(), z.minLength(1), z.maxLength(4096), z.regex(/^\S+$/)),
  },
  {
    key: "numParallel",
    env: "OLLAMA_NUM_PARALLEL",
    flag: "num-parallel",
    help: "Parallel requests per model for the Ollama the agent starts; reported",
    expect: "an integer from 1 to 1024",
    schema: intText(1, 1024),
  },
  {
    key: "logFormat",
    env: "LOG_FORMAT",
    flag: "log-format",
    help: "text or json (default text)",
    expect: "text or json",
    schema: z.pipe(lowerText, z.enum(["text", "json"])),
  },
  {
    key: "logLevel",
    env: "LOG_LEVEL",
    flag: "log-level",
    help: "debug, info, warn or error (default info)",
    expect: "debug, info, warn or error",
    schema: z.pipe(lowerText, z.enum(["debug", "info", "warn", "error"])),
  },
];

const DEFAULTS = {
  coordinatorUrls: ["http://localhost:8080"],
  ollamaPort: 11434,
  ollamaBindHost: "0.0.0.0",
  pullTimeoutSecs: 0,
  registerRetrySecs: 5,
  registerMaxRetries: 0,
  ollamaBin: "ollama",
  heartbeatIntervalSecs: 5,
  defaultModels: [] as string[],
  logFormat: "text" as LogFormat,
  logLevel: "info" as LogLevel,
};

/** Builds a config from the defaults and `overrides`, without reading the environment. */
export function configFrom(
  overrides: Partial<Omit<AgentConfig, "timing">> & { timing?: Partial<AgentTiming> } = {},
): AgentConfig {
  const { timing, ...rest } = overrides;
  return {
    ...DEFAULTS,
    machineName: "localhost",
    ...rest,
    timing: { ...DEFAULT_TIMING, ...timing },
  };
}

/** What the command line asked for. */
export type LoadedConfig =
  | { action: "run"; config: AgentConfig }
  | { action: "help" }
  | { action: "version" };

/** Options of {@linkcode loadConfig}. */
export interface LoadConfigOptions {
  /** Environment variables; default `Deno.env.toObject()`. */
  env?: Record<string, string | undefined>;
  /** Host name when no setting names the machine; default `Deno.hostname()`. */
  hostname?: () => string;
}

/**
 * Reads the settings from `args` (flags) and the environment; a flag wins over its variable.
 * Throws {@linkcode ConfigError} for an unknown flag or a bad value.
 */
export function loadConfig(args: string[], options: LoadConfigOptions = {}): LoadedConfig {
  const flagOptions: Record<string, { type: "string" | "boolean" }> = {
    help: { type: "boolean" },
    version: { type: "boolean" },
  };
  for (const s of SETTINGS) flagOptions[s.flag] = { type: "string" };
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({ args, options: flagOptions, strict: true, allowPositionals: false }));
  } catch (error) {
    throw new ConfigError(`${(error as Error).message.split("\n")[0]} (see --help)`);
  }
  if (values.help) return { action: "help" };
  if (values.version) return { action: "version" };

  const env = options.env ?? Deno.env.toObject();
  const fromEnv = (name: string) => {
    const v = env[name];
    return v === undefined || v.trim() === "" ? undefined : v;
  };
  const out: Record<string, unknown> = { ...DEFAULTS };
  for (const s of SETTINGS) {
    const flagValue = values[s.flag] as string | undefined;
    let raw = flagValue ?? fromEnv(s.env);
    let source = flagValue !== undefined ? `--${s.flag}` : s.env;
    if (raw === undefined && s.key === "machineName") {
      for (const fallback of ["OLLAMA_MACHINE_NAME", "HOSTNAME"]) {
        raw = fromEnv(fallback);
        source = fallback;
        if (raw !== undefined) break;
      }
      if (raw === undefined) {
        raw = (options.hostname ?? Deno.hostname)();
        source = "the host name";
      }
    }
    if (raw === undefined) continue;
    const parsed = s.schema.safeParse(raw);
    if (!parsed.success) {
      // A list's bad entry is named on its own: "a,b,c" would leave the reader to find it.
      const index = parsed.error.issues[0]?.path[0];
      if (s.item && typeof index === "number") {
        const entries = raw.split(",").map((m) => m.trim()).filter(Boolean);
        const what = entries.length > 1 ? `${source} entry` : source;
        throw new ConfigError(
          `Invalid ${what} ${JSON.stringify(entries[index])}: expected ${s.item}`,
        );
      }
      throw new ConfigError(`Invalid ${source} ${JSON.stringify(raw)}: expected ${s.expect}`);
    }
    out[s.key] = parsed.data;
  }
  return {
    action: "run",
    config: { ...(out as Omit<AgentConfig, "timing">), timing: DEFAULT_TIMING },
  };
}

/** The `--help` text: usage and every setting with its variable and flag. */
export function helpText(): string {
  const rows = SETTINGS.map((s) => [`--${s.flag}`, s.env, s.help]);
  const w0 = Math.max(...rows.map((r) => r[0].length));
  const w1 = Math.max(...rows.map((r) => r[1].length));
  const lines = rows.map(([f, e, h]) => `  ${f.padEnd(w0)}  ${e.padEnd(w1)}  ${h}`);
  return [
    "ollama-coordinator-agent: keeps Ollama running on this machine and reports it to the coordinator",
    "",
    "Usage: ollama-coordinator-agent [flags]",
    "",
    "Each setting is a flag or an environment variable; a flag wins over its variable.",
    "",
    ...lines,
    `  ${"--help".padEnd(w0)}  ${"".padEnd(w1)}  Show this help`,
    `  ${"--version".padEnd(w0)}  ${"".padEnd(w1)}  Show the agent version`,
    "",
  ].join("\n");
}
