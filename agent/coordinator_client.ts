/**
 * Talking to the coordinator: registration (with retries), heartbeats and command progress.
 *
 * Credentials: registration sends `Authorization: Bearer <AGENT_TOKEN>` when a token is set. If
 * the registration reply carries `agent_secret`, heartbeats and progress reports use it instead;
 * without one they keep sending the token.
 *
 * The coordinator going away is logged once, and its return once; the attempts in between are
 * quiet.
 */
import type { CommandProgress, HealthRequest, RegisterRequest } from "@oc/shared";
import { HealthResponse, RegisterResponse } from "@oc/shared";
import type { Logger } from "./log.ts";
import { silentLogger } from "./log.ts";
import { errorMessage, sleep } from "./util.ts";

/** The coordinator answered with an error status; callers act on `status` (404, 401, …). */
export class CoordinatorHttpError extends Error {
  readonly status: number;
  constructor(status: number, message: string) {
    super(message);
    this.name = "CoordinatorHttpError";
    this.status = status;
  }
}

/** True for a rejected credential (401 or 403). */
export function isAuthError(error: unknown): boolean {
  return error instanceof CoordinatorHttpError && (error.status === 401 || error.status === 403);
}

/** Options of {@linkcode CoordinatorClient}. */
export interface CoordinatorClientOptions {
  /** Coordinator base URL without a trailing slash. */
  baseUrl: string;
  /** AGENT_TOKEN, sent on registration. */
  token?: string;
  logger?: Logger;
  /** Limit of one request in milliseconds (default 10000). */
  timeoutMs?: number;
}

/** The agent's side of the coordinator's agent API. */
export class CoordinatorClient {
  readonly baseUrl: string;
  #token: string | undefined;
  #secret: string | undefined;
  #logger: Logger;
  #timeoutMs: number;
  #reachable: boolean | undefined;
  /** The id the coordinator gave this agent, once registered. */
  agentId: string | undefined;
  /** The heartbeat interval the coordinator asked for, in seconds, if it did. */
  heartbeatIntervalSecs: number | undefined;

  constructor(options: CoordinatorClientOptions) {
    this.baseUrl = options.baseUrl.replace(/\/+$/, "");
    this.#token = options.token;
    this.#logger = options.logger ?? silentLogger;
    this.#timeoutMs = options.timeoutMs ?? 10_000;
  }

  /** False after a request failed to reach the coordinator, true after one reached it. */
  get reachable(): boolean | undefined {
    return this.#reachable;
  }

