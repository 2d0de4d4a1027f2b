/**
 * The placement plan, a pure function of the rules, the agents as they last reported, the pulls
 * under way and the warm loads and deletes in progress: what each model's state is on each agent
 * (the status view), and what to do now to get closer to the rules (the reconciler's actions).
 * One function for both, so what the dashboard shows is what the reconciler does.
 *
 * Decisions, in short:
 * - A label rule wants every agent with the label; a named rule the agents it names; a count rule
 *   the agents that already have the model (or are getting it) and, while they are fewer than the
 *   count, online agents that can take it (not failing, with room on disk first, then the most
 *   free disk, then the oldest).
 * - A pull starts only on an online agent that is not draining, after its back-off, where the
 *   model fits on disk with 10 % to spare, and while fewer than the fleet-wide and per-agent
 *   limits of pulls run.
 * - A model is deleted only from agents carrying the rule's `never_on` label.
 * - Warm: the model stays loaded on `warm` of the online agents that have it: those where it is
 *   loaded already (latest expiry first), then others. Each load is renewed before it expires.
 */
import type { Agent } from "../fleet/registry.ts";
import type { PlacementCell, PlacementRuleStatus, PlacementState } from "./status.ts";
import { DEFAULT_KEEP_ALIVE, keepAliveMs, type PlacementRule } from "./rules.ts";
import type { PullState } from "./tracker.ts";
import { normalizeModelName } from "@oc/shared";

/** A pull that succeeded counts as installed until the agent reports its models again. */
export const SUCCESS_GRACE_MS = 60_000;
/** A count rule still counts a copy on an agent offline for less than this (a reboot). */
export const OFFLINE_GRACE_MS = 10 * 60_000;
/** Room a pull needs on disk, as a share of the model's size. */
export const DISK_MARGIN = 1.1;
/** A warm load counts as loaded until the agent reports its models again. */
export const LOAD_GRACE_MS = 30_000;

/** When a warm load is renewed: this long before it would expire. */
export function renewBefore(keepAlive: number): number {
  return Math.min(keepAlive / 3, 10 * 60_000);
}

/** A warm load or a delete: kept by the reconciler (only the leader does them). */
export interface ChoreState {
  running: boolean;
  failures: number;
  error?: string;
  retryAt?: number;
  /** Load: when the last successful load happened, and when its keep_alive runs out. */
  doneAt?: number;
  until?: number;
}

/** What the plan reads. */
export interface PlanInput {
  rules: readonly PlacementRule[];
  agents: readonly Agent[];
  now: number;
  pulls: { get(agentId: string, key: string): PullState | undefined; running(): PullState[] };
  chore(kind: "load" | "delete", agentId: string, key: string): ChoreState | undefined;
  limits: { maxPulls: number; maxPullsPerAgent: number };
  name(agent: Agent): string;
}

/** Something the reconciler should do now. */
export type Action =
  | { type: "pull"; agent: Agent; model: string; key: string }
  | { type: "load"; agent: Agent; model: string; key: string; keepAlive: string; renew: boolean }
  | { type: "delete"; agent: Agent; model: string; key: string; label: string };

/** The plan's result. */
export interface Plan {
  rules: PlacementRuleStatus[];
  actions: Action[];
  /** Pulls running before the actions start. */
  running: number;
}

const GB = 1e9;
/** Agent names in the reader's order; one collator, as `localeCompare` builds one per call. */
const byName = new Intl.Collator();
const fmtGb = (bytes: number) => `${(bytes / GB).toFixed(1)} GB`;

/** `a, b, c` with at most five names, then how many more. */
function names(list: string[]): string {
  return list.length <= 5
    ? list.join(", ")
    : `${list.slice(0, 5).join(", ")} and ${list.length - 5} more`;
}

/** Computes the state of every rule and the actions that bring the fleet closer to them. */
export function plan(input: PlanInput): Plan {
  const { pulls } = input;
  const running = pulls.running();
  const perAgent = new Map<string, number>();
  for (const p of running) perAgent.set(p.agentId, (perAgent.get(p.agentId) ?? 0) + 1);
  const budget = { fleet: running.length };
  // Sizes of the models that rules name or pulls are fetching: only those are ever asked for.
  const keys = new Set(input.rules.map((r) => normalizeModelName(r.model)));
  for (const p of running) keys.add(p.key);
  const sizes = modelSizes(input.agents, keys);
  const byId = new Map(input.agents.map((a) => [a.id, a]));
  const actions: Action[] = [];
  const rules = input.rules.map((rule) =>
    planRule(rule, { ...input, sizes, byId, running, perAgent, budget, actions })
  );
  return { rules, actions, running: running.length };
}

