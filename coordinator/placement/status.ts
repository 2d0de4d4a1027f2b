/**
 * The shapes of the placement status view (`GET /api/admin/placements/status`, the Placement
 * page): computed by `plan.ts`, sent to the dashboard through `dashboard/wire.ts`.
 */
import type { PlacementRule } from "./rules.ts";

export type { PlacementRule };

/**
 * One model on one agent, as its placement rule sees it:
 * - `ok`: installed (a pull that just succeeded counts until the agent's next report);
 * - `pulling`: a pull is under way (`progress`);
 * - `missing`: wanted and not there yet (`reason`: waiting for a pull slot, agent draining …);
 * - `failed`: the last pull failed (`error`), the next try is at `retry_at`;
 * - `no_disk`: the agent's disk lacks the room (`reason`);
 * - `offline`: wanted on an agent that is offline;
 * - `unwanted`: there although the rule's `never_on` forbids it (it is being deleted).
 */
export type PlacementState =
  | "ok"
  | "pulling"
  | "missing"
  | "failed"
  | "no_disk"
  | "offline"
  | "unwanted";

/** A cell of the placement view: one agent for one rule. */
export interface PlacementCell {
  agent_id: string;
  agent_name: string;
  agent_status: "online" | "offline" | "draining";
  /** The rule wants the model here (false: a spare copy, or one `never_on` forbids). */
  wanted: boolean;
  state: PlacementState;
  reason?: string;
  progress?: { status: string; completed?: number; total?: number };
  error?: string;
  /** Failed tries in a row. */
  failures?: number;
  retry_at?: string;
  /** In memory now. */
  loaded: boolean;
  /** One of the agents the rule keeps the model loaded on. */
  warm: boolean;
  expires_at?: string;
  /** The last failed warm load. */
  warm_error?: string;
  disk_free?: number;
}

/** One rule and how far the fleet is from it. */
export interface PlacementRuleStatus {
  rule: PlacementRule;
  /** The model's normalised name. */
  key: string;
  /** The model's size on disk, from an agent that has it. */
  size?: number;
  /** No drift: every wanted copy is there, warm enough, and no forbidden copy is left. */
  met: boolean;
  /** What is not as the rule says, in words. */
  drift: string[];
  counts: {
    wanted: number;
    ok: number;
    pulling: number;
    warm: number;
    warm_wanted: number;
    unwanted: number;
  };
  agents: PlacementCell[];
}

/** `GET /api/admin/placements/status`. */
export interface PlacementStatus {
  /** This coordinator runs the reconciler (with several, the leader does). */
  active: boolean;
  at: string;
  pulls: { running: number; max: number; max_per_agent: number };
  rules: PlacementRuleStatus[];
}
