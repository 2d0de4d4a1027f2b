/**
 * Talking to the coordinator: registration (with retries), heartbeats and command progress.
 *
 * Credentials: registration sends `Authorization: Bearer <AGENT_TOKEN>` when a token is set. If
 * the registration reply carries `agent_secret`, heartbeats and progress reports use it instead;
 * without one they keep sending the token.
 *
 * Several coordinators: the client holds a list of base URLs and talks to one at a time. When the
 * one in use stops answering (no connection, a timeout, a 5xx), callers move on with `next()` and
 * register there; a rejected credential (401/403) is no reason to move. Each move that lands on a
 * coordinator that answers is logged once ("Coordinator A stopped answering; using B").
 *
 * The coordinators going away is logged once (when every one of them missed in a row), and their
 * return once; the attempts in between are quiet.
 */
import type { CommandProgress, HealthRequest, RegisterRequest } from "@oc/shared";
import { HealthResponse, RegisterResponse } from "@oc/shared";
import type { Logger } from "./log.ts";
import { silentLogger } from "./log.ts";
import { errorMessage, sleep } from "./util.ts";

/** The coordinator answered with an error status; callers act on `status` (404, 401, …). */
export class CoordinatorHttpError extends Error {
  readonly status: number;
  /** The coordinator's own error text (its `error` field), or the start of its answer. */
  readonly detail: string;
  constructor(status: number, message: string, detail = "") {
    super(message);
    this.name = "CoordinatorHttpError";
    this.status = status;
    this.detail = detail;
  }
}

/** The coordinator could not be reached: no connection, a reset, a timeout. */
export class CoordinatorUnreachableError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "CoordinatorUnreachableError";
  }
}

/**
 * True when an error of a {@linkcode CoordinatorClient} call means the coordinator in use is not
 * serving: unreachable, a 5xx, or a reply that is not the agent API's. Another coordinator may do
 * better. A 4xx (a wrong token, a refused body) would be answered the same by every coordinator.
 */
export function isFailoverError(error: unknown): boolean {
  return !(error instanceof CoordinatorHttpError) || error.status >= 500;
}

/** True for a rejected credential (401 or 403). */
export function isAuthError(error: unknown): boolean {
  return error instanceof CoordinatorHttpError && (error.status === 401 || error.status === 403);
}

/** Options of {@linkcode CoordinatorClient}. */
export interface CoordinatorClientOptions {
  /** Coordinator base URL, or several to move through in order when one stops answering. */
  baseUrl: string | readonly string[];
  /** AGENT_TOKEN, sent on registration. */
  token?: string;
  logger?: Logger;
  /** Limit of one request in milliseconds (default 10000). */
  timeoutMs?: number;
}

/** The agent's side of the coordinator's agent API. */
export class CoordinatorClient {
  /** Every coordinator's base URL, without trailing slashes, in the order they are tried. */
  readonly urls: readonly string[];
  #index = 0;
  #token: string | undefined;
  #secret: string | undefined;
  #logger: Logger;
  #timeoutMs: number;
  #reachable: boolean | undefined;
  /** The coordinators that requests failed to reach since one was last reached. */
  #missed = new Set<string>();
  /** The coordinator `next()` moved away from, until another one answers. */
  #leftBehind: string | undefined;
  /** The id the coordinator gave this agent, once registered. */
  agentId: string | undefined;
  /** The heartbeat interval the coordinator asked for, in seconds, if it did. */
  heartbeatIntervalSecs: number | undefined;

  constructor(options: CoordinatorClientOptions) {
    const urls = typeof options.baseUrl === "string" ? [options.baseUrl] : options.baseUrl;
    if (urls.length === 0) throw new RangeError("Cannot create a coordinator client: no URL");
    this.urls = urls.map((u) => u.replace(/\/+$/, ""));
    this.#token = options.token;
    this.#logger = options.logger ?? silentLogger;
    this.#timeoutMs = options.timeoutMs ?? 10_000;
  }