/** The largest size an agent reports for each of `keys`. */
function modelSizes(agents: readonly Agent[], keys: Set<string>): Map<string, number> {
  const sizes = new Map<string, number>();
  for (const a of agents) {
    for (const key of keys) {
      const size = a.modelSizes.get(key);
      if (size !== undefined && size > (sizes.get(key) ?? 0)) sizes.set(key, size);
    }
  }
  return sizes;
}

interface RuleInput extends PlanInput {
  sizes: Map<string, number>;
  /** The agents by id: every rule looks agents up per cell, and a fleet has a thousand. */
  byId: Map<string, Agent>;
  /** The pulls running when the plan began (the tracker's list, read once). */
  running: PullState[];
  perAgent: Map<string, number>;
  budget: { fleet: number };
  actions: Action[];
}

function findAgent(input: RuleInput, ref: string): Agent | undefined {
  return input.byId.get(ref) ??
    input.agents.find((a) => a.displayName === ref || a.machineName === ref);
}

function planRule(rule: PlacementRule, input: RuleInput): PlacementRuleStatus {
  const { agents, now, pulls } = input;
  const key = normalizeModelName(rule.model);
  const size = input.sizes.get(key);
  const drift: string[] = [];
  const forbidden = rule.never_on?.label;
  const excluded = (a: Agent) => forbidden !== undefined && a.labels.includes(forbidden);
  const has = (a: Agent) => a.modelKeys.has(key);
  const pull = (a: Agent) => pulls.get(a.id, key);
  const justPulled = (a: Agent) => {
    const p = pull(a);
    return !!p && !p.running && p.failures === 0 && p.succeededAt !== undefined &&
      now - p.succeededAt < SUCCESS_GRACE_MS;
  };
  const present = (a: Agent) => has(a) || !!pull(a)?.running || justPulled(a);
  const blocked = (a: Agent) => {
    const p = pull(a);
    return (p?.retryAt !== undefined && now < p.retryAt) || !fits(a, key, input);
  };

  // Who should have it.
  let targets: Agent[];
  if (rule.on.agents) {
    targets = [];
    for (const ref of rule.on.agents) {
      const a = findAgent(input, ref);
      if (!a) drift.push(`agent "${ref}" is not registered`);
      else if (excluded(a)) {
        drift.push(`agent "${input.name(a)}" carries the never_on label "${forbidden}"`);
      } else if (!targets.includes(a)) targets.push(a);
    }
  } else {
    const label = rule.on.label;
    const eligible = agents.filter((a) =>
      (label === undefined || a.labels.includes(label)) && !excluded(a)
    );
    if (rule.on.count === undefined) {
      targets = eligible;
      if (!targets.length) drift.push(`no agent carries the label "${label}"`);
    } else {
      const count = rule.on.count;
      const alive = (a: Agent) => a.status !== "offline" || now - a.lastSeen < OFFLINE_GRACE_MS;
      const holders = eligible.filter((a) => present(a) && alive(a));
      targets = holders;
      if (holders.length < count) {
        const holding = new Set(holders);
        const candidates = eligible
          .filter((a) => !holding.has(a) && a.status === "online")
          .sort((a, b) =>
            Number(blocked(a)) - Number(blocked(b)) ||
            (b.metrics?.disk_free ?? Infinity) - (a.metrics?.disk_free ?? Infinity) ||
            a.registeredAt - b.registeredAt
          );
        targets = [...holders, ...candidates.slice(0, count - holders.length)];
        if (targets.length < count) {
          const where = label === undefined ? "" : ` labelled "${label}"`;
          drift.push(
            `wanted on at least ${count} agents, but only ${targets.length} online agents${where} can take it`,
          );
        }
      }
    }
  }

  const cells = new Map<string, PlacementCell>();
  for (const a of targets) cells.set(a.id, wantedCell(a, key, rule.model, size, input));
  for (const a of agents) {
    if (cells.has(a.id) || !has(a)) continue;
    cells.set(a.id, excluded(a) ? unwantedCell(a, key, rule, input) : spareCell(a, input));
  }

  const warm = rule.warm ?? 0;
  let warmNow = 0;
  if (warm > 0) warmNow = planWarm(rule, key, warm, [...cells.values()], input);
  else for (const c of cells.values()) markLoaded(c, input.byId.get(c.agent_id)!, key);

  const list = [...cells.values()];
  const wanted = list.filter((c) => c.wanted);
  const byState = new Map<PlacementState, string[]>();
  for (const c of wanted) {
    if (c.state === "ok") continue;
    byState.set(c.state, [...byState.get(c.state) ?? [], c.agent_name]);
  }
  const words: Record<PlacementState, string> = {
    ok: "",
    pulling: "pulling on",
    missing: "missing on",
    failed: "pull failed on",
    no_disk: "not enough disk on",
    offline: "missing on offline",
    unwanted: "",
  };
  for (const [state, who] of byState) {
    drift.push(`${words[state]} ${names(who.sort(byName.compare))}`);
  }
  const unwanted = list.filter((c) => c.state === "unwanted");
  if (unwanted.length) {
    drift.push(
      `still on ${names(unwanted.map((c) => c.agent_name))} (never on "${forbidden}")`,
    );
  }
  if (warmNow < warm) drift.push(`loaded on ${warmNow} of ${warm} agents`);
  return {
    rule,
    key,
    size,
    met: drift.length === 0,
    drift,
    counts: {
      wanted: wanted.length,
      ok: wanted.filter((c) => c.state === "ok").length,
      pulling: wanted.filter((c) => c.state === "pulling").length,
      warm: warmNow,
      warm_wanted: warm,
      unwanted: unwanted.length,
    },
    agents: list.sort((a, b) =>
      Number(b.wanted) - Number(a.wanted) || byName.compare(a.agent_name, b.agent_name)
    ),
  };
}

