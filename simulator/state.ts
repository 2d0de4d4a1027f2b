/**
 * What the route handlers share with the server: settings, models, slots, the fault in force and
 * the switches that end everything on close.
 *
 * @module
 */
import type { SimFault } from "./faults.ts";
import type { ModelStore } from "./models.ts";
import type { SlotPool } from "./slots.ts";

/** Settings that can change at run time (`update()`). */
export interface Settings {
  tokensPerSecond: number;
  ttftMs: number;
  loadMs: number;
  parallel: number;
  maxQueue: number;
  version: string;
  quiet: boolean;
  /** How long a streamed pull takes to download (spread over its progress lines). */
  pullMs: number;
  /** When set, pulls fail with this error after the manifest, as for a name the registry lacks. */
  pullError?: string;
}

/** The simulator's state, owned by the server and read by the handlers. */
export interface SimState {
  readonly settings: Settings;
  readonly models: ModelStore;
  readonly slots: SlotPool;
  /** The fault in force; a request reads it when it starts. */
  fault: SimFault;
  /** Aborts when the simulator closes: queued, loading, hanging and paced requests stop. */
  readonly closing: AbortSignal;
  /** One kill switch per body being streamed; close() pulls them all. */
  readonly streams: Set<() => void>;
}
