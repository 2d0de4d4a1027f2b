/**
 * Assembling and running the coordinator: the store, the services on it, the HTTP server, the
 * background jobs (health monitor, retention), and a graceful stop.
 */
import type { Config } from "./config.ts";
import type { AppContext } from "./context.ts";
import { Bus } from "./telemetry/bus.ts";
import { openStore } from "./store/open.ts";
import type { Store } from "./store/mod.ts";
import { Registry } from "./fleet/registry.ts";
import { CommandQueue } from "./fleet/commands.ts";
import { startMonitor } from "./health/monitor.ts";
import { Scheduler } from "./scheduler/mod.ts";
import { RequestLog } from "./telemetry/request_log.ts";
import { EventLog } from "./telemetry/event_log.ts";
import { createApp } from "./http/app.ts";
import { type HttpListener, serve } from "./http/listener.ts";
import { type LocalOllama, startLocalOllama } from "./fleet/local_ollama.ts";
import { Metrics } from "./telemetry/metrics.ts";
import { SecurityStore } from "./security/store.ts";
import { ModelPins } from "./scheduler/pins.ts";
import { ModelAliases } from "./aliases/mod.ts";
import { logBus, Logger } from "./telemetry/logger.ts";
import { Stats } from "./telemetry/live_stats.ts";
import { LiveHub } from "./telemetry/live_hub.ts";
import { UpstreamClient } from "./proxy/upstream.ts";
import { Watchdog, watchdogPeriod } from "./proxy/watchdog.ts";
import { startCluster } from "./cluster/mod.ts";
import { Placement } from "./placement/reconciler.ts";
import { pullsOf } from "./api/admin/models.ts";
import { Quotas } from "./quotas/mod.ts";

/** Builds the coordinator's shared state from a configuration. */
export async function createContext(
  config: Config,
  options: { now?: () => number; random?: () => number; store?: Store } = {},
): Promise<AppContext> {
  const now = options.now ?? Date.now;
  const store = options.store ?? await openStore(config.databaseUrl);
  try {
    return await assemble(store, config, now, options.random);
  } catch (e) {
    await store.close();
    throw e;
  }
}

async function assemble(
  store: Store,
  config: Config,
  now: () => number,
  random?: () => number,
): Promise<AppContext> {
  const snapshot = await store.load();
  const bus = new Bus();
  const events = new EventLog(store, { bus, now });
  const registry = new Registry(store, {
    agentTimeoutMs: config.agentTimeout * 1000,
    now,
    bus,
    events,
    agents: snapshot.agents,
  });
  const security = new SecurityStore(store, snapshot, now);
  const scheduler = new Scheduler(registry, {
    policy: config.schedulerPolicy,
    queueMaxLength: config.queueMaxLength,
    queueTimeoutMs: config.queueTimeout * 1000,
    now,
    random,
    pins: new ModelPins(security),
    weightOf: (tenant) => security.keyById(tenant)?.limits.weight ?? 1,
  });
  const quotas = new Quotas({
    limitsOf: (tenant) => security.keyById(tenant)?.limits,
    // Keys from API_KEYS (`env:…`, see http/access.ts) last as long as the process.
    active: (tenant) => tenant.startsWith("env:") || security.keyById(tenant) !== undefined,
    now,
  });
  scheduler.onTrip = (agent) =>
    registry.recordEvent(
      "circuit_open",
      agent.id,
      `Agent "${registry.label(agent)}" failed repeatedly; taken out for a while`,
    );
  const log = new RequestLog(store, { bus });
  const metrics = new Metrics(bus, registry, scheduler, now);
  metrics.store = () => ({
    requestLog: log.counts,
    events: events.counts,
    agentWriteFailures: registry.writeFailures,
  });
  metrics.keys = { quotas, describe: (tenant) => security.describeKey(tenant) };
  const logger = new Logger({ level: config.logLevel, format: config.logFormat });
  logBus(bus, logger);
  const commands = new CommandQueue(bus);
  const instanceId = crypto.randomUUID();
  const pullDeps = { registry, bus, config, instanceId };
  const placement = new Placement({
    ...pullDeps,
    commands,
    security,
    now,
    pull: (agent, model) => void pullsOf(pullDeps).start(agent, model),
  });

  const firstStart = {
    agentToken: (await security.ensureAgentToken(config.agentToken)).generated,
    adminPassword: (await security.ensureAdminPassword(config.adminPassword)).generated,
  };
  const stats = new Stats({
    bus,
    now,
    sample: () => ({
      queue: Object.values(scheduler.queueDepths()).reduce((a, b) => a + b, 0),
      inFlight: registry.all().reduce((n, a) => n + a.inFlight, 0),
    }),
  });
  // The charts pick up the last hour from the request log after a restart.
  stats.replay(
    await store.requests({ since: new Date(now() - 3_600_000).toISOString(), limit: 10_000 }),
  );
  return {
    config,
    store,
    bus,
    registry,
    commands,
    scheduler,
    log,
    events,
    metrics,
    logger,
    security,
    aliases: new ModelAliases(security),
    quotas,
    firstStart,
    now,
    instanceId,
    stats,
    live: new LiveHub(),
    upstream: new UpstreamClient(),
    placement,
    watchdog: new Watchdog(
      watchdogPeriod(config.firstByteTimeout * 1000, config.idleTimeout * 1000),
    ),
  };
}

