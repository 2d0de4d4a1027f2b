/**
 * The simulated Ollama server: listening (and not, under the `refuse` fault), the route table,
 * request accounting, settings changed at run time, and a close that ends everything in flight.
 *
 * @module
 */
import { checkFault, dyingResponse, type SimFault } from "./faults.ts";
import {
  allowedHostHeader,
  type Api,
  apiOf,
  type Ctx,
  errorResponse,
  HttpError,
  isLoopbackHost,
  type Methods,
  waitForAbort,
} from "./http.ts";
import { DEFAULT_MODELS, ModelStore, type SimModel } from "./models.ts";
import { ollamaRoutes } from "./ollama_api.ts";
import { openaiModelRoute, openaiRoutes } from "./openai_api.ts";
import { anthropicRoutes } from "./anthropic_api.ts";
import { BusyError, SlotPool } from "./slots.ts";
import type { Settings, SimState } from "./state.ts";

/** Options of {@linkcode startSimulator}. */
export interface SimOptions {
  /** Listen address; default "127.0.0.1". */
  hostname?: string;
  /** Listen port; default 0 (ephemeral). */
  port?: number;
  /** Installed models; default ["llama3.2:latest", "nomic-embed-text:latest"]. */
  models?: (string | SimModel)[];
  /** Models loaded at start (they must be installed); default []. */
  loaded?: string[];
  /** Generation speed; default 500. */
  tokensPerSecond?: number;
  /** Time to first token in ms (reported as prompt_eval_duration); default 5. */
  ttftMs?: number;
  /** Time to load a model that is not in memory, paid by the first request; default 0. */
  loadMs?: number;
  /** Requests served at once per model (OLLAMA_NUM_PARALLEL); default 4. */
  parallel?: number;
  /** Requests that may wait for a slot, over all models (OLLAMA_MAX_QUEUE); default 512. */
  maxQueue?: number;
  /** Reported by /api/version and `--version`; default "0.12.6". */
  version?: string;
  /** Fault at start; default none. */
  fault?: SimFault;
  /** No request logging. */
  quiet?: boolean;
  /** How long a streamed pull's download takes; default 0. */
  pullMs?: number;
  /** Pulls fail with this error (Ollama's `{"error"}` line); `""` clears it. Default none. */
  pullError?: string;
}

/**
 * Counters of HTTP requests. `requests = inFlight + completed + aborted`: a request is aborted
 * when its response did not complete (client abort, `die_after`, close). `queued` counts the
 * requests waiting for a slot now.
 */
export interface SimStats {
  requests: number;
  inFlight: number;
  aborted: number;
  completed: number;
  queued: number;
}

