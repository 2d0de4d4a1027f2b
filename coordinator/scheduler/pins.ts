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

/** The pins, by normalised model name. */
export class ModelPins {
  readonly #store?: SettingsStore;
  readonly #pins = new Map<string, { model: string; label: string }>();

  constructor(store?: SettingsStore) {
    this.#store = store;
    this.reload();
  }

  /** Reads the pins again from the settings (another coordinator changed them). */
  reload(): void {
    this.#pins.clear();
    const raw = this.#store?.setting(KEY);
    if (!raw) return;
    for (const p of JSON.parse(raw) as { model: string; label: string }[]) {
      this.#pins.set(normalizeModelName(p.model), p);
    }
  }

  /** The setting the pins are kept in. */
  static readonly SETTING = KEY;

  /** The label agents need to serve `key` (a normalised name), if the model is pinned. */
  labelFor(key: string): string | undefined {
    return this.#pins.get(key)?.label;
  }

  /** Pins a model to a label; stored first (rejects, changing nothing, when it cannot be). */
  async set(model: string, label: string): Promise<void> {
    const next = new Map(this.#pins);
    next.set(normalizeModelName(model), { model: displayModelName(model), label });
    await this.#save(next);
  }

  /** Removes a pin; false when there was none. Stored first, like {@linkcode set}. */
  async remove(model: string): Promise<boolean> {
    const next = new Map(this.#pins);
    if (!next.delete(normalizeModelName(model))) return false;
    await this.#save(next);
    return true;
  }

  /** Every pin. */
  list(): { model: string; label: string }[] {
    return [...this.#pins.values()];
  }

  async #save(next: Map<string, { model: string; label: string }>): Promise<void> {
    await this.#store?.setSetting(KEY, JSON.stringify([...next.values()]));
    this.#pins.clear();
    for (const [k, v] of next) this.#pins.set(k, v);
  }
}