  async #post(
    path: string,
    body: unknown,
    bearer: string | undefined,
    signal?: AbortSignal,
  ): Promise<unknown> {
    const timeout = AbortSignal.timeout(this.#timeoutMs);
    const headers: Record<string, string> = { "content-type": "application/json" };
    if (bearer) headers.authorization = `Bearer ${bearer}`;
    let res: Response;
    let text: string;
    try {
      res = await fetch(`${this.baseUrl}${path}`, {
        method: "POST",
        headers,
        body: JSON.stringify(body),
        signal: signal ? AbortSignal.any([signal, timeout]) : timeout,
      });
      text = await res.text();
    } catch (error) {
      if (!signal?.aborted) this.#setReachable(false, error);
      throw error;
    }
    this.#setReachable(true);
    if (!res.ok) {
      let detail = text.trim().slice(0, 200);
      try {
        const parsed = JSON.parse(text);
        if (typeof parsed?.error === "string") detail = parsed.error;
        else if (typeof parsed?.error?.message === "string") detail = parsed.error.message;
      } catch {
        // Not JSON: keep the text.
      }
      throw new CoordinatorHttpError(
        res.status,
        `Coordinator answered ${path} with status ${res.status}${detail ? `: ${detail}` : ""}`,
      );
    }
    if (!text.trim()) return {};
    try {
      return JSON.parse(text);
    } catch {
      throw new Error(`Coordinator answered ${path} with a body that is not JSON`);
    }
  }

  #setReachable(reachable: boolean, error?: unknown): void {
    if (reachable && this.#reachable === false) {
      this.#logger.info("Coordinator is reachable again", { url: this.baseUrl });
    } else if (!reachable && this.#reachable !== false) {
      this.#logger.warn("Coordinator is unreachable; retrying quietly", {
        url: this.baseUrl,
        error: errorMessage(error),
      });
    }
    this.#reachable = reachable;
  }

  /** `POST /api/agents`; remembers the agent id, secret and heartbeat interval of the reply. */
  async register(body: RegisterRequest, signal?: AbortSignal): Promise<RegisterResponse> {
    const raw = await this.#post("/api/agents", body, this.#token, signal);
    const parsed = RegisterResponse.safeParse(raw);
    if (!parsed.success) throw new Error("Coordinator's registration reply has no agent_id");
    this.agentId = parsed.data.agent_id;
    this.#secret = parsed.data.agent_secret;
    const interval = parsed.data.heartbeat_interval;
    this.heartbeatIntervalSecs = interval !== undefined && interval > 0 ? interval : undefined;
    return parsed.data;
  }

  /** `POST /api/health` for the registered agent; returns the reply (with any commands). */
  async heartbeat(
    body: Omit<HealthRequest, "agent_id">,
    signal?: AbortSignal,
  ): Promise<HealthResponse> {
    if (!this.agentId) throw new Error("Cannot send a heartbeat: the agent is not registered");
    const raw = await this.#post(
      "/api/health",
      { agent_id: this.agentId, ...body },
      this.#secret ?? this.#token,
      signal,
    );
    const parsed = HealthResponse.safeParse(raw);
    if (parsed.success) return parsed.data;
    this.#logger.debug("Ignoring a heartbeat reply that is not a HealthResponse");
    return { ok: true };
  }

  /** `POST /api/agents/:id/progress`. */
  async progress(body: CommandProgress, signal?: AbortSignal): Promise<void> {
    if (!this.agentId) throw new Error("Cannot report progress: the agent is not registered");
    await this.#post(
      `/api/agents/${encodeURIComponent(this.agentId)}/progress`,
      body,
      this.#secret ?? this.#token,
      signal,
    );
  }
}

/** Options of {@linkcode registerWithRetry}. */
export interface RegisterRetryOptions {
  /** Pause between attempts in milliseconds (COORDINATOR_REGISTER_RETRY_SECS). */
  retryMs: number;
  /** Retries after the first attempt; 0 = until it succeeds (COORDINATOR_REGISTER_MAX_RETRIES). */
  maxRetries: number;
  /** Pause after the coordinator rejected the token. */
  unauthorizedRetryMs: number;
  signal?: AbortSignal;
  logger?: Logger;
}

/**
 * Registers, retrying as configured. `buildBody` runs before every attempt so each one reports
 * fresh state. Resolves undefined when `signal` aborts; throws once the retries are used up.
 */
export async function registerWithRetry(
  client: CoordinatorClient,
  buildBody: () => Promise<RegisterRequest>,
  options: RegisterRetryOptions,
): Promise<RegisterResponse | undefined> {
  const logger = options.logger ?? silentLogger;
  let lastProblem = "";
  for (let attempt = 1; !options.signal?.aborted; attempt++) {
    let delay = options.retryMs;
    try {
      const body = await buildBody();
      const reply = await client.register(body, options.signal);
      logger.info("Registered with the coordinator", {
        agent_id: reply.agent_id,
        status: reply.status,
        url: client.baseUrl,
        address: `${body.ip_address}:${body.ollama_port}`,
      });
      return reply;
    } catch (error) {
      if (options.signal?.aborted) return undefined;
      let problem = errorMessage(error);
      if (isAuthError(error)) {
        problem = `Cannot register agent: the coordinator rejected the token (status ${
          (error as CoordinatorHttpError).status
        }); set AGENT_TOKEN to a token the coordinator accepts`;
        // A wrong token will not fix itself quickly: log every time, but try slowly.
        logger.error(problem);
        delay = Math.max(options.retryMs, options.unauthorizedRetryMs);
      } else if (error instanceof CoordinatorHttpError) {
        if (problem !== lastProblem) logger.warn(`Cannot register agent: ${problem}`);
      } else if (client.reachable !== false && problem !== lastProblem) {
        logger.warn(`Cannot register agent: ${problem}`);
      }
      lastProblem = problem;
      if (options.maxRetries > 0 && attempt > options.maxRetries) {
        throw new Error(
          `Cannot register with the coordinator at ${client.baseUrl} after ${attempt} attempts: ${problem}`,
        );
      }
    }
    await sleep(delay, options.signal);
  }
  return undefined;
}

