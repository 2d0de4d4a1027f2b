/** What every route and background task of the coordinator shares. */
import type { DatabaseSync } from "node:sqlite";
import type { Config } from "./config.ts";
import type { Bus } from "./telemetry/bus.ts";
import type { Registry } from "./fleet/registry.ts";
import type { CommandQueue } from "./fleet/commands.ts";
import type { Scheduler } from "./scheduler/mod.ts";
import type { Metrics } from "./telemetry/metrics.ts";
import type { Logger } from "./telemetry/logger.ts";
import type { SecurityStore } from "./security/store.ts";
import type { Stats } from "./telemetry/live_stats.ts";
import type { LiveHub } from "./api/admin/live.ts";
import type { UpstreamClient } from "./proxy/upstream.ts";
import type { Watchdog } from "./proxy/watchdog.ts";

/** The coordinator's shared state, built once in main.ts (or by a test). */
export interface AppContext {
  config: Config;
  db: DatabaseSync;
  bus: Bus;
  registry: Registry;
  commands: CommandQueue;
  scheduler: Scheduler;
  metrics: Metrics;
  logger: Logger;
  /** Secrets, API keys and admin sessions. */
  security: SecurityStore;
  /** Live statistics for the dashboard. */
  stats: Stats;
  /** The open live streams of the dashboard, ended on shutdown. */
  live: LiveHub;
  /** Kept-alive connections to agents for proxied requests. */
  upstream: UpstreamClient;
  /** First-byte and silence limits of proxied requests, on one timer. */
  watchdog: Watchdog;
  /** Clock, injectable for tests. */
  now: () => number;
}