/** Applies the retention settings to the request log, events and sessions. */
export async function applyRetention(ctx: AppContext): Promise<void> {
  const now = ctx.now();
  const before = (days: number) => new Date(now - days * 86_400_000).toISOString();
  ctx.security.pruneSessions();
  try {
    await ctx.store.prune({
      requestsBefore: before(ctx.config.requestLogRetentionDays),
      maxRequests: ctx.config.requestLogMaxRows,
      eventsBefore: before(ctx.config.eventRetentionDays),
      maxEvents: ctx.config.eventMaxRows,
      sessionsBefore: new Date(now).toISOString(),
    });
  } catch (e) {
    console.error("Cannot apply retention:", (e as Error).message);
  }
}

/** Rows written since the last prune that call for another one before the hour is up. */
const PRUNE_AFTER_ROWS = 20_000;

/**
 * Runs {@linkcode applyRetention} at start, every hour, and sooner when many rows were written:
 * a flood of requests or of client model operations (each an event) cannot grow the database by
 * more than a bounded amount between two prunes. The volume is looked at ten times a second (two
 * counters, no query): a prune follows once the rows written since the last one reach 20,000 or a
 * tenth of the smaller row limit (REQUEST_LOG_MAX_ROWS, EVENT_MAX_ROWS), so a table stays within
 * about a tenth of its limit plus a tenth of a second's writes. Returns the function that stops it.
 */
export function startRetention(ctx: AppContext, options: { checkMs?: number } = {}): () => void {
  let lastAt = ctx.now();
  let lastRows = 0;
  let running = false;
  const rows = () => ctx.log.counts.written + ctx.events.counts.written;
  const pruneAfter = Math.min(
    PRUNE_AFTER_ROWS,
    Math.ceil(Math.min(ctx.config.requestLogMaxRows, ctx.config.eventMaxRows) / 10),
  );
  const run = async () => {
    running = true;
    lastAt = ctx.now();
    lastRows = rows();
    try {
      await applyRetention(ctx);
    } finally {
      running = false;
    }
  };
  void run();
  const timer = setInterval(() => {
    if (running) return;
    if (ctx.now() - lastAt >= 3_600_000 || rows() - lastRows >= pruneAfter) void run();
  }, options.checkMs ?? 100);
  Deno.unrefTimer(timer);
  return () => clearInterval(timer);
}

/** Writes what the services buffer and closes the store. */
export async function closeContext(ctx: AppContext): Promise<void> {
  ctx.upstream.close();
  ctx.placement.close();
  await ctx.placement.settled();
  await Promise.all([
    ctx.log.close(),
    ctx.events.close(),
    ctx.registry.flush(),
    ctx.security.close(),
  ]);
  await ctx.store.close();
}

