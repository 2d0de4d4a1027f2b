/**
 * Installed models and the models in memory: entries derived from a name, `keep_alive`, loading
 * paid once per model, and the rows of /api/tags and /api/ps.
 *
 * @module
 */
import { createHash } from "node:crypto";
import { displayModelName, normalizeModelName } from "../shared/model_name.ts";
import { sleep, waitForAbort } from "./http.ts";
import { fnv1a } from "./text.ts";

/** A model installed on the simulated server; missing fields are derived from the name. */
export interface SimModel {
  name: string;
  size?: number;
  family?: string;
  parameter_size?: string;
  quantization_level?: string;
}

/** Installed when no models are given. */
export const DEFAULT_MODELS = ["llama3.2:latest", "nomic-embed-text:latest"];
const DEFAULT_KEEP_ALIVE_MS = 5 * 60_000;
/** Where Ollama puts `expires_at` of a model kept forever. */
const FOREVER = Date.UTC(2318, 0, 1);

/** An installed model. */
export interface ModelEntry {
  key: string;
  name: string;
  size: number;
  family: string;
  parameterSize: string;
  quantization: string;
  digest: string;
  modifiedAt: Date;
  embedding: boolean;
}

interface Loaded {
  entry: ModelEntry;
  ready: boolean;
  loading: Promise<void>;
  refs: number;
  expiresAt: number;
  unloadWhenIdle: boolean;
}

/** Hex SHA-256 of a text: digests derived from names. */
export function sha256Hex(text: string): string {
  return createHash("sha256").update(text).digest("hex");
}

/** An entry for a model, its details derived from its name where not given. */
export function makeEntry(
  model: string | SimModel,
  modifiedAt: Date,
  digest?: string,
): ModelEntry {
  const m = typeof model === "string" ? { name: model } : model;
  const key = normalizeModelName(m.name);
  const name = displayModelName(m.name);
  const base = name.split("/").pop()!.split(":")[0];
  const tag = name.split(":").pop() ?? "";
  const embedding = base.includes("embed") || /bert/.test(m.family ?? "");
  const family = m.family ??
    (embedding ? "nomic-bert" : base.match(/^[a-z]+/)?.[0] ?? "llama");
  const tagged = tag.match(/(\d+(?:\.\d+)?)([bm])/);
  const parameterSize = m.parameter_size ??
    (tagged ? `${tagged[1]}${tagged[2].toUpperCase()}` : embedding ? "137M" : "3.2B");
  const quantization = m.quantization_level ?? (embedding ? "F16" : "Q4_K_M");
  const bytesPerParam = quantization.startsWith("F16") ? 2 : 0.6;
  const size = m.size ??
    Math.round(
      parameterCount(parameterSize) * bytesPerParam + (fnv1a(key) % 50_000_000),
    );
  return {
    key,
    name,
    size,
    family,
    parameterSize,
    quantization,
    digest: digest ?? sha256Hex(key),
    modifiedAt,
    embedding,
  };
}

/** "3.2B" → 3.2e9, "137M" → 1.37e8. */
export function parameterCount(parameterSize: string): number {
  const n = Number.parseFloat(parameterSize) || 0;
  return Math.round(
    n * (parameterSize.toUpperCase().endsWith("M") ? 1e6 : 1e9),
  );
}

/** The `details` object of /api/tags, /api/ps and /api/show. */
export function details(e: ModelEntry) {
  return {
    parent_model: "",
    format: "gguf",
    family: e.family,
    families: [e.family],
    parameter_size: e.parameterSize,
    quantization_level: e.quantization,
  };
}

/** Ollama's keep_alive: number = seconds, string = Go duration, negative = forever. In ms. */
export function parseKeepAlive(value: unknown): number | undefined {
  let ms: number | undefined;
  if (typeof value === "number" && Number.isFinite(value)) ms = value * 1000;
  else if (typeof value === "string" && value.trim() !== "") {
    const s = value.trim();
    if (/^-?\d+(\.\d+)?$/.test(s)) ms = Number(s) * 1000;
    else {
      const unit: Record<string, number> = {
        ns: 1e-6,
        us: 1e-3,
        "µs": 1e-3,
        ms: 1,
        s: 1000,
        m: 60_000,
        h: 3_600_000,
      };
      const parts = [
        ...s.replace(/^-/, "").matchAll(/(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)/g),
      ];
      if (parts.length === 0) return undefined;
      ms = parts.reduce((sum, p) => sum + Number(p[1]) * unit[p[2]], 0);
      if (s.startsWith("-")) ms = -ms;
    }
  }
  if (ms === undefined) return undefined;
  return ms < 0 ? Infinity : ms;
}

/**
 * The models on disk and in memory. A loaded model carries references (requests using it) and
 * an expiry (keep_alive); expiry is applied lazily, when memory is next looked at.
 */
export class ModelStore {
  #models = new Map<string, ModelEntry>();
  #loaded = new Map<string, Loaded>();

  /** Replaces the installed models (listed first = newest); unloads those no longer installed. */
  install(models: (string | SimModel)[]): void {
    const now = Date.now();
    const next = new Map<string, ModelEntry>();
    models.forEach((m, i) => {
      // Listed first = newest, as /api/tags sorts by modified_at.
      const entry = makeEntry(m, new Date(now - i * 1000));
      next.set(entry.key, entry);
    });
    this.#models = next;
    for (const key of this.#loaded.keys()) {
      if (!next.has(key)) this.#loaded.delete(key);
    }
  }

