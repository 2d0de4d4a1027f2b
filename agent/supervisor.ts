/**
 * Keeps `ollama serve` running: starts it when nothing answers on the Ollama port, restarts it
 * with exponential backoff when it exits, pipes its output into the agent's log and stops it with
 * the agent. An Ollama the agent did not start is used as it is and never stopped.
 *
 * The Ollama the agent starts gets `OLLAMA_HOST=<bind>:<OLLAMA_PORT>` (bind defaults to 0.0.0.0 so
 * the coordinator can reach it). An `OLLAMA_HOST` in the agent's own environment is overridden on
 * purpose: OLLAMA_PORT is the one port the agent probes and advertises, and on client machines
 * OLLAMA_HOST often names a remote server rather than a listen address.
 */
import type { AgentTiming } from "./config.ts";
import { DEFAULT_TIMING } from "./config.ts";
import type { Logger } from "./log.ts";
import { silentLogger } from "./log.ts";
import { isOllamaUp, ollamaUrl } from "./ollama_api.ts";
import { errorMessage, readLines, sleep } from "./util.ts";

/** The Ollama executable could not be found; the message says how to install it. */
export class OllamaNotFoundError extends Error {
  constructor(bin: string) {
    super(
      `Cannot start Ollama: "${bin}" was not found; install Ollama from ` +
        `https://ollama.com/download or set OLLAMA_BIN to the path of the ollama executable`,
    );
    this.name = "OllamaNotFoundError";
  }
}

/** What happened to the supervised Ollama; tests wait on these. */
export type SupervisorEvent =
  | { type: "external" }
  | { type: "spawned"; pid: number }
  | { type: "ready"; pid: number }
  | { type: "exited"; pid: number; code: number; signal: Deno.Signal | null }
  | { type: "restart-scheduled"; delayMs: number }
  | { type: "spawn-failed"; error: string }
  | { type: "stopped" };

/** Options of {@linkcode createSupervisor}. */
export interface SupervisorOptions {
  /** The Ollama executable (OLLAMA_BIN). */
  bin: string;
  port: number;
  /** Listen address of the Ollama the agent starts (default 0.0.0.0). */
  bindHost?: string;
  /** Passed as OLLAMA_NUM_PARALLEL to the Ollama the agent starts. */
  numParallel?: number;
  logger?: Logger;
  timing?: Partial<AgentTiming>;
  onEvent?: (event: SupervisorEvent) => void;
}

/** Handle on the local Ollama. */
export interface OllamaSupervisor {
  /** Where the local Ollama answers (loopback). */
  readonly baseUrl: string;
  /** True when the agent started Ollama (and so will stop it). */
  readonly managed: boolean;
  /** Process id of the Ollama the agent is running now, if any. */
  readonly pid: number | undefined;
  /** How many times Ollama has been restarted. */
  readonly restarts: number;
  /**
   * Uses a running Ollama, or starts one and waits until it answers `HEAD /`.
   * Throws {@linkcode OllamaNotFoundError} for a missing executable, or an error when the
   * started Ollama did not answer in time (it is stopped then).
   */
  start(): Promise<"external" | "started">;
  /** Stops the Ollama the agent started: SIGTERM, then SIGKILL after the grace period. */
  stop(): Promise<void>;
}

function listenAddress(host: string, port: number): string {
  return host.includes(":") && !host.startsWith("[") ? `[${host}]:${port}` : `${host}:${port}`;
}

function inheritedOllamaHost(): string | undefined {
  try {
    return Deno.env.get("OLLAMA_HOST") || undefined;
  } catch {
    return undefined;
  }
}

/** Pure: the restart delay after `failures` quick exits in a row: min·2ⁿ, capped at max. */
export function backoffDelay(failures: number, minMs: number, maxMs: number): number {
  return Math.min(maxMs, minMs * 2 ** Math.min(failures, 30));
}

