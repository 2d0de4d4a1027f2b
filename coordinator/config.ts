/**
 * Coordinator settings: environment variables and command-line flags (flags win), validated
 * with zod. A bad value stops start-up with one line naming the setting and the value.
 */
import { parseArgs } from "node:util";
import { z } from "zod";
import { parseNetwork } from "./security/networks.ts";

const seconds = z.coerce.number().positive().max(86_400);
const int = (min: number, max: number) => z.coerce.number().int().min(min).max(max);

/** Every setting: env name, flag name, schema, default and help line. */

/** A comma-separated list of CIDR networks. */
const networkList = z.string().transform((v, ctx) => {
  try {
    return v.split(",").map((n) => n.trim()).filter(Boolean).map(parseNetwork);
  } catch (e) {
    ctx.addIssue({ code: "custom", message: (e as Error).message });
    return z.NEVER;
  }
});
/**
 * Whether a configured agent token is hard enough to guess: long, and not a short pattern
 * repeated (`aaaaaaaaaaaaaaaa`, `abababababababab`).
 */
function strongToken(token: string): boolean {
  return token.length >= 16 && new Set(token).size >= 8;
}

const SETTINGS = {
  host: {
    env: "COORDINATOR_HOST",
    flag: "host",
    schema: z.string().trim().min(1),
    default: "0.0.0.0",
    help: "Address to listen on",
  },
  port: {
    env: "COORDINATOR_PORT",
    flag: "port",
    schema: int(0, 65535),
    default: "8080",
    help: "Port to listen on (0 picks a free one)",
  },
  databaseUrl: {
    env: "DATABASE_URL",
    flag: "database-url",
    schema: z.string().regex(
      /^(sqlite:(\/\/.+|:memory:)|postgres(ql)?:\/\/.+)$/,
      "expected sqlite://PATH, sqlite::memory: or postgres://USER:PASSWORD@HOST:PORT/DB",
    ),
    default: "sqlite://coordinator.db",
    help:
      "Database: sqlite://PATH (one coordinator) or postgres://USER:PASSWORD@HOST:PORT/DB (several)",
  },
  healthCheckInterval: {
    env: "HEALTH_CHECK_INTERVAL",
    flag: "health-check-interval",
    schema: seconds,
    default: "5",
    help: "Seconds between health checks (silent agents, Ollama probes)",
  },
  agentTimeout: {
    env: "AGENT_TIMEOUT",
    flag: "agent-timeout",
    schema: seconds,
    default: "20",
    help: "Seconds without a heartbeat before an agent is marked offline",
  },
  heartbeatInterval: {
    env: "AGENT_HEARTBEAT_INTERVAL",
    flag: "heartbeat-interval",
    schema: seconds,
    default: "5",
    help: "Seconds between agent heartbeats (told to agents when they register)",
  },
  agentToken: {
    env: "AGENT_TOKEN",
    flag: "agent-token",
    schema: z.string().refine(
      (v) => v === "" || strongToken(v),
      "must be at least 16 characters with at least 8 different ones (unset, one is generated)",
    ),
    default: "",
    secret: true,
    help:
      "Token agents must present to register, at least 16 characters (empty: one is generated at first start)",
  },
  adminPassword: {
    env: "ADMIN_PASSWORD",
    flag: "admin-password",
    schema: z.string().refine((v) => v === "" || v.length >= 8, "must be at least 8 characters"),
    default: "",
    secret: true,
    help: "Dashboard and admin API password (empty: one is generated at first start)",
  },
  apiKeys: {
    env: "API_KEYS",
    flag: "api-keys",
    schema: z.string().transform((v) => v.split(",").map((k) => k.trim()).filter(Boolean)),
    default: "",
    secret: true,
    help:
      "Comma-separated client API keys; any key (here or made in the dashboard) turns client auth on",
  },
  allowedNetworks: {
    env: "AGENT_ALLOWED_NETWORKS",
    flag: "agent-allowed-networks",
    schema: networkList,
    default: "",
    help: "Comma-separated CIDR networks agents may advertise (empty: any but link-local/metadata)",
  },
  trustedProxies: {
    env: "TRUSTED_PROXIES",
    flag: "trusted-proxies",
    schema: networkList,
    default: "",
    help:
      "Comma-separated CIDR networks of reverse proxies whose X-Forwarded-For names the client (sign-in limits)",
  },
  clientModelManagement: {
    env: "CLIENT_MODEL_MANAGEMENT",
    flag: "client-model-management",
    schema: z.enum(["true", "false", "1", "0"]).transform((v) => v === "true" || v === "1"),
    default: "true",
    help:
      "Let API clients pull, push, create, copy and delete models, as Ollama does (false: admins only)",
  },
  corsOrigins: {
    env: "OLLAMA_ORIGINS",
    flag: "origins",
    schema: z.string().transform((v) => v.split(",").map((o) => o.trim()).filter(Boolean)),
    default: "",
    help: "Extra browser origins allowed to call the Ollama/OpenAI API (local origins always are)",
  },
  allowedHosts: {
    env: "COORDINATOR_ALLOWED_HOSTS",
    flag: "allowed-hosts",
    schema: z.string().transform((v) => v.split(",").map((h) => h.trim()).filter(Boolean)),
    default: "",
    help:
      "Extra host names requests may be addressed to, globs allowed (* for any); this machine's name, IP addresses and local names always are",
  },
  probeTimeout: {
    env: "PROBE_TIMEOUT",
    flag: "probe-timeout",
    schema: seconds,
    default: "3",
    help: "Seconds to wait for an agent's Ollama to answer a probe",
  },
  probeInterval: {
    env: "PROBE_INTERVAL",
    flag: "probe-interval",
    schema: seconds,
    default: "30",
    help: "Least seconds between two probes of a healthy agent's Ollama",
  },
  schedulerPolicy: {
    env: "SCHEDULER_POLICY",
    flag: "scheduler-policy",
    schema: z.enum(["smart", "least_connections", "round_robin"]),
    default: "smart",
    help: "How to pick an agent: smart, least_connections or round_robin",
  },
  maxAttempts: {
    env: "MAX_ATTEMPTS",
    flag: "max-attempts",
    schema: int(1, 10),
    default: "3",
    help: "Agents tried per request before giving up",
  },
  queueMaxLength: {
    env: "QUEUE_MAX_LENGTH",
    flag: "queue-max-length",
    schema: int(0, 100_000),
    default: "256",
    help: "Requests per model that may wait for a free slot",
  },
  queueTimeout: {
    env: "QUEUE_TIMEOUT",
    flag: "queue-timeout",
    schema: seconds,
    default: "60",
    help: "Seconds a request may wait for a free slot",
  },
  firstByteTimeout: {
    env: "UPSTREAM_FIRST_BYTE_TIMEOUT",
    flag: "upstream-first-byte-timeout",
    schema: seconds,
    default: "300",
    help: "Seconds to wait for an agent's first byte (model load included) before trying another",
  },
  idleTimeout: {
    env: "UPSTREAM_IDLE_TIMEOUT",
    flag: "upstream-idle-timeout",
    schema: seconds,
    default: "120",
    help: "Seconds a started stream may stay silent before it is ended with an error",
  },
  clientMaxConnections: {
    env: "CLIENT_MAX_CONNECTIONS",
    flag: "client-max-connections",
    schema: z.union([z.literal("auto").transform(() => undefined), int(1, 1_000_000)]),
    default: "auto",
    help:
      "Most open client connections; at the cap the longest-idle one is closed for a new one (auto: from the descriptor limit)",
  },
  clientHeaderTimeout: {
    env: "CLIENT_HEADER_TIMEOUT",
    flag: "client-header-timeout",
    schema: seconds,
    default: "10",
    help: "Seconds a new client connection has to send its first request head",
  },
  clientIdleTimeout: {
    env: "CLIENT_IDLE_TIMEOUT",
    flag: "client-idle-timeout",
    schema: seconds,
    default: "60",
    help: "Seconds a kept-alive client connection may stay idle before it is closed",
  },
  clientBodyTimeout: {
    env: "CLIENT_BODY_TIMEOUT",
    flag: "client-body-timeout",
    schema: seconds,
    default: "60",
    help: "Seconds a request body may take to arrive (slower senders get 408)",
  },
  requestLogRetentionDays: {
    env: "REQUEST_LOG_RETENTION_DAYS",
    flag: "request-log-retention-days",
    schema: z.coerce.number().min(0).max(3650),
    default: "7",
    help: "Days the request log is kept (0 keeps nothing)",
  },
  requestLogMaxRows: {
    env: "REQUEST_LOG_MAX_ROWS",
    flag: "request-log-max-rows",
    schema: int(1000, 1_000_000_000),
    default: "1000000",
    help: "Most request-log rows kept (the newest), whatever their age",
  },
  eventRetentionDays: {
    env: "EVENT_RETENTION_DAYS",
    flag: "event-retention-days",
    schema: z.coerce.number().min(0).max(3650),
    default: "30",
    help: "Days fleet events are kept (at most EVENT_MAX_ROWS in any case)",
  },
  eventMaxRows: {
    env: "EVENT_MAX_ROWS",
    flag: "event-max-rows",
    schema: int(1000, 1_000_000_000),
    default: "100000",
    help: "Most fleet events kept (the newest), whatever their age",
  },
  logLevel: {
    env: "LOG_LEVEL",
    flag: "log-level",
    schema: z.enum(["debug", "info", "warn", "error"]),
    default: "info",
    help: "Least severe log level written: debug, info, warn or error",
  },
  logFormat: {
    env: "LOG_FORMAT",
    flag: "log-format",
    schema: z.enum(["text", "json"]),
    default: "text",
    help: "Log lines as text or JSON",
  },
  shutdownTimeout: {
    env: "SHUTDOWN_TIMEOUT",
    flag: "shutdown-timeout",
    schema: seconds,
    default: "30",
    help: "Seconds in-flight requests get to finish on SIGTERM",
  },
  metricsPublic: {
    env: "METRICS_PUBLIC",
    flag: "metrics-public",
    schema: z.enum(["true", "false", "1", "0"]).transform((v) => v === "true" || v === "1"),
    default: "false",
    help: "Serve /metrics without admin credentials",
  },
  autoRegisterLocal: {
    env: "AUTO_REGISTER_LOCAL_OLLAMA",
    flag: "auto-register-local",
    schema: z.enum(["true", "false", "1", "0"]).transform((v) => v === "true" || v === "1"),
    default: "true",
    help: "Register an Ollama already running on this machine (127.0.0.1:11434)",
  },
  placementMaxPulls: {
    env: "PLACEMENT_MAX_PULLS",
    flag: "placement-max-pulls",
    schema: int(1, 1000),
    default: "2",
    help: "Most pulls placement rules run at once in the whole fleet",
  },
  placementMaxPullsPerAgent: {
    env: "PLACEMENT_PULLS_PER_AGENT",
    flag: "placement-pulls-per-agent",
    schema: int(1, 100),
    default: "1",
    help: "Most pulls placement rules run at once on one agent",
  },
  placementInterval: {
    env: "PLACEMENT_INTERVAL",
    flag: "placement-interval",
    // Each round plans every rule over every agent: not more often than once a second.
    schema: z.coerce.number().min(1).max(86_400),
    default: "10",
    help: "Seconds between two comparisons of the placement rules with the fleet",
  },
  localOllamaUrl: {
    env: "LOCAL_OLLAMA_URL",
    flag: "local-ollama-url",
    schema: z.url({ protocol: /^https?$/ }),
    default: "http://127.0.0.1:11434",
    help: "Where to look for a local Ollama to register",
  },
} as const;

