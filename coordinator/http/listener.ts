/**
 * The coordinator's HTTP front door: `Deno.serve`'s fast HTTP machinery on connections that we
 * accept ourselves, so that a flood of connections cannot take the endpoint down.
 *
 * `Deno.serve` alone has no idle, header or keep-alive time limit (an idle connection, or one
 * that sent half a request head, is held forever), no cap on open connections, and its accept
 * loop ends for good on the first "Too many open files": the process then stops answering, or
 * exits on the unhandled rejection. Here:
 *
 * - the accept loop never ends before {@linkcode HttpListener.shutdown}: accept errors are logged
 *   once per burst and retried with back-off;
 * - open client connections are capped ({@linkcode defaultMaxConnections} leaves descriptors for
 *   upstream sockets, the database and files); at the cap a connection that never sent a request, else the longest-idle one (no request
 *   in flight) is closed to make room, and a new connection is refused (closed) only when every
 *   open one is busy;
 * - a new connection that has not delivered a request head within `headerTimeoutMs`, and a
 *   kept-alive connection idle for `idleTimeoutMs`, are closed.
 *
 * Each connection is served by `Deno[Deno.internal].serveHttpOnConnection` (the same native
 * HTTP/1.1 server as `Deno.serve`, on one connection; node:http uses it). Without it, plain
 * `Deno.serve` takes over, with a warning, and without these limits.
 *
 * Time limits are checked by one sweep timer, not a timer per connection; they fire at most a
 * quarter of the shorter limit (and at most a second) late. A connection is busy from a request
 * head until its response has been handed over (`info.completed`), a streamed answer included;
 * an upgraded connection (WebSocket) counts as idle, so the idle limit would close it: the
 * coordinator upgrades none.
 *
 * @module
 */

/** The handler, as `Deno.serve` takes it: `info` has `remoteAddr` and `completed`. */
export type Handler = (
  request: Request,
  info: Deno.ServeHandlerInfo<Deno.NetAddr>,
) => Response | Promise<Response>;

/** One connection's HTTP server, as `serveHttpOnConnection` returns it. */
interface ConnectionServer {
  finished: Promise<void>;
  /** Graceful: requests in flight finish, an idle or half-sent connection closes at once. */
  shutdown(): Promise<void>;
}

/** The signature of `Deno[Deno.internal].serveHttpOnConnection` in Deno 2.9. */
export type ServeConnection = (
  conn: Deno.Conn,
  signal: AbortSignal | undefined,
  handler: Handler,
  onError: (error: unknown) => Response | Promise<Response>,
  onListen: (scheme: string) => void,
) => ConnectionServer;

/** Where the listener reports accept errors and the fallback (a `Logger.log` fits). */
export type ListenerLog = (
  level: "warn" | "error",
  msg: string,
  fields?: Record<string, unknown>,
) => void;

/** Options of {@linkcode serve}. */
export interface ListenerOptions {
  hostname?: string;
  /** 0 picks a free port. */
  port?: number;
  /** Most open client connections; default {@linkcode defaultMaxConnections} of the limit. */
  maxConnections?: number;
  /** Time a new connection has to deliver its first request head (default 10 s). */
  headerTimeoutMs?: number;
  /** Time a kept-alive connection may stay without a request in flight (default 60 s). */
  idleTimeoutMs?: number;
  /** Time a request body may take to arrive, for readers that ask {@linkcode bodyTimeoutOf}. */
  bodyTimeoutMs?: number;
  /** Called once listening, with the bound address. */
  onListen?: (addr: Deno.NetAddr) => void;
  /** Answers a request whose handler threw (default: logged, 500). */
  onError?: (error: unknown) => Response | Promise<Response>;
  /** Default: standard error. */
  log?: ListenerLog;
  /**
   * The per-connection server; default `Deno[Deno.internal].serveHttpOnConnection`. `null`
   * forces the `Deno.serve` fallback (for tests).
   */
  serveConnection?: ServeConnection | null;
  /** Clock for the time limits, in milliseconds (default `performance.now`). */
  now?: () => number;
}

/** Counters of the listener, for `/metrics`. */
export interface ListenerStats {
  /** Client connections open now. */
  open: number;
  /** The cap on open client connections (0 when the fallback runs without one). */
  maxConnections: number;
  /** Connections accepted since start. */
  accepted: number;
  /** New connections closed at once because the cap was reached and every open one was busy. */
  refused: number;
  /** Idle connections closed to make room for new ones. */
  evicted: number;
  /** Connections closed by the header or the idle time limit. */
  timedOut: number;
  /** Failed accepts (for example, out of file descriptors). */
  acceptErrors: number;
}

