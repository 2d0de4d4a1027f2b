/**
 * The agent: keeps the local Ollama running, registers it with the coordinator, sends heartbeats
 * with the machine's metrics and models, and carries out the coordinator's pull/delete commands.
 *
 * `active_requests` is always reported as 0: Ollama exposes no count of requests in flight (its
 * `/api/ps` lists loaded models, not requests), and the coordinator counts the requests it sends.
 *
 * Run: `deno run --allow-net --allow-read --allow-env --allow-sys --allow-run agent/main.ts --help`
 * (`deno task agent` and the compiled executables run a bundle of this file instead, see
 * scripts/compile_agent.ts: same code, less resident memory).
 */
import type {
  AgentCommand,
  HealthRequest,
  InstalledModel,
  LoadedModel,
  RegisterRequest,
} from "@oc/shared";
import type { AgentConfig } from "./config.ts";
import { AGENT_VERSION, ConfigError, helpText, loadConfig } from "./config.ts";
import {
  CoordinatorClient,
  CoordinatorHttpError,
  createProgressReporter,
  isAuthError,
  isFailoverError,
  progressBody,
  registerWithRetry,
  registrationAddress,
} from "./coordinator_client.ts";
import type { Logger } from "./log.ts";
import { createLogger, silentLogger } from "./log.ts";
import type { MetricsSampler } from "./metrics.ts";
import { cpuCores, createMetricsSampler } from "./metrics.ts";
import { getOllamaVersion, listInstalledModels, listLoadedModels } from "./ollama_api.ts";
import type { SupervisorEvent } from "./supervisor.ts";
import { createSupervisor } from "./supervisor.ts";
import { errorMessage, sleep } from "./util.ts";

/** Milestones of a running agent; tests wait on these. */
export type AgentEvent =
  | { type: "ollama"; event: SupervisorEvent }
  | { type: "registered"; agentId: string; url: string }
  | { type: "heartbeat"; agentId: string; url: string }
  | { type: "command-finished"; command: AgentCommand; ok: boolean }
  | { type: "default-models-done"; pulled: string[]; failed: string[] };

/** Options of {@linkcode runAgent}. */
export interface RunAgentOptions {
  /** Stops the agent: heartbeats end, commands are cancelled, a started Ollama is stopped. */
  signal: AbortSignal;
  logger?: Logger;
  onEvent?: (event: AgentEvent) => void;
  /** Metrics source; default the machine's own. */
  metrics?: MetricsSampler;
}

interface OllamaState {
  up: boolean;
  version?: string;
  models?: InstalledModel[];
  loaded?: LoadedModel[];
}

async function readOllama(baseUrl: string, signal: AbortSignal): Promise<OllamaState> {
  // Three small requests per heartbeat; a version reply doubles as the liveness check.
  const [version, models, loaded] = await Promise.all([
    getOllamaVersion(baseUrl, { signal }).catch(() => undefined),
    listInstalledModels(baseUrl, { signal }).catch(() => undefined),
    listLoadedModels(baseUrl, { signal }).catch(() => undefined),
  ]);
  const up = version !== undefined || models !== undefined;
  return { up, version, models, loaded };
}

/** What the parts of a running agent share. */
interface Run {
  config: AgentConfig;
  signal: AbortSignal;
  logger: Logger;
  emit: (event: AgentEvent) => void;
  /** Base URL of the local Ollama. */
  ollama: string;
  client: CoordinatorClient;
  metrics: MetricsSampler;
  cores: number;
  /** The latest Ollama version seen; kept while Ollama is down. */
  version: string;
  /** Background work (commands, default-model pulls) awaited before the agent settles. */
  tasks: Set<Promise<unknown>>;
  /** Ids of commands already started, so a repeated command runs once. */
  seen: Set<string>;
  /** The model lists the coordinator last acknowledged, and how many beats ago they were sent. */
  sentModels?: { json: string; age: number };
  /** The address sent by the registration being tried. */
  address?: string;
  /** The coordinator the agent last registered with, and the address it registered under. */
  registered?: { url: string; address: string };
}

/**
 * Pulling and deleting models (and the progress bar) is loaded on first use: an agent without
 * default models may never need it, and every module loaded stays resident (issue #5's memory aim).
 */
function modelsModule(): Promise<typeof import("./models.ts")> {
  return modelsImport ??= import("./models.ts");
}
let modelsImport: Promise<typeof import("./models.ts")> | undefined;

/** Unchanged model lists are re-sent at least this often (a resync, in heartbeats). */
const MODELS_RESEND_EVERY = 12;

function track(run: Run, task: Promise<unknown>): void {
  run.tasks.add(task);
  task.finally(() => run.tasks.delete(task));
}

async function registerBody(run: Run): Promise<RegisterRequest> {
  const { config } = run;
  const [state, m, address] = await Promise.all([
    readOllama(run.ollama, run.signal),
    run.metrics.sample(),
    registrationAddress(run.client.baseUrl, {
      advertised: config.advertiseAddress,
      registered: run.registered,
    }),
  ]);
  if (state.version) run.version = state.version;
  run.address = address;
  return {
    machine_name: config.machineName,
    ip_address: address,
    ollama_version: run.version,
    ollama_port: config.ollamaPort,
    agent_version: AGENT_VERSION,
    os: Deno.build.os,
    parallel: config.numParallel,
    cpu_cores: run.cores,
    memory_total: m.memory_total,
    models: state.models ?? [],
    loaded_models: state.loaded ?? [],
    gpus: m.gpus,
  };
}

