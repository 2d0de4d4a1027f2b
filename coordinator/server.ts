/**
 * Assembling and running the coordinator: context (database, registry, scheduler, request log),
 * the HTTP server, the health monitor, and a graceful stop.
 */
import type { Config } from "./config.ts";
import type { AppContext } from "./context.ts";
import { Bus } from "./telemetry/bus.ts";
import { openDatabase } from "./store/sqlite/mod.ts";
import { Registry } from "./fleet/registry.ts";
import { CommandQueue } from "./fleet/commands.ts";
import { startMonitor } from "./health/monitor.ts";
import { Scheduler } from "./scheduler/mod.ts";
import { RequestLog } from "./telemetry/request_log.ts";
import { createApp } from "./http/app.ts";
import { startLocalOllama } from "./fleet/local_ollama.ts";
import { Metrics } from "./telemetry/metrics.ts";
import { SecurityStore } from "./security/store.ts";
import { ModelPins } from "./scheduler/pins.ts";
import { logBus, Logger } from "./telemetry/logger.ts";
import { Stats } from "./telemetry/live_stats.ts";
import { LiveHub } from "./api/admin/live.ts";
import { UpstreamClient } from "./proxy/upstream.ts";
import { Watchdog, watchdogPeriod } from "./proxy/watchdog.ts";

/** The full context, with the request log. */
export type FullContext = AppContext & {
  log: RequestLog;
  /** Secrets generated at this (first) start, to be shown once. */
  firstStart: { agentToken?: string; adminPassword?: string };
};

/** Builds the coordinator's shared state from a configuration. */
export function createContext(
  config: Config,
  options: { now?: () => number; random?: () => number } = {},
): FullContext {
  const now = options.now ?? Date.now;
  const db = openDatabase(config.databaseUrl);
  const bus = new Bus();
  const registry = new Registry(db, { agentTimeoutMs: config.agentTimeout * 1000, now, bus });
  const security = new SecurityStore(db, now);
  const scheduler = new Scheduler(registry, {
    policy: config.schedulerPolicy,
    queueMaxLength: config.queueMaxLength,
    queueTimeoutMs: config.queueTimeout * 1000,
    now,
    random: options.random,
    pins: new ModelPins(security),
  });
  scheduler.onTrip = (agent) =>
    registry.recordEvent(
      "circuit_open",
      agent.id,
      `Agent "${registry.label(agent)}" failed repeatedly; taken out for a while`,
    );
  const log = new RequestLog(db, { bus, retentionDays: config.requestLogRetentionDays });
  const metrics = new Metrics(bus, registry, scheduler, now);
  const logger = new Logger({ level: config.logLevel, format: config.logFormat });
  logBus(bus, logger);
  const commands = new CommandQueue(bus);

  const firstStart = {
    agentToken: security.ensureAgentToken(config.agentToken).generated,
    adminPassword: security.ensureAdminPassword(config.adminPassword).generated,
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
  stats.replay(log.query({ since: new Date(now() - 3_600_000).toISOString(), limit: 10_000 }));
  const live = new LiveHub();
  return {
    config,
    db,
    bus,
    registry,
    commands,
    scheduler,
    log,
    metrics,
    logger,
    security,
    firstStart,
    now,
    stats,
    live,
    upstream: new UpstreamClient(),
    watchdog: new Watchdog(
      watchdogPeriod(config.firstByteTimeout * 1000, config.idleTimeout * 1000),
    ),
  };
}

/** A running coordinator. */
export interface Coordinator {
  ctx: FullContext;
  url: string;
  port: number;
  /** Secrets generated at this (first) start, to be shown once. */
  firstStart: { agentToken?: string; adminPassword?: string };
  /** Stops accepting, lets in-flight requests finish, flushes the log, closes the database. */
  stop(): Promise<void>;
}

/** Starts the HTTP server and the background tasks. */
export async function startCoordinator(
  config: Config,
  options: { now?: () => number; quiet?: boolean } = {},
): Promise<Coordinator> {
  const ctx = createContext(config, options);
  const app = createApp(ctx);
  const server = Deno.serve({
    hostname: config.host,
    port: config.port,
    onListen: () => {},
  }, app.fetch);
  const stopMonitor = startMonitor(ctx.registry, {
    intervalMs: config.healthCheckInterval * 1000,
    probeTimeoutMs: config.probeTimeout * 1000,
    probeIntervalMs: config.probeInterval * 1000,
    afterTick: () => ctx.scheduler.pump(),
  });
  const prune = setInterval(() => ctx.log.prune(), 3_600_000);
  const stopStats = ctx.stats.start();
  const stopLocal = config.autoRegisterLocal
    ? await startLocalOllama(ctx.registry, {
      url: config.localOllamaUrl,
      intervalMs: config.heartbeatInterval * 1000,
    })
    : null;
  const host = config.host === "0.0.0.0" || config.host === "::" ? "127.0.0.1" : config.host;
  const port = server.addr.port;
  let stopped: Promise<void> | undefined;
  return {
    ctx,
    firstStart: ctx.firstStart,
    port,
    url: `http://${host.includes(":") ? `[${host}]` : host}:${port}`,
    stop() {
      stopped ??= (async () => {
        const monitorStopped = stopMonitor();
        stopLocal?.();
        clearInterval(prune);
        stopStats();
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
        await monitorStopped;
        ctx.upstream.close();
        ctx.log.close();
        ctx.registry.flush();
        ctx.security.close();
        ctx.db.close();
      })();
      return stopped;
    },
  };
}
