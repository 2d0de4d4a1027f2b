/**
 * Placement rules: where each model should be installed, and kept loaded, across the fleet. An
 * admin declares them (`PUT /api/admin/placements`); the reconciler (`reconciler.ts`) makes the
 * fleet converge on them. They are kept as one JSON setting, like the routing pins, so every
 * coordinator sharing the store has the same ones.
 */
import { z } from "zod";
import { displayModelName, normalizeModelName } from "@oc/shared";
import { ModelSettingList, type SettingsStore } from "../scheduler/pins.ts";

const label = z.string().trim().min(1).max(64).regex(
  /^[\w.:\/=-]+$/,
  "expected a label of letters, digits and . : / = - _",
);

// No `@digest`: agents list models by name only, so a rule naming a digest would never be met
// and its model would be pulled again after every successful pull.
const modelName = z.string().trim().min(1).max(253).regex(
  /^[\w][\w.\-:/+]*$/,
  "expected a model name such as llama3.2 or library/llama3.2:latest (no @digest)",
);

/** `30m`, `2h`, `600s`, or `-1` (loaded until Ollama needs the memory or restarts). */
const duration = z.string().trim().regex(
  /^(-1|\d{1,6}[smh])$/,
  'expected a duration such as "30m", "2h" or "-1" (no expiry)',
);

/** The `keep_alive` a warm rule loads with when it names none. */
export const DEFAULT_KEEP_ALIVE = "30m";

/** Milliseconds of a rule's `keep_alive` (`Infinity` for `-1`). */
export function keepAliveMs(value: string = DEFAULT_KEEP_ALIVE): number {
  if (value === "-1") return Infinity;
  const n = Number(value.slice(0, -1));
  return n * { s: 1000, m: 60_000, h: 3_600_000 }[value.at(-1) as "s" | "m" | "h"];
}

/** Which agents a rule places its model on. */
const Target = z.object({
  /** Every agent carrying this label; with `count`, only agents carrying it count. */
  label: label.optional(),
  /** At least this many agents. */
  count: z.number().int().min(1).max(1000).optional(),
  /** These agents, by id, display name or machine name. */
  agents: z.array(z.string().trim().min(1).max(128)).min(1).max(1000).optional(),
}).strict().refine(
  (o) =>
    o.agents ? o.label === undefined && o.count === undefined : o.label !== undefined ||
      o.count !== undefined,
  "on needs a label (every agent with it), a count (with an optional label) or a list of agents",
);

/** `PUT /api/admin/placements`: one model's placement (replacing the model's previous rule). */
export const PlacementRule = z.object({
  model: modelName,
  on: Target,
  /** Kept loaded on at least this many of the agents that have it. */
  warm: z.number().int().min(0).max(1000).optional(),
  /** How long a warm load keeps the model in memory; renewed before it runs out. */
  keep_alive: duration.refine(
    (d) => keepAliveMs(d) >= 60_000,
    "keep_alive must be at least 1 minute (or -1)",
  ).optional(),
  /** The model must not be on agents carrying this label: it is deleted there. */
  never_on: z.object({ label }).strict().optional(),
}).strict().refine(
  (r) => !r.never_on || r.never_on.label !== r.on.label,
  "never_on cannot name the label the rule places the model on",
);
export type PlacementRule = z.infer<typeof PlacementRule>;

/** `DELETE /api/admin/placements`: the model whose rule goes. */
export const PlacementDelete = z.object({ model: modelName }).strict();

const KEY = "placement_rules";

/**
 * Most rules kept: every round plans each rule over every agent, and every change stores the
 * whole list, so the list is bounded like the aliases.
 */
export const MAX_RULES = 1000;

/** Why a rule cannot be stored. */
export class PlacementError extends Error {}

/** The rules, by normalised model name, in the order they were first made. */
export class PlacementRules {
  readonly #rules: ModelSettingList<PlacementRule>;

  constructor(store?: SettingsStore) {
    this.#rules = new ModelSettingList(KEY, { store, nameOf: (r) => r.model });
  }

  /** The setting the rules are kept in. */
  static readonly SETTING = KEY;

  /** Reads the rules again from the settings (another coordinator changed them). */
  reload(): void {
    this.#rules.reload();
  }

  /** Every rule. */
  list(): PlacementRule[] {
    return this.#rules.list();
  }

  /** The rule of a model (a normalised name), if any. */
  get(key: string): PlacementRule | undefined {
    return this.#rules.get(key);
  }

  /**
   * Adds or replaces a model's rule; stored first (rejects, changing nothing, when it cannot be).
   * Throws a {@linkcode PlacementError} for a new rule past {@linkcode MAX_RULES}.
   */
  async set(rule: PlacementRule): Promise<void> {
    if (!this.#rules.get(normalizeModelName(rule.model)) && this.#rules.size >= MAX_RULES) {
      throw new PlacementError(
        `Cannot add a placement rule for "${rule.model}": there are ${MAX_RULES} already`,
      );
    }
    await this.#rules.put({ ...rule, model: displayModelName(rule.model) });
  }

  /** Removes a model's rule; false when there was none. Stored first, like {@linkcode set}. */
  remove(model: string): Promise<boolean> {
    return this.#rules.remove(model);
  }
}
