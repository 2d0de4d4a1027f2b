/**
 * The placement page's pure parts: a rule in words, the rule form's fields, and live pull progress
 * merged into the status the page shows.
 */
import { normalizeModelName } from "../../../shared/model_name.ts";
import type { PlacementRule, PlacementStatus } from "../wire.ts";

/** A rule in words: `on every agent labelled "gpu", loaded on 1, never on "laptop"`. */
export function describeRule(rule: PlacementRule): string {
  const on = rule.on.agents
    ? `on agents ${rule.on.agents.map((a) => `"${a}"`).join(", ")}`
    : rule.on.count === undefined
    ? `on every agent labelled "${rule.on.label}"`
    : `on at least ${rule.on.count} agents${
      rule.on.label === undefined ? "" : ` labelled "${rule.on.label}"`
    }`;
  const warm = rule.warm
    ? `, loaded on ${rule.warm}${rule.keep_alive ? ` (keep_alive ${rule.keep_alive})` : ""}`
    : "";
  const never = rule.never_on ? `, never on "${rule.never_on.label}"` : "";
  return `${on}${warm}${never}`;
}

/** The rule form's fields, all text as inputs hold them. */
export interface RuleForm {
  model: string;
  where: "label" | "count" | "agents";
  label: string;
  count: string;
  agents: string;
  warm: string;
  keep_alive: string;
  never_on: string;
}

/** An empty form. */
export const EMPTY_FORM: RuleForm = {
  model: "",
  where: "label",
  label: "",
  count: "2",
  agents: "",
  warm: "",
  keep_alive: "",
  never_on: "",
};

/** A rule's fields, to edit it. */
export function formFromRule(rule: PlacementRule): RuleForm {
  return {
    model: rule.model,
    where: rule.on.agents ? "agents" : rule.on.count === undefined ? "label" : "count",
    label: rule.on.label ?? "",
    count: String(rule.on.count ?? 2),
    agents: rule.on.agents?.join(", ") ?? "",
    warm: rule.warm ? String(rule.warm) : "",
    keep_alive: rule.keep_alive ?? "",
    never_on: rule.never_on?.label ?? "",
  };
}

/** The rule the form describes, or what is missing; the server checks the rest. */
export function ruleFromForm(f: RuleForm): { rule: PlacementRule } | { error: string } {
  const model = f.model.trim();
  if (!model) return { error: "Name the model, e.g. llama3.2:3b" };
  const label = f.label.trim();
  let on: PlacementRule["on"];
  if (f.where === "agents") {
    const agents = f.agents.split(",").map((a) => a.trim()).filter(Boolean);
    if (!agents.length) return { error: "Name at least one agent" };
    on = { agents };
  } else if (f.where === "count") {
    const count = Number(f.count);
    if (!Number.isInteger(count) || count < 1) return { error: "The count must be 1 or more" };
    on = label ? { count, label } : { count };
  } else {
    if (!label) return { error: "Name the label, e.g. gpu" };
    on = { label };
  }
  const rule: PlacementRule = { model, on };
  if (f.warm.trim()) {
    const warm = Number(f.warm);
    if (!Number.isInteger(warm) || warm < 0) return { error: "Warm must be 0 or more" };
    if (warm > 0) rule.warm = warm;
  }
  if (f.keep_alive.trim()) rule.keep_alive = f.keep_alive.trim();
  if (f.never_on.trim()) rule.never_on = { label: f.never_on.trim() };
  return { rule };
}

/** A pull's progress as the live stream carries it (the coordinator's or an agent's own). */
export interface ProgressUpdate {
  agent_id: string;
  model: string;
  status: string;
  completed?: number;
  total?: number;
  done?: boolean;
  error?: string;
}

/**
 * The status with live progress applied to the cells it concerns; `ended` says a pull finished,
 * so the page should fetch the status again (what the pull changed is the server's to say).
 */
export function applyProgress(
  status: PlacementStatus,
  updates: ProgressUpdate[],
): { status: PlacementStatus; ended: boolean } {
  let ended = false;
  let changed = false;
  const rules = status.rules.map((r) => {
    const mine = updates.filter((u) => u.model && normalizeModelName(u.model) === r.key);
    if (!mine.length) return r;
    const agents = r.agents.map((c) => {
      const last = mine.filter((u) => u.agent_id === c.agent_id).at(-1);
      if (!last) return c;
      changed = true;
      if (last.done || last.error) {
        ended = true;
        return c;
      }
      return {
        ...c,
        state: "pulling" as const,
        reason: undefined,
        progress: { status: last.status, completed: last.completed, total: last.total },
      };
    });
    return { ...r, agents };
  });
  return { status: changed ? { ...status, rules } : status, ended };
}

/** How long until: `now`, `in 25 s`, `in 4 min`, `in 1 h`. */
export function fmtIn(at: string | number, now: number): string {
  const ms = new Date(at).getTime() - now;
  if (!Number.isFinite(ms)) return "–";
  if (ms < 1000) return "now";
  if (ms < 60_000) return `in ${Math.round(ms / 1000)} s`;
  if (ms < 3_600_000) return `in ${Math.round(ms / 60_000)} min`;
  return `in ${Math.round(ms / 3_600_000)} h`;
}
