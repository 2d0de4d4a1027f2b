/**
 * Pulling and deleting models on the local Ollama, with progress; keeping the default models
 * installed.
 */
import type { AgentCommand, CommandProgress } from "@oc/shared";
import { normalizeModelName } from "@oc/shared";
import type { Logger } from "./log.ts";
import { silentLogger } from "./log.ts";
import { listInstalledModels } from "./ollama_api.ts";
import { errorMessage, readLines } from "./util.ts";

/** One progress line of `/api/pull`. */
export interface PullProgress {
  status: string;
  digest?: string;
  total?: number;
  completed?: number;
}

/** Options of {@linkcode pullModel}. */
export interface PullOptions {
  /** Stops the pull (the agent is stopping). */
  signal?: AbortSignal;
  /** Limit of the whole pull in milliseconds; 0 or unset = none (OLLAMA_PULL_TIMEOUT_SECS). */
  timeoutMs?: number;
  /** Called for every progress line Ollama sends. */
  onProgress?: (progress: PullProgress) => void;
}

async function errorText(res: Response): Promise<string> {
  const text = await res.text().catch(() => "");
  try {
    const body = JSON.parse(text);
    if (typeof body?.error === "string") return body.error;
  } catch {
    // Not JSON: use the text itself.
  }
  return text.trim().slice(0, 200) || `status ${res.status}`;
}

function toProgress(line: Record<string, unknown>): PullProgress {
  const p: PullProgress = { status: typeof line.status === "string" ? line.status : "" };
  if (typeof line.digest === "string") p.digest = line.digest;
  if (typeof line.total === "number" && line.total >= 0) p.total = Math.trunc(line.total);
  if (typeof line.completed === "number" && line.completed >= 0) {
    p.completed = Math.trunc(line.completed);
  }
  return p;
}

/**
 * Pulls `model` through `POST /api/pull` (streaming) and resolves once Ollama reports
 * `success`. Throws with Ollama's message when the pull fails, stops early or times out.
 */
export async function pullModel(
  baseUrl: string,
  model: string,
  options: PullOptions = {},
): Promise<void> {
  const signals: AbortSignal[] = [];
  if (options.signal) signals.push(options.signal);
  const timeout = options.timeoutMs ? AbortSignal.timeout(options.timeoutMs) : undefined;
  if (timeout) signals.push(timeout);
  const signal = signals.length ? AbortSignal.any(signals) : undefined;
  try {
    const res = await fetch(`${baseUrl}/api/pull`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model, stream: true }),
      signal,
    });
    if (!res.ok || !res.body) {
      throw new Error(`Cannot pull model "${model}": ${await errorText(res)}`);
    }
    let succeeded = false;
    for await (const text of readLines(res.body)) {
      if (!text.trim()) continue;
      let line: Record<string, unknown>;
      try {
        line = JSON.parse(text);
      } catch {
        continue;
      }
      if (typeof line.error === "string") {
        throw new Error(`Cannot pull model "${model}": ${line.error}`);
      }
      const progress = toProgress(line);
      options.onProgress?.(progress);
      if (progress.status === "success") succeeded = true;
    }
    if (!succeeded) throw new Error(`Cannot pull model "${model}": the stream ended early`);
  } catch (error) {
    if (timeout?.aborted && !options.signal?.aborted) {
      throw new Error(
        `Cannot pull model "${model}": timed out after ${options.timeoutMs! / 1000} s`,
      );
    }
    if (options.signal?.aborted) {
      throw new Error(`Cannot pull model "${model}": the agent is stopping`);
    }
    throw error;
  }
}

/** Deletes `model` through `DELETE /api/delete`; throws with Ollama's message on failure. */
export async function deleteModel(
  baseUrl: string,
  model: string,
  options: { signal?: AbortSignal } = {},
): Promise<void> {
  const res = await fetch(`${baseUrl}/api/delete`, {
    method: "DELETE",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ model }),
    signal: options.signal,
  });
  if (!res.ok) throw new Error(`Cannot delete model "${model}": ${await errorText(res)}`);
  await res.body?.cancel();
}