  /** The base URL of the coordinator in use. */
  get baseUrl(): string {
    return this.urls[this.#index];
  }

  /**
   * False once requests to every coordinator failed to reach it (one after the other), true after
   * one reached a coordinator.
   */
  get reachable(): boolean | undefined {
    return this.#reachable;
  }

  /**
   * Moves to the next coordinator of the list (after the last, the first again). Callers register
   * there: the next request goes to it. Does nothing with a single URL.
   */
  next(): void {
    if (this.urls.length < 2) return;
    this.#leftBehind ??= this.baseUrl;
    this.#index = (this.#index + 1) % this.urls.length;
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
    const url = this.baseUrl;
    let res: Response;
    let text: string;
    try {
      res = await fetch(`${url}${path}`, {
        method: "POST",
        headers,
        body: JSON.stringify(body),
        signal: signal ? AbortSignal.any([signal, timeout]) : timeout,
      });
      text = await res.text();
    } catch (error) {
      if (signal?.aborted) throw error;
      this.#unreachable(url, error);
      throw new CoordinatorUnreachableError(errorMessage(error), { cause: error });
    }
    this.#answered(url, res.status);
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
        detail,
      );
    }
    if (!text.trim()) return {};
    try {
      return JSON.parse(text);
    } catch {
      throw new Error(`Coordinator answered ${path} with a body that is not JSON`);
    }
  }

  #unreachable(url: string, error: unknown): void {
    this.#missed.add(url);
    // With several coordinators, a miss is followed by a try of the next one: only when every one
    // was missed can none be reached.
    if (this.#reachable === false || this.#missed.size < this.urls.length) return;
    this.#reachable = false;
    this.#logger.warn("Coordinator is unreachable; retrying quietly", {
      url: this.urls.join(", "),
      error: errorMessage(error),
    });
  }

  #answered(url: string, status: number): void {
    const wasDown = this.#reachable === false;
    this.#missed.clear();
    this.#reachable = true;
    const from = this.#leftBehind;
    if (status < 500) this.#leftBehind = undefined;
    if (status < 500 && from !== undefined && from !== url) {
      this.#logger.warn(`Coordinator ${from} stopped answering; using ${url}`);
    } else if (wasDown) {
      this.#logger.info("Coordinator is reachable again", { url });
    }
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
 * Registers, retrying as configured. One attempt tries the coordinator in use and, while they do
 * not answer, the next ones of the list, each once; the pause comes between attempts. A rejected
 * token or body ends the attempt at once: every coordinator would answer the same.
 * `buildBody` runs before every try so each one reports fresh state. Resolves undefined when
 * `signal` aborts; throws once the retries are used up.
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
    for (let tried = 0; tried < client.urls.length; tried++) {
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
          const { status, detail } = error as CoordinatorHttpError;
          // Only a 401 is about the token; a 403 comes from the host allow-list, the allowed
          // networks or the origin check, and the coordinator's own words say which.
          problem = status === 401
            ? `Cannot register agent: the coordinator rejected the token (status 401); set AGENT_TOKEN to a token the coordinator accepts`
            : `Cannot register agent: the coordinator refused it (status ${status})${
              detail ? `: ${detail}` : ""
            }`;
          // Neither fixes itself quickly: log every time, but try slowly.
          logger.error(problem);
          delay = Math.max(options.retryMs, options.unauthorizedRetryMs);
        } else if (!(error instanceof CoordinatorUnreachableError) && problem !== lastProblem) {
          // Unreachable coordinators are logged by the client, once.
          logger.warn(`Cannot register agent: ${problem}`);
        }
        lastProblem = problem;
        if (!isFailoverError(error)) break;
        client.next();
      }
    }
    if (options.maxRetries > 0 && attempt > options.maxRetries) {
      const where = client.urls.length === 1
        ? `the coordinator at ${client.baseUrl}`
        : `any of the coordinators ${client.urls.join(", ")}`;
      throw new Error(`Cannot register with ${where} after ${attempt} attempts: ${lastProblem}`);
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

/** Options of {@linkcode registrationAddress}. */
export interface RegistrationAddressOptions {
  /** AGENT_ADVERTISE_ADDRESS, when set: always used. */
  advertised?: string;
  /** The coordinator the agent last registered with, and the address it registered under. */
  registered?: { url: string; address: string };
  /** Finds the address towards a coordinator; default {@linkcode detectAdvertiseAddress}. */
  detect?: (coordinatorUrl: string) => Promise<string>;
}

/**
 * The address to register with the coordinator at `url` under. Coordinators that share one
 * database know an agent by its machine name, address and port, so towards another coordinator
 * than the last one the agent keeps the address it registered under (and so its id), even where
 * the route to that coordinator leaves from another interface. Towards the same coordinator the
 * address is detected again, in case the machine's address changed.
 */
export function registrationAddress(
  url: string,
  options: RegistrationAddressOptions = {},
): Promise<string> {
  if (options.advertised) return Promise.resolve(options.advertised);
  const { registered } = options;
  if (registered && registered.url !== url) return Promise.resolve(registered.address);
  return (options.detect ?? detectAdvertiseAddress)(url);
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