/** What the heartbeat being sent carries, acknowledged once the coordinator accepts it. */
const pendingModels = new WeakMap<Run, { json: string; age: number }>();

async function healthBody(run: Run): Promise<Omit<HealthRequest, "agent_id">> {
  const [state, m] = await Promise.all([readOllama(run.ollama, run.signal), run.metrics.sample()]);
  if (state.version) run.version = state.version;
  // Model lists are left out while Ollama is down, and while they have not changed since the
  // coordinator last acknowledged them (it keeps the last ones): most heartbeats stay small.
  const json = JSON.stringify([state.models, state.loaded]);
  const unchanged = run.sentModels?.json === json && run.sentModels.age < MODELS_RESEND_EVERY;
  pendingModels.set(run, { json, age: unchanged ? run.sentModels!.age + 1 : 0 });
  return {
    cpu_usage: m.cpu_usage,
    memory_usage: m.memory_usage,
    active_requests: 0,
    memory_used: m.memory_used,
    memory_total: m.memory_total,
    ollama_up: state.up,
    ollama_version: run.version,
    parallel: run.config.numParallel,
    gpus: m.gpus,
    ...(m.disk_free !== undefined ? { disk_free: m.disk_free, disk_total: m.disk_total } : {}),
    ...(unchanged ? {} : { models: state.models, loaded_models: state.loaded }),
  };
}

async function register(run: Run, maxRetries: number): Promise<boolean> {
  run.sentModels = undefined; // a new registration: send the lists with the next heartbeat too
  const reply = await registerWithRetry(run.client, () => registerBody(run), {
    retryMs: run.config.registerRetrySecs * 1000,
    maxRetries,
    unauthorizedRetryMs: run.config.timing.unauthorizedRetryMs,
    signal: run.signal,
    logger: run.logger,
  });
  if (!reply) return false;
  run.registered = { url: run.client.baseUrl, address: run.address! };
  run.emit({ type: "registered", agentId: reply.agent_id, url: run.client.baseUrl });
  return true;
}

function startCommand(run: Run, command: AgentCommand): void {
  const { logger, signal } = run;
  if (run.seen.has(command.id)) return;
  run.seen.add(command.id);
  if (run.seen.size > 1000) run.seen.delete(run.seen.values().next().value!);
  logger.info("Running coordinator command", {
    id: command.id,
    type: command.type,
    model: command.model,
  });
  const reporter = createProgressReporter(
    (p) => run.client.progress(progressBody(p), signal),
    { intervalMs: run.config.timing.progressPostMs, logger },
  );
  track(
    run,
    (async () => {
      const { runModelCommand } = await modelsModule();
      const final = await runModelCommand(run.ollama, command, {
        signal,
        pullTimeoutMs: run.config.pullTimeoutSecs * 1000,
        onProgress: (p) => reporter.update({ command_id: command.id, ...p }),
      });
      if (final.error) {
        logger.error(`Command ${command.type} failed: ${final.error}`, { id: command.id });
      } else {
        logger.info(`Command ${command.type} done`, { id: command.id, model: command.model });
      }
      if (!signal.aborted) await reporter.finish({ command_id: command.id, ...final });
      run.emit({ type: "command-finished", command, ok: !final.error });
    })(),
  );
}

async function heartbeatLoop(run: Run): Promise<void> {
  const { client, logger, signal } = run;
  let lastProblem = "";
  while (!signal.aborted) {
    const intervalSecs = client.heartbeatIntervalSecs ?? run.config.heartbeatIntervalSecs;
    await sleep(intervalSecs * 1000, signal);
    if (signal.aborted) break;
    try {
      const reply = await client.heartbeat(await healthBody(run), signal);
      run.sentModels = pendingModels.get(run);
      if (lastProblem) logger.info("Heartbeats are accepted again");
      lastProblem = "";
      run.emit({ type: "heartbeat", agentId: client.agentId!, url: client.baseUrl });
      for (const command of reply.commands ?? []) startCommand(run, command);
    } catch (error) {
      if (signal.aborted) break;
      if (error instanceof CoordinatorHttpError && error.status === 404) {
        logger.warn("Coordinator does not know this agent; registering again");
        if (!await register(run, 0)) break;
        lastProblem = "";
        continue;
      }
      if (isAuthError(error)) {
        const { status, detail } = error as CoordinatorHttpError;
        logger.error(
          status === 401
            ? "Coordinator rejected this agent's heartbeat credentials; registering again " +
              "(check AGENT_TOKEN if this repeats)"
            : `Coordinator refused this agent's heartbeat (status ${status}: ${detail}); ` +
              "registering again",
        );
        if (!await register(run, 0)) break;
        continue;
      }
      if (client.urls.length > 1 && isFailoverError(error)) {
        // The coordinator in use stopped answering: register with the next one that does.
        client.next();
        if (!await register(run, 0)) break;
        lastProblem = "";
        continue;
      }
      const problem = errorMessage(error);
      // An unreachable coordinator is already logged once by the client.
      if (problem !== lastProblem && run.client.reachable !== false) {
        logger.warn(`Heartbeat failed: ${problem}`);
      }
      lastProblem = problem;
    }
  }
}