/** A running simulator. */
export interface Simulator {
  /** Base URL, e.g. "http://127.0.0.1:PORT". */
  readonly url: string;
  readonly port: number;
  /** Switches the fault; resolves once `refuse` stopped listening or clearing it listens again. */
  setFault(fault: SimFault): Promise<void>;
  /**
   * Changes speed, models, limits etc. at run time; streams already running pick up a new speed.
   * Hostname and port are ignored; a fault given here is applied without waiting (use setFault).
   */
  update(opts: Partial<SimOptions>): void;
  /** A snapshot of the counters. */
  readonly stats: SimStats;
  /** Stops listening, ends every request still in flight and waits for the server to finish. */
  close(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

/** Starts a simulator; it listens before the promise resolves (unless the fault is `refuse`). */
export async function startSimulator(
  opts: SimOptions = {},
): Promise<Simulator> {
  const sim = new OllamaSimulator(opts);
  await sim.start(opts.fault ?? { type: "none" });
  return sim;
}

class OllamaSimulator implements Simulator {
  #hostname: string;
  #port: number;
  #state: SimState;
  #server: Deno.HttpServer<Deno.NetAddr> | undefined;
  #finishing: Promise<void>[] = [];
  #kill = new AbortController();
  #counts = { requests: 0, inFlight: 0, aborted: 0, completed: 0 };
  #closed = false;
  #routes: Record<string, Methods>;

  constructor(opts: SimOptions) {
    this.#hostname = opts.hostname ?? "127.0.0.1";
    this.#port = opts.port ?? 0;
    const settings: Settings = {
      tokensPerSecond: 500,
      ttftMs: 5,
      loadMs: 0,
      parallel: 4,
      maxQueue: 512,
      version: "0.12.6",
      quiet: false,
      pullMs: 0,
    };
    this.#state = {
      settings,
      models: new ModelStore(),
      slots: new SlotPool(() => settings),
      fault: { type: "none" },
      closing: this.#kill.signal,
      streams: new Set(),
    };
    // The fault is applied by start(), once the server listens.
    const { fault: _fault, ...rest } = opts;
    this.update({ ...rest, models: opts.models ?? DEFAULT_MODELS });
    this.#routes = {
      ...ollamaRoutes(this.#state),
      ...openaiRoutes(this.#state),
      ...anthropicRoutes(this.#state),
    };
  }

  get url(): string {
    let host = this.#hostname;
    if (host === "0.0.0.0" || host === "") host = "127.0.0.1";
    else if (host === "::") host = "[::1]";
    else if (host.includes(":")) host = `[${host}]`;
    return `http://${host}:${this.#port}`;
  }

  get port(): number {
    return this.#port;
  }

  get stats(): SimStats {
    return { ...this.#counts, queued: this.#state.slots.queued };
  }

  async start(fault: SimFault): Promise<void> {
    this.#listen();
    await this.setFault(fault);
  }

  async setFault(fault: SimFault): Promise<void> {
    checkFault(fault);
    const wasRefusing = this.#state.fault.type === "refuse";
    this.#state.fault = fault;
    if (this.#closed) return;
    if (fault.type === "refuse" && !wasRefusing) await this.#stopListening();
    else if (fault.type !== "refuse" && wasRefusing) await this.#listenAgain();
  }

  update(opts: Partial<SimOptions>): void {
    const s = this.#state.settings;
    const positive = (name: string, v: number | undefined, min: number) => {
      if (v === undefined) return undefined;
      if (
        !Number.isFinite(v) || v < min ||
        (name === "tokensPerSecond" && v === 0)
      ) {
        throw new RangeError(
          `Cannot configure simulator: ${name} is out of range, got ${v}`,
        );
      }
      return v;
    };
    s.tokensPerSecond = positive("tokensPerSecond", opts.tokensPerSecond, 0) ??
      s.tokensPerSecond;
    s.ttftMs = positive("ttftMs", opts.ttftMs, 0) ?? s.ttftMs;
    s.loadMs = positive("loadMs", opts.loadMs, 0) ?? s.loadMs;
    s.parallel = positive("parallel", opts.parallel, 1) ?? s.parallel;
    s.maxQueue = positive("maxQueue", opts.maxQueue, 0) ?? s.maxQueue;
    s.version = opts.version ?? s.version;
    s.quiet = opts.quiet ?? s.quiet;
    s.pullMs = positive("pullMs", opts.pullMs, 0) ?? s.pullMs;
    if (opts.pullError !== undefined) s.pullError = opts.pullError || undefined;
    if (opts.models) this.#state.models.install(opts.models);
    if (opts.loaded) this.#state.models.load(opts.loaded);
    if (opts.fault) void this.setFault(opts.fault).catch(() => {});
    this.#state.slots.pump();
  }

  async close(): Promise<void> {
    if (this.#closed) return await Promise.all(this.#finishing).then(() => {});
    this.#closed = true;
    this.#kill.abort(new Error("Simulator closed"));
    for (const kill of this.#state.streams) kill();
    if (this.#server) this.#finishing.push(this.#server.shutdown());
    this.#server = undefined;
    await Promise.all(this.#finishing);
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  // --- listening ------------------------------------------------------------------------------

  #listen(): void {
    const server = Deno.serve({
      hostname: this.#hostname,
      port: this.#port,
      onListen: () => {},
    }, (req, info) => this.#handle(req, info));
    this.#server = server;
    this.#port = server.addr.port;
  }

  async #stopListening(): Promise<void> {
    const server = this.#server;
    this.#server = undefined;
    if (!server) return;
    this.#finishing.push(server.shutdown());
    // shutdown() closes the listener on a later turn of the event loop; wait until it refuses.
    const host = new URL(this.url).hostname.replace(/^\[|\]$/g, "");
    for (let i = 0; i < 400; i++) {
      try {
        const conn = await Deno.connect({ hostname: host, port: this.#port });
        conn.close();
      } catch {
        return;
      }
      await new Promise((r) => setTimeout(r, 5));
    }
  }

  async #listenAgain(): Promise<void> {
    for (let i = 0;; i++) {
      try {
        this.#listen();
        return;
      } catch (e) {
        if (!(e instanceof Deno.errors.AddrInUse) || i >= 400) throw e;
        await new Promise((r) => setTimeout(r, 5));
      }
    }
  }

  // --- request handling ---------------------------------------------------------------------

  async #handle(req: Request, info: Deno.ServeHandlerInfo): Promise<Response> {
    const started = performance.now();
    const url = new URL(req.url);
    const api: Api = apiOf(url.pathname);
    const ctx: Ctx = {
      api,
      signal: AbortSignal.any([req.signal, this.#kill.signal]),
      done: false,
      failed: false,
      streaming: false,
    };
    this.#counts.requests++;
    this.#counts.inFlight++;
    // Without --unstable-no-legacy-abort the signal also fires after a completed response;
    // by then `done` is set, so only a real abort counts.
    ctx.signal.addEventListener("abort", () => {
      if (!ctx.done) ctx.failed = true;
    }, { once: true });
    let status = 0;
    const settle = () => {
      this.#counts.inFlight--;
      if (ctx.failed || !ctx.done) this.#counts.aborted++;
      else this.#counts.completed++;
      if (!this.#state.settings.quiet) {
        const ms = (performance.now() - started).toFixed(1);
        const end = ctx.failed || !ctx.done ? " (aborted)" : "";
        console.error(
          `[sim] ${status} | ${ms}ms | ${req.method} ${url.pathname}${end}`,
        );
      }
    };
    info.completed.then(settle, settle);
    let res: Response;
    try {
      res = await this.#route(req, url, ctx);
    } catch (e) {
      if (e instanceof HttpError) res = errorResponse(api, e.status, e.message);
      else if (e instanceof BusyError) res = errorResponse(api, 503, e.message);
      else if (ctx.signal.aborted) res = dyingResponse(ctx);
      else res = errorResponse(api, 500, (e as Error).message ?? String(e));
    }
    if (!ctx.streaming) ctx.done = true;
    status = res.status;
    return res;
  }

  #route(req: Request, url: URL, ctx: Ctx): Promise<Response> | Response {
    if (
      isLoopbackHost(this.#hostname) &&
      !allowedHostHeader(req.headers.get("host"))
    ) {
      return new Response(null, { status: 403 });
    }
    if (this.#state.fault.type === "hang") {
      return waitForAbort(ctx.signal).then(() => dyingResponse(ctx));
    }
    let path = url.pathname;
    if (path.length > 1 && path.endsWith("/")) path = path.slice(0, -1);
    let methods = this.#routes[path];
    if (!methods && path.startsWith("/v1/models/")) {
      methods = openaiModelRoute(
        this.#state,
        decodeURIComponent(path.slice("/v1/models/".length)),
      );
    }
    if (!methods) return errorResponse(ctx.api, 404, "404 page not found");
    const handler = methods[req.method];
    if (!handler) {
      const res = errorResponse(ctx.api, 405, "405 method not allowed");
      res.headers.set("allow", Object.keys(methods).join(", "));
      return res;
    }
    return handler(req, ctx);
  }
}