/** Creates a supervisor for the Ollama on `options.port`; nothing runs until `start()`. */
export function createSupervisor(options: SupervisorOptions): OllamaSupervisor {
  const timing = { ...DEFAULT_TIMING, ...options.timing };
  const logger = options.logger ?? silentLogger;
  const baseUrl = ollamaUrl(options.port);
  const emit = (event: SupervisorEvent) => options.onEvent?.(event);
  const stopping = new AbortController();
  let managed = false;
  let child: Deno.ChildProcess | undefined;
  let childDone: Promise<void> | undefined;
  let restartTimer: ReturnType<typeof setTimeout> | undefined;
  let failures = 0;
  let restarts = 0;
  const probes = new Set<Promise<void>>();
  const readyWaiters = new Set<() => void>();

  async function pump(stream: ReadableStream<Uint8Array>, signal: AbortSignal): Promise<void> {
    try {
      for await (const line of readLines(stream, signal)) {
        if (line.trim()) logger.info(`ollama: ${line}`);
      }
    } catch {
      // The pipe broke with the process; nothing more to read.
    }
  }

  function spawn(): void {
    const env: Record<string, string> = {
      OLLAMA_HOST: listenAddress(options.bindHost ?? "0.0.0.0", options.port),
    };
    if (options.numParallel) env.OLLAMA_NUM_PARALLEL = String(options.numParallel);
    let proc: Deno.ChildProcess;
    try {
      proc = new Deno.Command(options.bin, {
        args: ["serve"],
        env,
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
      }).spawn();
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) throw new OllamaNotFoundError(options.bin);
      throw new Error(`Cannot start Ollama "${options.bin}": ${errorMessage(error)}`);
    }
    managed = true;
    child = proc;
    const spawnedAt = Date.now();
    let readyAt: number | undefined;
    const pid = proc.pid;
    logger.info("Started Ollama", { pid, bin: options.bin, host: env.OLLAMA_HOST });
    emit({ type: "spawned", pid });
    // Ollama's model runners may inherit the pipes and outlive a killed Ollama: after the exit,
    // read what is left for a moment, then let go of the pipes.
    const drain = new AbortController();
    const pipes = Promise.all([pump(proc.stdout, drain.signal), pump(proc.stderr, drain.signal)]);
    childDone = (async () => {
      const status = await proc.status;
      const drainTimer = setTimeout(() => drain.abort(), timing.pipeDrainMs);
      await pipes;
      clearTimeout(drainTimer);
      if (child === proc) child = undefined;
      emit({ type: "exited", pid, code: status.code, signal: status.signal });
      if (stopping.signal.aborted) return;
      logger.warn("Ollama exited", { pid, code: status.code, signal: status.signal ?? undefined });
      // Only an Ollama that was healthy for a while counts as a fresh start.
      if (readyAt !== undefined && Date.now() - spawnedAt >= timing.restartResetAfterMs) {
        failures = 0;
      }
      scheduleRestart();
    })();
    // Watch readiness in the background, so restarts announce themselves too.
    const probe = (async () => {
      while (!stopping.signal.aborted && child === proc) {
        if (await isOllamaUp(baseUrl, { signal: stopping.signal, timeoutMs: 2_000 })) {
          if (child !== proc) return;
          readyAt = Date.now();
          logger.info("Ollama is up", { pid, url: baseUrl });
          emit({ type: "ready", pid });
          for (const wake of readyWaiters) wake();
          return;
        }
        await sleep(timing.ollamaProbeIntervalMs, stopping.signal);
      }
    })();
    probes.add(probe);
    probe.finally(() => probes.delete(probe));
  }

  function scheduleRestart(): void {
    const delayMs = backoffDelay(failures, timing.restartBackoffMinMs, timing.restartBackoffMaxMs);
    failures++;
    logger.info("Restarting Ollama", { in_ms: delayMs });
    emit({ type: "restart-scheduled", delayMs });
    restartTimer = setTimeout(() => {
      restartTimer = undefined;
      if (stopping.signal.aborted) return;
      restarts++;
      try {
        spawn();
      } catch (error) {
        logger.error(errorMessage(error));
        emit({ type: "spawn-failed", error: errorMessage(error) });
        scheduleRestart();
      }
    }, delayMs);
  }

  /** Resolves true at the next "ready" of any Ollama the agent runs, false on timeout or stop. */
  function waitUntilReady(): Promise<boolean> {
    return new Promise((resolve) => {
      const finish = (ready: boolean) => {
        clearTimeout(timer);
        stopping.signal.removeEventListener("abort", onAbort);
        readyWaiters.delete(onReady);
        resolve(ready);
      };
      const onReady = () => finish(true);
      const onAbort = () => finish(false);
      const timer = setTimeout(onAbort, timing.ollamaReadyTimeoutMs);
      readyWaiters.add(onReady);
      stopping.signal.addEventListener("abort", onAbort, { once: true });
    });
  }

  let stopped: Promise<void> | undefined;
  function stop(): Promise<void> {
    stopped ??= stopOnce();
    return stopped;
  }

  async function stopOnce(): Promise<void> {
    stopping.abort();
    if (restartTimer !== undefined) clearTimeout(restartTimer);
    restartTimer = undefined;
    const proc = child;
    const done = childDone;
    if (proc && done) {
      logger.info("Stopping Ollama", { pid: proc.pid });
      try {
        proc.kill("SIGTERM");
      } catch {
        // Already gone.
      }
      let graceTimer: ReturnType<typeof setTimeout> | undefined;
      const exited = await Promise.race([
        done.then(() => true),
        new Promise<false>((resolve) => {
          graceTimer = setTimeout(() => resolve(false), timing.stopGraceMs);
        }),
      ]);
      clearTimeout(graceTimer);
      if (!exited) {
        logger.warn("Ollama did not stop in time; killing it", { pid: proc.pid });
        try {
          proc.kill("SIGKILL");
        } catch {
          // Already gone.
        }
      }
      await done;
    } else if (done) {
      await done;
    }
    await Promise.all(probes);
    if (managed) emit({ type: "stopped" });
  }

  return {
    baseUrl,
    get managed() {
      return managed;
    },
    get pid() {
      return child?.pid;
    },
    get restarts() {
      return restarts;
    },
    async start() {
      if (stopped) throw new Error("Cannot start Ollama: the agent is stopping");
      if (await isOllamaUp(baseUrl, { signal: stopping.signal, timeoutMs: 2_000 })) {
        logger.info("Using the Ollama already running; it will not be stopped", { url: baseUrl });
        emit({ type: "external" });
        return "external";
      }
      if (stopped) throw new Error("Cannot start Ollama: the agent is stopping");
      const inherited = inheritedOllamaHost();
      const host = listenAddress(options.bindHost ?? "0.0.0.0", options.port);
      if (inherited && inherited !== host) {
        logger.warn("Ignoring OLLAMA_HOST for the Ollama the agent starts", {
          inherited,
          used: host,
          hint: "set OLLAMA_PORT and AGENT_OLLAMA_BIND instead",
        });
      }
      const ready = waitUntilReady();
      try {
        spawn();
      } catch (error) {
        await stop();
        throw error;
      }
      if (await ready) return "started";
      const aborted = stopped !== undefined;
      await stop();
      if (aborted) throw new Error("Cannot start Ollama: the agent is stopping");
      throw new Error(
        `Cannot start Ollama: nothing answered on port ${options.port} within ` +
          `${timing.ollamaReadyTimeoutMs / 1000} s`,
      );
    },
    stop,
  };
}