/**
 * Sends progress at most once per interval and one report at a time, so reports stay in order
 * and the pull stream is never held up; the latest update waiting is sent next, older ones are
 * dropped. The final report is always sent.
 */
export interface ProgressReporter {
  update(progress: CommandProgress): void;
  /** Drops any waiting update, waits for a report in flight, then sends `progress`. */
  finish(progress: CommandProgress): Promise<void>;
}

/** Creates a {@linkcode ProgressReporter} over `send`; failed sends are logged and dropped. */
export function createProgressReporter(
  send: (progress: CommandProgress) => Promise<void>,
  options: { intervalMs: number; now?: () => number; logger?: Logger },
): ProgressReporter {
  const now = options.now ?? Date.now;
  const logger = options.logger ?? silentLogger;
  let last = -Infinity;
  let inFlight: Promise<void> | undefined;
  let pending: CommandProgress | undefined;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let finished = false;
  const deliver = (p: CommandProgress) =>
    send(p).catch((error) => {
      logger.debug("Cannot report command progress", { error: errorMessage(error) });
    });
  function pump(): void {
    if (finished || inFlight || !pending) return;
    const wait = last + options.intervalMs - now();
    if (wait > 0) {
      timer ??= setTimeout(() => {
        timer = undefined;
        pump();
      }, wait);
      return;
    }
    const next = pending;
    pending = undefined;
    last = now();
    inFlight = deliver(next).finally(() => {
      inFlight = undefined;
      pump();
    });
  }
  return {
    update(progress) {
      pending = progress;
      pump();
    },
    async finish(progress) {
      finished = true;
      pending = undefined;
      clearTimeout(timer);
      timer = undefined;
      await inFlight;
      await deliver(progress);
    },
  };
}

/** Pure: a {@linkcode CommandProgress} trimmed to the schema's limits. */
export function progressBody(progress: CommandProgress): CommandProgress {
  const out: CommandProgress = {
    ...progress,
    command_id: progress.command_id.slice(0, 64),
    status: progress.status.slice(0, 256),
  };
  if (out.digest !== undefined) out.digest = out.digest.slice(0, 128);
  if (out.error !== undefined) out.error = out.error.slice(0, 1024);
  return out;
}

/** Strips the brackets of an IPv6 literal (`[::1]` → `::1`). */
function bareHost(hostname: string): string {
  return hostname.startsWith("[") && hostname.endsWith("]") ? hostname.slice(1, -1) : hostname;
}

/**
 * The local address of a TCP connection towards the coordinator: the address the coordinator
 * can most likely reach this machine at (a loopback coordinator gives 127.0.0.1). Falls back to
 * the first non-internal IPv4 interface address when the coordinator cannot be reached.
 */
export async function detectAdvertiseAddress(
  coordinatorUrl: string,
  options: { timeoutMs?: number } = {},
): Promise<string> {
  const url = new URL(coordinatorUrl);
  const port = Number(url.port) || (url.protocol === "https:" ? 443 : 80);
  try {
    const conn = await Deno.connect({
      hostname: bareHost(url.hostname),
      port,
      signal: AbortSignal.timeout(options.timeoutMs ?? 5_000),
    });
    try {
      return (conn.localAddr as Deno.NetAddr).hostname;
    } finally {
      conn.close();
    }
  } catch {
    const ifaces = (() => {
      try {
        return Deno.networkInterfaces();
      } catch {
        return [];
      }
    })();
    const external = ifaces.find((i) =>
      i.family === "IPv4" && !i.address.startsWith("127.") && i.address !== "0.0.0.0"
    );
    return external?.address ?? "127.0.0.1";
  }
}
