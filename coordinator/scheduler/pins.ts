/**
 * Admin rules for routing: a model pinned to a label is served only by agents carrying that
 * label (e.g. a 70B model only on the `gpu-large` machines). Stored in the settings table.
 */
import { displayModelName, normalizeModelName } from "@oc/shared";

/** Where pins are kept (the security store's settings). */
export interface SettingsStore {
  setting(key: string): string | undefined;
  setSetting(key: string, value: string): Promise<void>;
}

const KEY = "model_pins";

/**
 * Entries by normalised model name, kept as one JSON array in a setting (so coordinators sharing
 * a store share them), in the order first made. Every change is stored first and then applied:
 * a store that refuses it leaves memory as it was. Pins, aliases and placement rules are kept so.
 */
export class ModelSettingList<T> {
  readonly #store?: SettingsStore;
  readonly #setting: string;
  readonly #nameOf: (entry: T) => string;
  readonly #read: (entry: T) => T;
  #entries = new Map<string, T>();

  constructor(
    setting: string,
    options: {
      store?: SettingsStore;
      /** The model name an entry is found by. */
      nameOf: (entry: T) => string;
      /** Tidies an entry as stored (older or hand-made settings). */
      read?: (entry: T) => T;
    },
  ) {
    this.#setting = setting;
    this.#store = options.store;
    this.#nameOf = options.nameOf;
    this.#read = options.read ?? ((e) => e);
    this.reload();
  }

  /** Reads the entries again from the settings (another coordinator changed them). */
  reload(): void {
    const raw = this.#store?.setting(this.#setting);
    const next = new Map<string, T>();
    for (const e of raw ? JSON.parse(raw) as T[] : []) {
      const entry = this.#read(e);
      next.set(normalizeModelName(this.#nameOf(entry)), entry);
    }
    this.#entries = next;
  }

  /** The entry of a model (a normalised name), if any. */
  get(key: string): T | undefined {
    return this.#entries.get(key);
  }

  get size(): number {
    return this.#entries.size;
  }

  /** Every entry, in the order they were first made. */
  list(): T[] {
    return [...this.#entries.values()];
  }

  /** Adds or replaces the entry of its model; stored first (rejects, changing nothing). */
  async put(entry: T): Promise<void> {
    const next = new Map(this.#entries);
    next.set(normalizeModelName(this.#nameOf(entry)), entry);
    await this.#save(next);
  }

  /** Removes a model's entry; false when there was none. Stored first, like {@linkcode put}. */
  async remove(name: string): Promise<boolean> {
    const next = new Map(this.#entries);
    if (!next.delete(normalizeModelName(name))) return false;
    await this.#save(next);
    return true;
  }

  async #save(next: Map<string, T>): Promise<void> {
    await this.#store?.setSetting(this.#setting, JSON.stringify([...next.values()]));
    this.#entries = next;
  }
}

/** The pins, by normalised model name. */
export class ModelPins {
  readonly #pins: ModelSettingList<{ model: string; label: string }>;

  constructor(store?: SettingsStore) {
    this.#pins = new ModelSettingList(KEY, { store, nameOf: (p) => p.model });
  }

  /** Reads the pins again from the settings (another coordinator changed them). */
  reload(): void {
    this.#pins.reload();
  }

  /** The setting the pins are kept in. */
  static readonly SETTING = KEY;

  /** The label agents need to serve `key` (a normalised name), if the model is pinned. */
  labelFor(key: string): string | undefined {
    return this.#pins.get(key)?.label;
  }

  /** Pins a model to a label; stored first (rejects, changing nothing, when it cannot be). */
  set(model: string, label: string): Promise<void> {
    return this.#pins.put({ model: displayModelName(model), label });
  }

  /** Removes a pin; false when there was none. Stored first, like {@linkcode set}. */
  remove(model: string): Promise<boolean> {
    return this.#pins.remove(model);
  }

  /** Every pin. */
  list(): { model: string; label: string }[] {
    return this.#pins.list();
  }
}