/** A running server, shaped like `Deno.HttpServer` where the coordinator uses it. */
export interface HttpListener {
  readonly addr: Deno.NetAddr;
  /** Settles once the server has shut down and every connection has closed. */
  readonly finished: Promise<void>;
  /** Stops accepting, lets requests in flight finish, closes idle connections. */
  shutdown(): Promise<void>;
  /** A snapshot of the counters. */
  stats(): ListenerStats;
}

/** Descriptors kept out of the client cap at most (database, files, upstream pools, stdio). */
const MAX_RESERVE = 256;
/** The cap never goes above this by default: memory, not descriptors, is the limit there. */
const MAX_DEFAULT_CONNECTIONS = 16_384;
/** The cap where the descriptor limit cannot be read. */
const FALLBACK_MAX_CONNECTIONS = 1_024;
const FIRST_BACKOFF_MS = 10;
/** Idle connections closed after each failed accept. */
const EVICT_ON_ACCEPT_ERROR = 8;
/** After accepts work again, further accept errors go unlogged (but counted) this long. */
const LOG_QUIET_MS = 10_000;
const MAX_BACKOFF_MS = 1_000;

/** The soft limit on open file descriptors of this process, where the system tells it. */
export function openFileLimit(): number | undefined {
  if (Deno.build.os !== "linux") return undefined;
  const path = "/proc/self/limits";
  // Without read permission, asking would prompt on a terminal: not worth it for a default.
  if (Deno.permissions.querySync({ name: "read", path }).state !== "granted") return undefined;
  try {
    const line = Deno.readTextFileSync(path).split("\n").find((l) =>
      l.startsWith("Max open files")
    );
    const soft = line?.slice("Max open files".length).trim().split(/\s+/)[0];
    const n = Number(soft);
    return soft === "unlimited" ? Infinity : Number.isFinite(n) && n > 0 ? n : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The default cap on open client connections for a descriptor limit: a reserve (a quarter of the
 * limit, at most 256) for the database, files and the like, then half of the rest, since each
 * busy client connection may hold an upstream socket too.
 */
export function defaultMaxConnections(limit: number | undefined): number {
  if (limit === undefined) return FALLBACK_MAX_CONNECTIONS;
  if (!Number.isFinite(limit)) return MAX_DEFAULT_CONNECTIONS;
  const reserve = Math.min(MAX_RESERVE, Math.floor(limit / 4));
  return Math.max(8, Math.min(MAX_DEFAULT_CONNECTIONS, Math.floor((limit - reserve) / 2)));
}

function internalServeConnection(): ServeConnection | undefined {
  // deno-lint-ignore no-explicit-any
  const internal = (Deno as any)[(Deno as any).internal];
  const fn = internal?.serveHttpOnConnection;
  return typeof fn === "function" ? fn : undefined;
}

function defaultLog(level: "warn" | "error", msg: string, fields: Record<string, unknown> = {}) {
  const extra = Object.entries(fields).map(([k, v]) => `${k}=${v}`).join(" ");
  (level === "error" ? console.error : console.warn)(extra ? `${msg} ${extra}` : msg);
}

function defaultOnError(error: unknown): Response {
  console.error("A request handler failed:", error);
  return new Response("Internal Server Error", { status: 500 });
}

/** One accepted connection. */
interface Connection {
  server: ConnectionServer | undefined;
  /** Cuts the connection at once (Deno's own abort handler, captured; see `open`). */
  cancel: (() => void) | undefined;
  inFlight: number;
  /** When it was accepted, its last request completed, or its closing began. */
  since: number;
  /** Closed by us (timeout, eviction, shutdown) and no longer counted against the cap. */
  closing: boolean;
  /** The queue it waits in while no request is in flight. */
  queue: Set<Connection> | undefined;
}

// Requests whose connection is to be closed once their response is out (see closeAfterResponse).
const doomed = new WeakSet<Request>();
let doomedPending = 0;

const BODY_TIMEOUT = Symbol("bodyTimeoutMs");
type Stamped = Request & { [BODY_TIMEOUT]?: number };

/** The body time limit of the listener that accepted `request`, if it set one. */
export function bodyTimeoutOf(request: Request): number | undefined {
  return (request as Stamped)[BODY_TIMEOUT];
}

/**
 * Closes the request's connection once its response has been sent, rather than keeping it
 * alive: for a body given up half-read (too large, too slow, malformed), whose rest would
 * otherwise hold the connection. Does nothing under the `Deno.serve` fallback.
 */
export function closeAfterResponse(request: Request): void {
  if (doomed.has(request)) return;
  doomed.add(request);
  doomedPending++;
}

/** Serves `handler` on a TCP listener with connection limits; see the module documentation. */
export function serve(options: ListenerOptions, handler: Handler): HttpListener {
  const log = options.log ?? defaultLog;
  const onError = options.onError ?? defaultOnError;
  const serveConnection = options.serveConnection === undefined
    ? internalServeConnection()
    : options.serveConnection ?? undefined;
  if (!serveConnection) {
    log("warn", "Connection limits and timeouts are off: this Deno lacks serveHttpOnConnection");
    return fallback(options, handler, onError);
  }
  const maxConnections = options.maxConnections ?? defaultMaxConnections(openFileLimit());
  const headerTimeoutMs = options.headerTimeoutMs ?? 10_000;
  const idleTimeoutMs = options.idleTimeoutMs ?? 60_000;
  const bodyTimeoutMs = options.bodyTimeoutMs;
  const now = options.now ?? (() => performance.now());
  if (!(maxConnections >= 1) || !(headerTimeoutMs > 0) || !(idleTimeoutMs > 0)) {
    throw new RangeError(
      "Cannot start the HTTP listener: connection cap and time limits must be positive",
    );
  }
  // A connection to be closed after its response is cut this long after the response was
  // handed over (`completed` does not wait until it is written out).
  const graceMs = Math.min(1_000, headerTimeoutMs, idleTimeoutMs);

  const listener = Deno.listen({
    hostname: options.hostname ?? "0.0.0.0",
    port: options.port ?? 8000,
  });
  const addr = listener.addr;
  const counters = { accepted: 0, refused: 0, evicted: 0, timedOut: 0, acceptErrors: 0 };
  /** Every connection whose server has not finished. */
  const all = new Set<Connection>();
  /** Connections not being closed, which count against the cap. */
  let live = 0;
  // Connections without a request in flight wait in one of these queues, oldest first (a Set
  // keeps insertion order, and a connection is (re)inserted with a fresh `since`): the sweep
  // and the eviction look only at the head of each.
  const awaitingHead = new Set<Connection>();
  const idle = new Set<Connection>();
  const closing = new Set<Connection>();
  let stopping = false;
  const allClosed = Promise.withResolvers<void>();

  function enqueue(c: Connection, queue: Set<Connection>): void {
    c.queue?.delete(c);
    c.since = now();
    c.queue = queue;
    queue.add(c);
  }

  function retire(c: Connection): void {
    c.closing = true;
    live--;
  }

  /** Closes a connection without a request in flight, now. */
  function cut(c: Connection): void {
    if (!c.closing) retire(c);
    c.queue?.delete(c);
    c.queue = undefined;
    if (!c.cancel) {
      c.server?.shutdown().catch(() => {});
      return;
    }
    try {
      c.cancel();
    } catch {
      // The connection's server has already gone (it ended on its own meanwhile).
    }
  }

  /** Closes a connection once its response is out: the sweep cuts it after `graceMs`. */
  function closeSoon(c: Connection): void {
    if (c.closing) return;
    retire(c);
    if (c.inFlight === 0) enqueue(c, closing);
  }

  /**
   * The connection to close to make room: the oldest that never sent a request (a flood of
   * sockets that say nothing sits there), else the one idle for the longest time; never one with a
   * request in flight. A real client's kept-alive connection is the last to go.
   */
  function longestIdle(): Connection | undefined {
    return first(awaitingHead) ?? first(idle);
  }

  function sweep(): void {
    const t = now();
    for (const c of awaitingHead) {
      if (t - c.since < headerTimeoutMs) break;
      counters.timedOut++;
      cut(c);
    }
    for (const c of idle) {
      if (t - c.since < idleTimeoutMs) break;
      counters.timedOut++;
      cut(c);
    }
    for (const c of closing) {
      if (t - c.since < graceMs) break;
      cut(c);
    }
  }
  const sweepMs = Math.max(5, Math.min(1_000, Math.min(headerTimeoutMs, idleTimeoutMs) / 4));
  const sweeper = setInterval(sweep, sweepMs);

  function open(conn: Deno.Conn): void {
    const c: Connection = {
      server: undefined,
      cancel: undefined,
      inFlight: 0,
      since: 0,
      closing: false,
      queue: undefined,
    };
    const release = (request: Request) => {
      if (doomedPending > 0 && doomed.has(request)) {
        doomed.delete(request);
        doomedPending--;
        closeSoon(c);
      }
      if (--c.inFlight === 0) enqueue(c, c.closing ? closing : idle);
    };
    const handle: Handler = (request, info) => {
      if (c.inFlight++ === 0 && c.queue) {
        c.queue.delete(c);
        c.queue = undefined;
      }
      // `completed` settles once the response has been handed over or has failed: until then
      // the connection is busy, a streamed answer included.
      const settle = () => release(request);
      info.completed.then(settle, settle);
      if (bodyTimeoutMs !== undefined) (request as Stamped)[BODY_TIMEOUT] = bodyTimeoutMs;
      return handler(request, info);
    };
    // The per-connection server cuts its connection when this signal aborts. Aborting for real
    // would run Deno's handler inside the event dispatch, where an error (the connection ended
    // on its own a moment before) is uncaught and ends the process: keep the handler, call it
    // in a try instead.
    const signal = new AbortController().signal;
    Object.defineProperty(signal, "addEventListener", {
      value: (type: string, listener: () => void) => {
        if (type === "abort") c.cancel = listener;
      },
    });
    all.add(c);
    live++;
    enqueue(c, awaitingHead);
    try {
      c.server = serveConnection!(conn, signal, handle, onError, () => {});
    } catch (error) {
      log("error", "Cannot serve a connection", { error: String(error) });
      try {
        conn.close();
      } catch { /* already taken or closed */ }
      forget(c);
      return;
    }
    const done = () => forget(c);
    c.server.finished.then(done, done);
  }

  function forget(c: Connection): void {
    all.delete(c);
    c.queue?.delete(c);
    c.queue = undefined;
    c.cancel = undefined;
    if (!c.closing) retire(c);
    if (stopping && all.size === 0) allClosed.resolve();
  }

  const acceptLoop = (async () => {
    let backoff = 0;
    // Accept errors come in bursts (a flood keeps the descriptors used up): one line when a
    // burst starts and one when accepts work again; bursts within LOG_QUIET_MS of that are
    // only counted, and the next line says how many went unlogged.
    let failing = false;
    let quietUntil = -Infinity;
    let unlogged = 0;
    while (!stopping) {
      let conn: Deno.Conn;
      try {
        conn = await listener.accept();
      } catch (error) {
        if (stopping) break;
        counters.acceptErrors++;
        if (!failing && now() >= quietUntil) {
          log("error", "Cannot accept connections; retrying", {
            error: error instanceof Error ? error.message : String(error),
            open: live,
            unlogged,
          });
          failing = true;
          unlogged = 0;
        } else if (!failing) {
          unlogged++;
        }
        // Out of descriptors: idle client connections are the cheapest ones to give back, a few
        // at once so that the next accepts do not run straight into the limit again.
        for (let i = 0; i < EVICT_ON_ACCEPT_ERROR; i++) {
          const victim = longestIdle();
          if (!victim) break;
          counters.evicted++;
          cut(victim);
        }
        backoff = Math.min(MAX_BACKOFF_MS, backoff ? backoff * 2 : FIRST_BACKOFF_MS);
        await new Promise((r) => setTimeout(r, backoff));
        continue;
      }
      backoff = 0;
      if (failing) {
        log("warn", "Accepting connections again", { acceptErrors: counters.acceptErrors });
        failing = false;
        quietUntil = now() + LOG_QUIET_MS;
      }
      if (stopping) {
        conn.close();
        break;
      }
      counters.accepted++;
      if (live >= maxConnections) {
        const victim = longestIdle();
        if (!victim) {
          counters.refused++;
          conn.close();
          continue;
        }
        counters.evicted++;
        cut(victim);
      }
      open(conn);
    }
  })();

  options.onListen?.(addr);

  let shutdownPromise: Promise<void> | undefined;
  function shutdown(): Promise<void> {
    shutdownPromise ??= (async () => {
      stopping = true;
      listener.close();
      await acceptLoop;
      if (all.size === 0) allClosed.resolve();
      // An idle connection closes now, a busy one after its response (gracefully: its server
      // says `connection: close` and then closes); the sweep keeps running to cut those that
      // linger.
      for (const c of all) {
        if (c.inFlight === 0) {
          cut(c);
        } else if (!c.closing) {
          retire(c);
          c.server?.shutdown().catch(() => {});
        }
      }
      await allClosed.promise;
      clearInterval(sweeper);
    })();
    return shutdownPromise;
  }

  return {
    addr,
    finished: allClosed.promise.then(() => shutdownPromise),
    shutdown,
    stats: () => ({ open: all.size, maxConnections, ...counters }),
  };
}

function first<T>(set: Set<T>): T | undefined {
  for (const v of set) return v;
  return undefined;
}

function fallback(
  options: ListenerOptions,
  handler: Handler,
  onError: (error: unknown) => Response | Promise<Response>,
): HttpListener {
  const server = Deno.serve({
    hostname: options.hostname,
    port: options.port,
    onError,
    onListen: (addr) => options.onListen?.(addr),
  }, handler);
  return {
    addr: server.addr,
    finished: server.finished,
    shutdown: () => server.shutdown(),
    stats: () => ({
      open: 0,
      maxConnections: 0,
      accepted: 0,
      refused: 0,
      evicted: 0,
      timedOut: 0,
      acceptErrors: 0,
    }),
  };
}