/** Room the agent reports, less what pulls running or just finished there will take. */
function fits(agent: Agent, key: string, input: RuleInput): boolean {
  const free = agent.metrics?.disk_free;
  const size = input.sizes.get(key);
  if (free === undefined || size === undefined) return true;
  return free - reserved(agent, key, input) >= size * DISK_MARGIN;
}

function reserved(agent: Agent, key: string, input: RuleInput): number {
  let bytes = 0;
  for (const p of input.running) {
    if (p.agentId === agent.id && p.key !== key) bytes += input.sizes.get(p.key) ?? 0;
  }
  return bytes;
}

function baseCell(agent: Agent, input: PlanInput): PlacementCell {
  const cell: PlacementCell = {
    agent_id: agent.id,
    agent_name: input.name(agent),
    agent_status: agent.status,
    wanted: true,
    state: "ok",
    loaded: false,
    warm: false,
  };
  if (agent.metrics?.disk_free !== undefined) cell.disk_free = agent.metrics.disk_free;
  return cell;
}

function wantedCell(
  agent: Agent,
  key: string,
  model: string,
  size: number | undefined,
  input: RuleInput,
): PlacementCell {
  const { now, limits } = input;
  const cell = baseCell(agent, input);
  const pull = input.pulls.get(agent.id, key);
  if (pull?.error) {
    cell.error = pull.error;
    cell.failures = pull.failures;
  }
  if (agent.modelKeys.has(key)) return cell;
  if (pull?.running) {
    cell.state = "pulling";
    cell.progress = { status: pull.status, completed: pull.completed, total: pull.total };
    return cell;
  }
  if (
    pull && pull.failures === 0 && pull.succeededAt !== undefined &&
    now - pull.succeededAt < SUCCESS_GRACE_MS
  ) {
    cell.reason = "pulled; waiting for the agent's next report";
    return cell;
  }
  if (agent.status === "offline") {
    cell.state = "offline";
    cell.reason = "the agent is offline; the pull starts when it is back";
    return cell;
  }
  if (pull?.retryAt !== undefined && now < pull.retryAt) {
    cell.state = "failed";
    cell.retry_at = new Date(pull.retryAt).toISOString();
    return cell;
  }
  if (!fits(agent, key, input)) {
    const free = agent.metrics!.disk_free! - reserved(agent, key, input);
    cell.state = "no_disk";
    cell.reason = `needs ${fmtGb(size! * DISK_MARGIN)}, ${fmtGb(Math.max(0, free))} free`;
    return cell;
  }
  cell.state = "missing";
  if (agent.status === "draining") {
    cell.reason = "the agent is draining; the pull starts when it is enabled";
    return cell;
  }
  const onAgent = input.perAgent.get(agent.id) ?? 0;
  if (input.budget.fleet >= limits.maxPulls) {
    cell.reason = `waiting for a pull slot (${limits.maxPulls} at once in the fleet)`;
  } else if (onAgent >= limits.maxPullsPerAgent) {
    cell.reason = `waiting for a pull slot (${limits.maxPullsPerAgent} at once per agent)`;
  } else {
    input.budget.fleet++;
    input.perAgent.set(agent.id, onAgent + 1);
    input.actions.push({ type: "pull", agent, model, key });
    cell.reason = pull?.failures ? `trying again (${pull.failures} failed)` : "pull starting";
  }
  return cell;
}

