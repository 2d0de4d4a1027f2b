/**
 * The agent as a library: what tests, the demo and other programs use to run agents in-process.
 * The program itself is `main.ts`.
 *
 * ```ts
 * import { configFrom, runAgent } from "./agent/mod.ts";
 * const controller = new AbortController();
 * const done = runAgent(configFrom({ ollamaPort: 11434 }), { signal: controller.signal });
 * // … later
 * controller.abort();
 * await done;
 * ```
 */
export { type AgentEvent, main, runAgent, type RunAgentOptions } from "./main.ts";
export {
  AGENT_VERSION,
  type AgentConfig,
  type AgentTiming,
  ConfigError,
  configFrom,
  DEFAULT_TIMING,
  helpText,
  loadConfig,
  type LoadedConfig,
} from "./config.ts";
export {
  createSupervisor,
  OllamaNotFoundError,
  type OllamaSupervisor,
  type SupervisorEvent,
  type SupervisorOptions,
} from "./supervisor.ts";
export {
  CoordinatorClient,
  CoordinatorHttpError,
  detectAdvertiseAddress,
  registerWithRetry,
} from "./coordinator_client.ts";
export {
  createGpuSampler,
  createMetricsSampler,
  type MetricsSampler,
  parseNvidiaSmi,
  parseProcStat,
  parseRocmSmi,
  parseSystemProfiler,
  type SystemMetrics,
} from "./metrics.ts";
export { deleteModel, ensureModels, pullModel, type PullProgress } from "./models.ts";
export { createLogger, type LogFormat, type Logger, type LogLevel, silentLogger } from "./log.ts";