  /** Replaces the idle models in memory with these (ready at once); they must be installed. */
  load(names: string[]): void {
    for (const [key, l] of this.#loaded) {
      if (l.ready && l.refs === 0) this.#loaded.delete(key);
    }
    for (const name of names) {
      const entry = this.#models.get(normalizeModelName(name));
      if (!entry) {
        throw new RangeError(
          `Cannot load model "${name}": it is not installed`,
        );
      }
      this.#loaded.set(entry.key, {
        entry,
        ready: true,
        loading: Promise.resolve(),
        refs: 0,
        expiresAt: Date.now() + DEFAULT_KEEP_ALIVE_MS,
        unloadWhenIdle: false,
      });
    }
  }

  /** The installed model a request names, whatever its spelling. */
  find(raw: string): ModelEntry | undefined {
    return raw.trim() === "" ? undefined : this.#models.get(normalizeModelName(raw));
  }

  /** Adds a pulled model unless it is installed already. */
  add(entry: ModelEntry): void {
    if (!this.#models.has(entry.key)) {
      entry.modifiedAt = this.newestTime();
      this.#models.set(entry.key, entry);
    }
  }

  /** Adds or replaces a model (a copy). */
  set(entry: ModelEntry): void {
    this.#models.set(entry.key, entry);
  }

  /** Deletes a model from disk and memory. */
  delete(entry: ModelEntry): void {
    this.#models.delete(entry.key);
    this.#loaded.delete(entry.key);
  }

  /** Now, but strictly newer than every installed model, so /api/tags order never ties. */
  newestTime(): Date {
    let newest = 0;
    for (const e of this.#models.values()) {
      newest = Math.max(newest, e.modifiedAt.getTime());
    }
    return new Date(Math.max(Date.now(), newest + 1));
  }

  #purgeExpired(): void {
    const now = Date.now();
    for (const [key, l] of this.#loaded) {
      if (l.ready && l.refs === 0 && l.expiresAt <= now) {
        this.#loaded.delete(key);
      }
    }
  }

  /**
   * Loads the model if needed (`loadMs`, cut short by `closing`) and takes a reference; returns
   * the ns spent waiting for it.
   */
  async use(
    entry: ModelEntry,
    signal: AbortSignal,
    options: { loadMs: number; closing: AbortSignal },
  ): Promise<number> {
    const started = performance.now();
    this.#purgeExpired();
    let l = this.#loaded.get(entry.key);
    if (!l) {
      const loading = sleep(options.loadMs, options.closing);
      l = {
        entry,
        ready: false,
        loading,
        refs: 0,
        expiresAt: Infinity,
        unloadWhenIdle: false,
      };
      const loaded = l;
      this.#loaded.set(entry.key, l);
      loading.then(() => {
        loaded.ready = true;
        loaded.expiresAt = Date.now() + DEFAULT_KEEP_ALIVE_MS;
      }, () => {
        if (this.#loaded.get(entry.key) === loaded) {
          this.#loaded.delete(entry.key);
        }
      });
    }
    l.refs++;
    try {
      if (!l.ready) await Promise.race([l.loading, waitForAbort(signal)]);
      signal.throwIfAborted();
    } catch (e) {
      l.refs--;
      throw e;
    }
    return Math.max(1000, Math.round((performance.now() - started) * 1e6));
  }

  /** Drops a reference; keep_alive sets when the model leaves memory (0 = when idle). */
  release(entry: ModelEntry, keepAliveMs: number | undefined): void {
    const l = this.#loaded.get(entry.key);
    if (!l) return;
    l.refs = Math.max(0, l.refs - 1);
    if (keepAliveMs === 0) l.unloadWhenIdle = true;
    else {
      l.unloadWhenIdle = false;
      l.expiresAt = keepAliveMs === Infinity
        ? FOREVER
        : Date.now() + (keepAliveMs ?? DEFAULT_KEEP_ALIVE_MS);
    }
    if (l.refs === 0 && l.unloadWhenIdle) this.#loaded.delete(entry.key);
  }

  /** Unloads the model now, or when its last request ends (keep_alive 0 on an empty prompt). */
  unload(entry: ModelEntry): void {
    const l = this.#loaded.get(entry.key);
    if (l) {
      l.unloadWhenIdle = true;
      if (l.refs === 0) this.#loaded.delete(entry.key);
    }
  }

  /** The rows of /api/ps: models in memory, ready to serve. */
  ps() {
    this.#purgeExpired();
    return [...this.#loaded.values()].filter((l) => l.ready).map((l) => ({
      name: l.entry.name,
      model: l.entry.name,
      size: l.entry.size,
      digest: l.entry.digest,
      details: details(l.entry),
      expires_at: new Date(Math.min(l.expiresAt, FOREVER)).toISOString(),
      size_vram: l.entry.size,
      context_length: 4096,
    }));
  }

  /** The rows of /api/tags, newest first. */
  tags() {
    return [...this.#models.values()]
      .sort((a, b) => b.modifiedAt.getTime() - a.modifiedAt.getTime())
      .map((e) => ({
        name: e.name,
        model: e.name,
        modified_at: e.modifiedAt.toISOString(),
        size: e.size,
        digest: e.digest,
        details: details(e),
      }));
  }
}