function formatBytes(n: number): string {
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) {
    n /= 1000;
    i++;
  }
  return `${n.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}

function fraction(p: PullProgress): number | undefined {
  if (!p.total || p.completed === undefined) return undefined;
  return Math.min(1, Math.max(0, p.completed / p.total));
}

/** Pure: a one-line progress bar, e.g. `llama3.2 [#####-----] 50% 1.0 GB/2.0 GB pulling 6a0…`. */
export function formatProgressBar(model: string, p: PullProgress, width = 24): string {
  const f = fraction(p);
  const status = p.status.length > 30 ? `${p.status.slice(0, 29)}…` : p.status;
  if (f === undefined) return `${model} ${status}`;
  const filled = Math.round(f * width);
  const bar = "#".repeat(filled) + "-".repeat(width - filled);
  return `${model} [${bar}] ${String(Math.floor(f * 100)).padStart(3)}% ` +
    `${formatBytes(p.completed!)}/${formatBytes(p.total!)} ${status}`;
}

/** Pure: a progress log message, e.g. `Pulling llama3.2: 50% of 2.0 GB (pulling 6a0…)`. */
export function formatProgressLine(model: string, p: PullProgress): string {
  const f = fraction(p);
  if (f === undefined) return `Pulling ${model}: ${p.status}`;
  return `Pulling ${model}: ${Math.floor(f * 100)}% of ${formatBytes(p.total!)} (${p.status})`;
}

/** Shows pull progress: a redrawn bar on a terminal, else a log line at most every interval. */
export interface ProgressDisplay {
  update(progress: PullProgress): void;
  /** Clears the bar. */
  end(): void;
}

/** Creates a {@linkcode ProgressDisplay} for one pull. */
export function createProgressDisplay(
  model: string,
  logger: Logger,
  options: { intervalMs?: number; now?: () => number } = {},
): ProgressDisplay {
  const interval = options.intervalMs ?? 5_000;
  const now = options.now ?? Date.now;
  let lastLog = -Infinity;
  let lastStatus = "";
  return {
    update(p) {
      if (logger.status(formatProgressBar(model, p))) return;
      // Without a terminal: a line when the stage changes or the interval has passed.
      const stage = p.digest ? "download" : p.status;
      const t = now();
      if (stage !== lastStatus || t - lastLog >= interval) {
        lastStatus = stage;
        lastLog = t;
        logger.info(formatProgressLine(model, p));
      }
    },
    end() {
      logger.status(null);
    },
  };
}

/** Options of {@linkcode ensureModels}. */
export interface EnsureModelsOptions {
  logger?: Logger;
  signal?: AbortSignal;
  /** Limit of one pull in milliseconds; 0 = none. */
  timeoutMs?: number;
  /** Least time between two progress log lines when not on a terminal. */
  progressLogMs?: number;
}

/** What {@linkcode ensureModels} did. */
export interface EnsureModelsResult {
  pulled: string[];
  failed: string[];
}

/**
 * Pulls each of `models` that Ollama at `baseUrl` does not have, one after another.
 * A failed pull is logged and the next model is tried.
 */
export async function ensureModels(
  baseUrl: string,
  models: readonly string[],
  options: EnsureModelsOptions = {},
): Promise<EnsureModelsResult> {
  const logger = options.logger ?? silentLogger;
  const result: EnsureModelsResult = { pulled: [], failed: [] };
  if (models.length === 0) return result;
  const installed = new Set(
    (await listInstalledModels(baseUrl, { signal: options.signal })).map((m) =>
      normalizeModelName(m.name)
    ),
  );
  for (const model of models) {
    if (options.signal?.aborted) break;
    if (installed.has(normalizeModelName(model))) continue;
    logger.info("Pulling default model", { model });
    const display = createProgressDisplay(model, logger, { intervalMs: options.progressLogMs });
    try {
      await pullModel(baseUrl, model, {
        signal: options.signal,
        timeoutMs: options.timeoutMs,
        onProgress: (p) => display.update(p),
      });
      display.end();
      logger.info("Pulled default model", { model });
      result.pulled.push(model);
      installed.add(normalizeModelName(model));
    } catch (error) {
      display.end();
      logger.error((error as Error).message, { model });
      result.failed.push(model);
    }
  }
  return result;
}

/** A progress report about one command, as `CommandProgress` without the command id. */
export type CommandUpdate = Omit<CommandProgress, "command_id">;

/** Options of {@linkcode runModelCommand}. */
export interface ModelCommandOptions {
  signal?: AbortSignal;
  /** Limit of a pull in milliseconds; 0 = none. */
  pullTimeoutMs?: number;
  /** Progress while the command runs (may be throttled by the caller). */
  onProgress?: (update: CommandUpdate) => void;
}

/**
 * Carries out a coordinator's pull or delete command against the local Ollama. Never throws:
 * resolves with the final report, `{status: "success", done: true}` or
 * `{status: "error", done: true, error}`.
 */
export async function runModelCommand(
  baseUrl: string,
  command: AgentCommand,
  options: ModelCommandOptions = {},
): Promise<CommandUpdate> {
  try {
    if (command.type === "pull") {
      await pullModel(baseUrl, command.model, {
        signal: options.signal,
        timeoutMs: options.pullTimeoutMs,
        onProgress: (p) => {
          if (p.status !== "success") options.onProgress?.(p);
        },
      });
    } else {
      options.onProgress?.({ status: "deleting" });
      await deleteModel(baseUrl, command.model, { signal: options.signal });
    }
    return { status: "success", done: true };
  } catch (error) {
    return { status: "error", done: true, error: errorMessage(error) };
  }
}