function spareCell(agent: Agent, input: PlanInput): PlacementCell {
  return { ...baseCell(agent, input), wanted: false };
}

function unwantedCell(
  agent: Agent,
  key: string,
  rule: PlacementRule,
  input: RuleInput,
): PlacementCell {
  const cell: PlacementCell = { ...baseCell(agent, input), wanted: false, state: "unwanted" };
  const chore = input.chore("delete", agent.id, key);
  if (chore?.error) {
    cell.error = chore.error;
    cell.failures = chore.failures;
  }
  if (chore?.running) cell.reason = "deleting";
  else if (agent.status !== "online" && agent.status !== "draining") {
    cell.reason = "deleted when the agent is back";
  } else if (chore?.retryAt !== undefined && input.now < chore.retryAt) {
    cell.retry_at = new Date(chore.retryAt).toISOString();
    cell.reason = "delete failed";
  } else {
    cell.reason = "deleting";
    input.actions.push({
      type: "delete",
      agent,
      model: rule.model,
      key,
      label: rule.never_on!.label,
    });
  }
  return cell;
}

/** Reported in memory, or loaded by us so recently that the report may lag. */
function loadedUntil(agent: Agent, key: string, input: PlanInput): number | undefined {
  const chore = input.chore("load", agent.id, key);
  const ours = chore?.until;
  if (agent.loadedKeys.has(key)) {
    const m = agent.loadedModels.find((l) => normalizeModelName(l.name) === key);
    const reported = m?.expires_at ? Date.parse(m.expires_at) : NaN;
    const expiry = Number.isNaN(reported) ? Infinity : reported;
    return Math.max(expiry, ours ?? -Infinity);
  }
  if (chore?.doneAt !== undefined && input.now - chore.doneAt < LOAD_GRACE_MS) return ours;
  return undefined;
}

function markLoaded(cell: PlacementCell, agent: Agent, key: string): void {
  if (!agent.loadedKeys.has(key)) return;
  cell.loaded = true;
  const m = agent.loadedModels.find((l) => normalizeModelName(l.name) === key);
  if (m?.expires_at) cell.expires_at = m.expires_at;
}

/** Chooses where the model stays loaded, adds the loads and renewals; returns how many are warm. */
function planWarm(
  rule: PlacementRule,
  key: string,
  warm: number,
  cells: PlacementCell[],
  input: RuleInput,
): number {
  const { now, byId } = input;
  const keepAlive = rule.keep_alive ?? DEFAULT_KEEP_ALIVE;
  const ms = keepAliveMs(keepAlive);
  const pool: { agent: Agent; cell: PlacementCell; until?: number }[] = [];
  for (const cell of cells) {
    const agent = byId.get(cell.agent_id)!;
    const until = loadedUntil(agent, key, input);
    if (until !== undefined && until > now) {
      cell.loaded = true;
      if (until !== Infinity) cell.expires_at = new Date(until).toISOString();
    }
    const chore = input.chore("load", agent.id, key);
    if (chore?.error) cell.warm_error = chore.error;
    if (cell.state === "unwanted" || agent.status !== "online" || !agent.modelKeys.has(key)) {
      continue;
    }
    pool.push({ agent, cell, until: cell.loaded ? until : undefined });
  }
  const ready = (a: Agent) => {
    const chore = input.chore("load", a.id, key);
    return !chore?.running && !(chore?.retryAt !== undefined && now < chore.retryAt);
  };
  const loaded = pool.filter((p) => p.until !== undefined).sort((a, b) => b.until! - a.until!);
  const kept = loaded.slice(0, warm);
  for (const p of kept) {
    p.cell.warm = true;
    if (p.until! - now < renewBefore(ms) && ready(p.agent)) {
      input.actions.push({
        type: "load",
        agent: p.agent,
        model: rule.model,
        key,
        keepAlive,
        renew: true,
      });
    }
  }
  const loading = pool.filter((p) =>
    p.until === undefined && input.chore("load", p.agent.id, key)?.running
  );
  for (const p of loading) p.cell.warm = true;
  let need = warm - kept.length - loading.length;
  const cold = pool
    .filter((p) => p.until === undefined && ready(p.agent))
    .sort((a, b) =>
      a.agent.loadedKeys.size - b.agent.loadedKeys.size ||
      a.agent.registeredAt - b.agent.registeredAt
    );
  for (const p of cold) {
    if (need <= 0) break;
    need--;
    p.cell.warm = true;
    input.actions.push({
      type: "load",
      agent: p.agent,
      model: rule.model,
      key,
      keepAlive,
      renew: false,
    });
  }
  return kept.length;
}
