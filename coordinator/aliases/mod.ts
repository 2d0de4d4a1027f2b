/**
 * Model aliases: names that tools hard-code (`gpt-4o-mini`, `claude-sonnet-4-5`,
 * `text-embedding-3-small`) served by a model of the fleet. The coordinator rewrites an alias to
 * its model before routing, on every API (see `rewrite.ts`), and the answer names the alias again.
 * Stored in the settings (like the model pins), so coordinators sharing a store share them.
 */
import { normalizeModelName } from "@oc/shared";
import { ModelSettingList, type SettingsStore } from "../scheduler/pins.ts";

/** One alias: the name clients use, the model that serves it, whether the lists show it. */
export interface Alias {
  alias: string;
  model: string;
  /** Shown in `/api/tags` and `/v1/models` (as a copy of its model's entry). */
  listed: boolean;
}

const KEY = "model_aliases";

/** Most aliases kept: each is a map entry, and the dashboard lists them all. */
export const MAX_ALIASES = 1000;

/** Why an alias cannot be stored. */
export class AliasError extends Error {}

/** The aliases, by normalised alias name. */
export class ModelAliases {
  readonly #aliases: ModelSettingList<Alias>;

  constructor(store?: SettingsStore) {
    this.#aliases = new ModelSettingList(KEY, {
      store,
      nameOf: (a) => a.alias,
      read: (a) => ({ ...a, listed: a.listed === true }),
    });
  }

  /** The setting the aliases are kept in. */
  static readonly SETTING = KEY;

  /** Reads the aliases again from the settings (another coordinator changed them). */
  reload(): void {
    this.#aliases.reload();
  }

  /**
   * The alias a requested model name is, if it is one. Without aliases this is one size check, so
   * requests pay nothing for the feature; with some, one memoised normalisation and a map lookup.
   */
  resolve(model: string): Alias | undefined {
    if (this.#aliases.size === 0) return undefined;
    return this.#aliases.get(normalizeModelName(model));
  }

  /** Every alias, in the order they were made. */
  list(): Alias[] {
    return this.#aliases.list();
  }

  /**
   * Adds or changes an alias; stored first (rejects, changing nothing, when it cannot be). Throws
   * an {@linkcode AliasError} for an alias of itself, one to another alias, or one another alias
   * already leads to (aliases resolve once, so chains are refused rather than half-followed).
   */
  async set(alias: string, model: string, options: { listed?: boolean } = {}): Promise<Alias> {
    const key = normalizeModelName(alias);
    const target = normalizeModelName(model);
    if (key === target) {
      throw new AliasError(`Cannot alias "${alias}" to itself`);
    }
    if (this.#aliases.get(target)) {
      throw new AliasError(`Cannot alias "${alias}" to "${model}": "${model}" is an alias itself`);
    }
    const leading = this.list().find((a) => normalizeModelName(a.model) === key);
    if (leading) {
      throw new AliasError(
        `Cannot make "${alias}" an alias: alias "${leading.alias}" leads to it`,
      );
    }
    if (!this.#aliases.get(key) && this.#aliases.size >= MAX_ALIASES) {
      throw new AliasError(`Cannot add alias "${alias}": there are ${MAX_ALIASES} already`);
    }
    const entry: Alias = {
      alias: alias.trim(),
      model: model.trim(),
      listed: options.listed === true,
    };
    await this.#aliases.put(entry);
    return entry;
  }

  /** Removes an alias; false when there was none. Stored first, like {@linkcode set}. */
  remove(alias: string): Promise<boolean> {
    return this.#aliases.remove(alias);
  }
}

/**
 * `models` (a fleet-wide list) with an entry for each listed alias whose model is in it: a copy
 * of the model's entry under the alias's name.
 */
export function withListedAliases<T extends { name: string; model?: string }>(
  models: T[],
  aliases: ModelAliases | undefined,
): T[] {
  const listed = aliases?.list().filter((a) => a.listed) ?? [];
  if (listed.length === 0) return models;
  const byName = new Map(models.map((m) => [normalizeModelName(m.name), m]));
  const out = [...models];
  for (const a of listed) {
    const target = byName.get(normalizeModelName(a.model));
    if (target) out.push({ ...target, name: a.alias, model: a.alias });
  }
  return out;
}