/** A running coordinator. */
export interface Coordinator {
  ctx: AppContext;
  url: string;
  port: number;
  /** The HTTP front door: its connection counters. */
  listener: HttpListener;
  /** Secrets generated at this (first) start, to be shown once. */
  firstStart: { agentToken?: string; adminPassword?: string };
  /** What the look for a local Ollama found; null when AUTO_REGISTER_LOCAL_OLLAMA is off. */
  localOllama: LocalOllama | null;
  /** Whether this coordinator runs the fleet-wide chores (always, unless others share the store). */
  readonly leading: boolean;
  /** Stops accepting, lets in-flight requests finish, flushes the log, closes the database. */
  stop(): Promise<void>;
}

/** Starts the HTTP server and the background tasks. */
export async function startCoordinator(
  config: Config,
  options: {
    now?: () => number;
    quiet?: boolean;
    /** An opened store to run on instead of opening `config.databaseUrl` (tests). */
    store?: Store;
  } = {},
): Promise<Coordinator> {
  const ctx = await createContext(config, options);
  const app = createApp(ctx);
  const server = serve({
    hostname: config.host,
    port: config.port,
    maxConnections: config.clientMaxConnections,
    headerTimeoutMs: config.clientHeaderTimeout * 1000,
    idleTimeoutMs: config.clientIdleTimeout * 1000,
    bodyTimeoutMs: config.clientBodyTimeout * 1000,
    log: (level, msg, fields) => ctx.logger.log(level, msg, fields),
  }, app.fetch);
  // The fleet-wide chores run on one coordinator at a time: this one, unless others share the
  // store and another leads.
  let chores:
    | { monitor: () => Promise<void>; retention: () => void; placement: () => Promise<void> }
    | undefined;
  const choresStopped: Promise<void>[] = [];
  const membership = startCluster(ctx, {
    leading(now) {
      if (now && !chores) {
        chores = {
          monitor: startMonitor(ctx.registry, {
            intervalMs: config.healthCheckInterval * 1000,
            probeTimeoutMs: config.probeTimeout * 1000,
            probeIntervalMs: config.probeInterval * 1000,
            afterTick: () => ctx.scheduler.pump(),
          }),
          retention: startRetention(ctx),
          placement: ctx.placement.start({ intervalMs: config.placementInterval * 1000 }),
        };
      } else if (!now && chores) {
        choresStopped.push(chores.monitor(), chores.placement());
        chores.retention();
        chores = undefined;
      }
    },
  });
  ctx.metrics.cluster = () => ({ leading: chores !== undefined, peers: membership.peers });
  const stopStats = ctx.stats.start();
  const stopMetrics = ctx.metrics.start();
  const localOllama = config.autoRegisterLocal
    ? await startLocalOllama(ctx.registry, {
      url: config.localOllamaUrl,
      intervalMs: config.heartbeatInterval * 1000,
      instanceId: ctx.instanceId,
    })
    : null;
  const host = config.host === "0.0.0.0" || config.host === "::" ? "127.0.0.1" : config.host;
  const port = server.addr.port;
  let stopped: Promise<void> | undefined;
  return {
    ctx,
    listener: server,
    firstStart: ctx.firstStart,
    localOllama,
    port,
    url: `http://${host.includes(":") ? `[${host}]` : host}:${port}`,
    get leading() {
      return chores !== undefined;
    },
    stop() {
      stopped ??= (async () => {
        const left = membership.leave();
        localOllama?.stop();
        stopStats();
        stopMetrics();
        // Live streams never finish on their own: end them so the server can shut down.
        ctx.live.close();
        // In-flight streams get until the deadline to finish; then the database closes anyway.
        let timer: ReturnType<typeof setTimeout> | undefined;
        const deadline = new Promise<false>((r) =>
          timer = setTimeout(() => r(false), config.shutdownTimeout * 1000)
        );
        const shutdown = server.shutdown().then(() => true);
        if (!await Promise.race([shutdown, deadline])) {
          // Past the deadline: cut what still runs, so each stream ends with the API's in-stream
          // error and is logged, and give the server a moment to send those last lines.
          ctx.upstream.cutAll("The coordinator is shutting down");
          const grace = new Promise((r) => timer = setTimeout(r, 1000));
          await Promise.race([shutdown, grace]);
        }
        clearTimeout(timer);
        await Promise.all([...choresStopped, left]);
        await closeContext(ctx);
      })();
      return stopped;
    },
  };
}
