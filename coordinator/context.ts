/** What every route and background task of the coordinator shares. */
import type { DatabaseSync } from "node:sqlite";
import type { Config } from "./config.ts";
import type { Bus } from "./bus.ts";
import type { Registry } from "./registry/mod.ts";
import type { CommandQueue } from "./registry/commands.ts";
import type { Scheduler } from "./scheduler/mod.ts";
import type { Metrics } from "./metrics.ts";
import type { Logger } from "./log.ts";

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
  /** Clock, injectable for tests. */
  now: () => number;
}
