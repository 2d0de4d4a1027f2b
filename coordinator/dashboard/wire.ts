/**
 * What the server sends the dashboard's islands: the shapes of the live stream's messages and of
 * the props pages render islands with. Islands import these, never route modules.
 */
import type { AgentView } from "@oc/shared";
import type { ApiKeyRecord, KeyLimits, KeyUsageRow } from "../store/mod.ts";

export type { KeyLimits };
import type {
  AgentFigures,
  AgentSeries,
  Range,
  Series,
  StatsSummary,
} from "../telemetry/live_stats.ts";
import type { FleetEvent } from "../telemetry/bus.ts";
import type { RequestRecord } from "../telemetry/request_log.ts";

export type { AgentFigures, AgentSeries, FleetEvent, Range, RequestRecord, Series };
/** The windows the live figures are computed over (seconds), for the cards to say so. */
export { PERCENTILE_WINDOW_S, RATE_WINDOW_S } from "../telemetry/live_stats.ts";

export type {
  PlacementCell,
  PlacementRule,
  PlacementRuleStatus,
  PlacementState,
  PlacementStatus,
} from "../placement/status.ts";

/** An agent as the dashboard shows it: the API view plus its capacity in the scheduler. */
export interface AgentRow extends AgentView {
  capacity: number;
  /** Whether an admin drained it (it may be offline as well). */
  drain: boolean;
}

/** The fleet's figures now: the statistics plus agents by status and the queue per model. */
export interface FleetSummary extends StatsSummary {
  agents_online: number;
  agents_offline: number;
  agents_draining: number;
  queue_by_model: Record<string, number>;
}

/** A `stats` message of the live stream: the summary and the newest chart buckets. */
export interface StatsMessage {
  summary: FleetSummary;
  tail: Record<Range, Series>;
  agents: Record<string, AgentFigures>;
  /** On an agent's page (`?agent=`): that agent's newest chart buckets. */
  agent?: { id: string; tail: Record<Range, AgentSeries> };
}

/** The progress of one pull on one agent, as published on the bus (`progress` messages). */
export interface PullProgress {
  id: string;
  agent_id: string;
  model: string;
  status: string;
  completed?: number;
  total?: number;
  done: boolean;
  error?: string;
}

/** A model alias as `GET /api/admin/aliases` lists it (the aliases panel of the models page). */
export interface AliasView {
  /** The name clients use, e.g. `gpt-4o-mini`. */
  alias: string;
  /** The fleet's model that serves it. */
  model: string;
  /** Shown in `/api/tags` and `/v1/models`. */
  listed: boolean;
}

/** An API key as the keys API lists it (never the key itself), with its requests in flight. */
export type KeyRow = Omit<ApiKeyRecord, "hash"> & { in_flight: number };

/** The ranges key usage is shown over. */
export type UsageRange = "1h" | "24h" | "7d";

/** Usage per key over a range (`GET /api/keys/usage`). */
export interface KeyUsage {
  range: UsageRange;
  bucket_ms: number;
  /** Buckets in the range. */
  buckets: number;
  /** Start of the first bucket (epoch ms); the last one is the bucket now runs in. */
  since: number;
  rows: KeyUsageRow[];
}