type Settings = typeof SETTINGS;
/** The validated configuration. */
export type Config = { [K in keyof Settings]: z.output<Settings[K]["schema"]> };

/** Thrown for a bad setting; main prints the message as one line and exits. */
export class ConfigError extends Error {
  override name = "ConfigError";
}

/** Help text listing every setting with its env name, flag and default. */
export function helpText(): string {
  const lines = [
    "Usage: deno task coordinator [flags]",
    "",
    "Settings (flag or environment variable; flags win):",
  ];
  for (const s of Object.values(SETTINGS)) {
    const fallback = s.default ? ` (default: ${s.default})` : "";
    lines.push(`  --${s.flag.padEnd(28)} ${s.env.padEnd(28)} ${s.help}${fallback}`);
  }
  lines.push("  --help                       Show this help");
  return lines.join("\n");
}

/**
 * Reads settings from `args` (flags) and `env`; flags win over env, env over defaults.
 * Returns `"help"` when --help was asked for.
 */
export function loadConfig(
  args: string[] = Deno.args,
  env: Record<string, string | undefined> = Deno.env.toObject(),
): Config | "help" {
  const options: Record<string, { type: "string" }> = {};
  for (const s of Object.values(SETTINGS)) options[s.flag] = { type: "string" };
  let parsed;
  try {
    parsed = parseArgs({
      args,
      options: { ...options, help: { type: "boolean", short: "h" } },
      allowPositionals: false,
    });
  } catch (e) {
    throw new ConfigError(`Cannot read command line: ${(e as Error).message}`);
  }
  if (parsed.values.help) return "help";
  const out: Record<string, unknown> = {};
  for (const [key, s] of Object.entries(SETTINGS)) {
    const flagValue = (parsed.values as Record<string, unknown>)[s.flag] as string | undefined;
    const raw = flagValue ?? env[s.env] ?? s.default;
    const source = flagValue !== undefined ? `--${s.flag}` : s.env;
    const result = (s.schema as z.ZodType).safeParse(raw);
    if (!result.success) {
      // A secret's value is never printed: start-up errors end up in logs.
      const shown = "secret" in s ? " (value not shown)" : `=${JSON.stringify(raw)}`;
      throw new ConfigError(
        `Invalid setting ${source}${shown}: ${result.error.issues[0]?.message}`,
      );
    }
    out[key] = result.data;
  }
  return out as Config;
}

/** The agent token {@linkcode testConfig} sets. */
export const TEST_AGENT_TOKEN = "test-agent-token";
/** The admin password {@linkcode testConfig} sets. */
export const TEST_ADMIN_PASSWORD = "test-admin-password";

/** A configuration for tests: in-memory database, loopback, ephemeral port. */
export function testConfig(overrides: Partial<Config> = {}): Config {
  const c = loadConfig([], {
    COORDINATOR_HOST: "127.0.0.1",
    COORDINATOR_PORT: "0",
    DATABASE_URL: "sqlite::memory:",
    AUTO_REGISTER_LOCAL_OLLAMA: "false",
    LOG_LEVEL: "error",
    AGENT_TOKEN: TEST_AGENT_TOKEN,
    ADMIN_PASSWORD: TEST_ADMIN_PASSWORD,
  }) as Config;
  return { ...c, ...overrides };
}