/**
 * Runs the agent until `options.signal` aborts. Rejects when Ollama cannot be started (for
 * example `OllamaNotFoundError`) or registration at start-up used up its retries.
 * Everything it started is stopped before it settles.
 */
export async function runAgent(config: AgentConfig, options: RunAgentOptions): Promise<void> {
  // Aborted by options.signal, and also when the agent fails, so background work ends too.
  const stop = new AbortController();
  const signal = stop.signal;
  const logger = options.logger ?? silentLogger;
  const emit = (event: AgentEvent) => options.onEvent?.(event);
  const supervisor = createSupervisor({
    bin: config.ollamaBin,
    port: config.ollamaPort,
    bindHost: config.ollamaBindHost,
    numParallel: config.numParallel,
    logger,
    timing: config.timing,
    onEvent: (event) => emit({ type: "ollama", event }),
  });
  const tasks = new Set<Promise<unknown>>();
  // Stopping must also interrupt a start-up that is still waiting for Ollama.
  const onAbort = () => {
    stop.abort();
    supervisor.stop();
  };
  if (options.signal.aborted) onAbort();
  options.signal.addEventListener("abort", onAbort, { once: true });
  try {
    try {
      await supervisor.start();
    } catch (error) {
      if (signal.aborted) return;
      throw error;
    }
    if (signal.aborted) return;
    const run: Run = {
      config,
      signal,
      logger,
      emit,
      ollama: supervisor.baseUrl,
      client: new CoordinatorClient({
        baseUrl: config.coordinatorUrls,
        token: config.agentToken,
        logger,
        timeoutMs: config.timing.requestTimeoutMs,
      }),
      metrics: options.metrics ?? createMetricsSampler({ logger }),
      cores: cpuCores(),
      version: await getOllamaVersion(supervisor.baseUrl, { signal }).catch(() => "unknown"),
      tasks,
      seen: new Set(),
    };
    logger.info("Ollama version", { version: run.version });
    if (config.defaultModels.length > 0) {
      track(
        run,
        modelsModule().then(({ ensureModels }) =>
          ensureModels(run.ollama, config.defaultModels, {
            logger,
            signal,
            timeoutMs: config.pullTimeoutSecs * 1000,
            progressLogMs: config.timing.progressLogMs,
          })
        ).then(
          (r) => emit({ type: "default-models-done", ...r }),
          (error) => logger.error(`Cannot check the default models: ${errorMessage(error)}`),
        ),
      );
    }
    // Start-up registration honours COORDINATOR_REGISTER_MAX_RETRIES; later re-registrations
    // retry until they succeed, since the agent is otherwise healthy.
    if (!await register(run, config.registerMaxRetries)) return;
    await heartbeatLoop(run);
  } finally {
    options.signal.removeEventListener("abort", onAbort);
    stop.abort();
    await Promise.allSettled([...tasks]);
    await supervisor.stop();
  }
}

/**
 * The command-line entry: reads the settings, runs the agent until SIGINT/SIGTERM and returns
 * the exit code (0 after a clean stop, 1 on a start-up failure, 2 for a bad setting).
 */
export async function main(args: string[] = Deno.args): Promise<number> {
  let loaded;
  try {
    loaded = loadConfig(args);
  } catch (error) {
    if (error instanceof ConfigError) {
      console.error(error.message);
      return 2;
    }
    throw error;
  }
  if (loaded.action === "help") {
    console.log(helpText());
    return 0;
  }
  if (loaded.action === "version") {
    console.log(AGENT_VERSION);
    return 0;
  }
  const config = loaded.config;
  const logger = createLogger({ format: config.logFormat, level: config.logLevel });
  const controller = new AbortController();
  const signals: Deno.Signal[] = Deno.build.os === "windows" ? ["SIGINT"] : ["SIGINT", "SIGTERM"];
  const onSignal = () => {
    if (controller.signal.aborted) {
      logger.warn("Second stop signal; exiting at once");
      Deno.exit(130);
    }
    logger.info("Stopping the agent");
    controller.abort();
  };
  for (const s of signals) Deno.addSignalListener(s, onSignal);
  logger.info("Agent starting", {
    version: AGENT_VERSION,
    machine: config.machineName,
    coordinator: config.coordinatorUrls.join(", "),
    ollama_port: config.ollamaPort,
  });
  try {
    await runAgent(config, { signal: controller.signal, logger });
    logger.info("Agent stopped");
    return 0;
  } catch (error) {
    logger.error(errorMessage(error));
    return 1;
  } finally {
    for (const s of signals) Deno.removeSignalListener(s, onSignal);
  }
}

if (import.meta.main) {
  Deno.exit(await main());
}
