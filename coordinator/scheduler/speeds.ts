/**
 * Measured speed per agent and model: exponentially weighted moving averages of generation
 * speed (tokens per second, from Ollama's final `eval_count` / `eval_duration`) and time to
 * first token (the proxy's own timing).
 */

/** One agent's measured speed for one model. */
export interface Speed {
  tokensPerSecond: number | null;
  ttftMs: number | null;
  samples: number;
}

const ALPHA = 0.3;

function ewma(prev: number | null, x: number): number {
  return prev === null ? x : prev + ALPHA * (x - prev);
}

/** Speeds keyed by agent id and normalised model name. */
export class SpeedTable {
  readonly #table = new Map<string, Map<string, Speed>>();
  /** The same entries by model, then agent: a decision looks up one model for many agents. */
  readonly #byModel = new Map<string, Map<string, Speed>>();
  readonly #tokens = new Map<string, number>();

  /** The measured speed, or undefined before the first measurement. */
  get(agentId: string, model: string): Speed | undefined {
    return this.#table.get(agentId)?.get(model);
  }

  /** Adds a measurement; either figure may be missing. */
  record(agentId: string, model: string, m: { tokensPerSecond?: number; ttftMs?: number }): void {
    let perAgent = this.#table.get(agentId);
    if (!perAgent) this.#table.set(agentId, perAgent = new Map());
    const s = perAgent.get(model) ?? { tokensPerSecond: null, ttftMs: null, samples: 0 };
    if (
      m.tokensPerSecond !== undefined && Number.isFinite(m.tokensPerSecond) && m.tokensPerSecond > 0
    ) {
      s.tokensPerSecond = ewma(s.tokensPerSecond, m.tokensPerSecond);
    }
    if (m.ttftMs !== undefined && Number.isFinite(m.ttftMs) && m.ttftMs >= 0) {
      s.ttftMs = ewma(s.ttftMs, m.ttftMs);
    }
    s.samples++;
    perAgent.set(model, s);
    let perModel = this.#byModel.get(model);
    if (!perModel) this.#byModel.set(model, perModel = new Map());
    perModel.set(agentId, s);
  }

  /** Every agent's measured speed for one model, by agent id (undefined before any). */
  forModel(model: string): ReadonlyMap<string, Speed> | undefined {
    return this.#byModel.get(model);
  }

  /** Adds an answer's length (tokens generated) for a model. */
  recordTokens(model: string, tokens: number): void {
    if (!Number.isFinite(tokens) || tokens <= 0) return;
    this.#tokens.set(model, ewma(this.#tokens.get(model) ?? null, tokens));
    if (this.#tokens.size > 10_000) this.#tokens.delete(this.#tokens.keys().next().value!);
  }

  /** The usual answer length for a model, once measured. */
  meanTokens(model: string): number | undefined {
    return this.#tokens.get(model);
  }

  /** Forgets a removed agent. */
  forget(agentId: string): void {
    const perAgent = this.#table.get(agentId);
    if (!perAgent) return;
    this.#table.delete(agentId);
    for (const model of perAgent.keys()) {
      const perModel = this.#byModel.get(model);
      perModel?.delete(agentId);
      if (perModel?.size === 0) this.#byModel.delete(model);
    }
  }
}
