/**
 * What every route and background task of the coordinator shares: one context, built once by
 * `server.ts` (or a test). It names services; it never imports routes.
 */
import type { Config } from "./config.ts";
import type { Bus } from "./telemetry/bus.ts";
import type { Registry } from "./fleet/registry.ts";
import type { CommandQueue } from "./fleet/commands.ts";
import type { Scheduler } from "./scheduler/mod.ts";
import type { Metrics } from "./telemetry/metrics.ts";
import type { Logger } from "./telemetry/logger.ts";
import type { SecurityStore } from "./security/store.ts";
import type { Stats } from "./telemetry/live_stats.ts";
import type { LiveHub } from "./telemetry/live_hub.ts";
import type { RequestLog } from "./telemetry/request_log.ts";
import type { EventLog } from "./telemetry/event_log.ts";
import type { UpstreamClient } from "./proxy/upstream.ts";
import type { Watchdog } from "./proxy/watchdog.ts";
import type { Store } from "./store/mod.ts";
import type { ModelAliases } from "./aliases/mod.ts";
import type { Placement } from "./placement/reconciler.ts";
import type { Quotas } from "./quotas/mod.ts";

/** The coordinator's shared state. */
export interface AppContext {
  config: Config;
  /** Durable state (SQLite by default); services keep what requests need in memory. */
  store: Store;
  bus: Bus;
  registry: Registry;
  commands: CommandQueue;
  scheduler: Scheduler;
  metrics: Metrics;
  logger: Logger;
  /** Model names clients use that other models serve (`gpt-4o-mini` → `llama3.2:3b`). */
  aliases: ModelAliases;
  /** Secrets, API keys and admin sessions. */
  security: SecurityStore;
  /** Per-key limits, checked before a request is routed. */
  quotas: Quotas;
  /** Every client request, for the Requests page and the API. */
  log: RequestLog;
  /** Registrations, status changes, failures, pulls. */
  events: EventLog;
  /** Live statistics for the dashboard. */
  stats: Stats;
  /** The open live streams of the dashboard, ended on shutdown. */
  live: LiveHub;
  /** Kept-alive connections to agents for proxied requests. */
  upstream: UpstreamClient;
  /** Placement rules and their reconciler (acting only on the leading coordinator). */
  placement: Placement;
  /** First-byte and silence limits of proxied requests, on one timer. */
  watchdog: Watchdog;
  /** Secrets generated at this (first) start, to be shown once. */
  firstStart: { agentToken?: string; adminPassword?: string };
  /** Clock, injectable for tests. */
  now: () => number;
  /**
   * This coordinator process's random id. Requests it sends to agents carry it in
   * `X-Coordinator-Hop`, so a request that comes back to it is recognised as a loop.
   */
  instanceId: string;
}
