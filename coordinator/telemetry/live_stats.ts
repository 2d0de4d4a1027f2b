/**
 * Live statistics for the dashboard: request rates, token throughput, latency and time-to-first-
 * token percentiles, error rate, queue depth and in-flight requests, for the fleet and per agent.
 *
 * Fed by the bus's `request` messages (one per finished request). Memory is bounded whatever the
 * traffic: ring buffers of per-second buckets (5 minutes) and per-minute buckets (1 hour), and
 * latencies kept as log-scale histograms (bins 15 % wide), so percentiles are approximate (within
 * about 7 %) and cost the same at 1 or 10 000 requests per second.
 */
import type { Bus } from "./bus.ts";
import type { RequestRecord } from "./request_log.ts";

/** The two chart ranges: per-second buckets over 5 minutes, per-minute buckets over an hour. */
export type Range = "5m" | "1h";

/** Ranges accepted by the API. */
export const RANGES: readonly Range[] = ["5m", "1h"];

const GROWTH = 1.15;
const BINS = 110; // 1.15^109 ms ≈ 68 minutes: the last bin holds everything slower
const LOG_GROWTH = Math.log(GROWTH);
/**
 * Buckets kept: the charts' 60 finished points reach back past 5 minutes (or an hour) by up to
 * one point, plus the one still filling.
 */
const SECONDS_KEPT = 310;
const MINUTES_KEPT = 62;
/** Seconds over which the "now" rates are averaged (the dashboard's cards say so). */
export const RATE_WINDOW_S = 10;
/** Seconds over which the "now" percentiles and error rate are taken (the cards say so). */
export const PERCENTILE_WINDOW_S = 60;

function binOf(ms: number): number {
  if (!(ms >= 1)) return 0;
  return Math.min(BINS - 1, 1 + Math.floor(Math.log(ms) / LOG_GROWTH));
}

/** The value a bin stands for: the geometric middle of [G^(i-1), G^i). */
function binValue(i: number): number {
  return i === 0 ? 0.5 : GROWTH ** (i - 0.5);
}

const FIELDS = [
  "count",
  "errors",
  "tokens",
  "genSeconds",
  "genTokens",
  "latencySum",
  "latencyN",
  "queue",
  "inFlight",
] as const;
type Field = typeof FIELDS[number];

/** A ring of time buckets, each `width` ms wide; a bucket is reset when its slot is reused. */
class Ring {
  readonly stamps: Float64Array;
  readonly f: Record<Field, Float64Array>;
  /** Histograms of successful latencies and of TTFT, `BINS` per bucket (fleet rings only). */
  readonly latency?: Uint32Array;
  readonly ttft?: Uint32Array;

  constructor(readonly size: number, readonly width: number, histograms: boolean) {
    this.stamps = new Float64Array(size).fill(-1);
    this.f = Object.fromEntries(FIELDS.map((k) => [k, new Float64Array(size)])) as Record<
      Field,
      Float64Array
    >;
    if (histograms) {
      this.latency = new Uint32Array(size * BINS);
      this.ttft = new Uint32Array(size * BINS);
    }
  }

  /** The slot for bucket `idx`, reset if it held an older bucket; -1 when `idx` is too old. */
  write(idx: number, nowIdx: number): number {
    if (idx <= nowIdx - this.size || idx > nowIdx + 1) return -1;
    const s = idx % this.size;
    const stamp = this.stamps[s];
    if (stamp === idx) return s;
    if (stamp > idx) return -1;
    this.stamps[s] = idx;
    for (const k of FIELDS) this.f[k][s] = 0;
    this.latency?.fill(0, s * BINS, (s + 1) * BINS);
    this.ttft?.fill(0, s * BINS, (s + 1) * BINS);
    return s;
  }

  /** The slot holding bucket `idx`, or -1 when it holds nothing for it. */
  read(idx: number): number {
    const s = ((idx % this.size) + this.size) % this.size;
    return this.stamps[s] === idx ? s : -1;
  }

  max(field: Field, from: number, to: number): number {
    let m = 0;
    for (let i = from; i <= to; i++) {
      const s = this.read(i);
      if (s !== -1 && this.f[field][s] > m) m = this.f[field][s];
    }
    return m;
  }

  sum(field: Field, from: number, to: number): number {
    let total = 0;
    for (let i = from; i <= to; i++) {
      const s = this.read(i);
      if (s !== -1) total += this.f[field][s];
    }
    return total;
  }
}

function percentile(hist: Uint32Array, q: number): number | null {
  let total = 0;
  for (const n of hist) total += n;
  if (total === 0) return null;
  const rank = Math.max(1, Math.ceil(q * total));
  let seen = 0;
  for (let i = 0; i < hist.length; i++) {
    seen += hist[i];
    if (seen >= rank) return round(binValue(i), 1);
  }
  return null;
}

function round(x: number, digits = 2): number {
  const p = 10 ** digits;
  return Math.round(x * p) / p;
}

/** The fleet's figures now. Rates over the last 10 s; percentiles and errors over the last 60 s. */
export interface StatsSummary {
  /** Milliseconds since the epoch when this summary was taken. */
  at: number;
  requests_per_second: number;
  tokens_per_second: number;
  latency_p50_ms: number | null;
  latency_p95_ms: number | null;
  ttft_p50_ms: number | null;
  ttft_p95_ms: number | null;
  /** Share of requests answered with status ≥ 400 over the last minute, 0..1 (null: none). */
  error_rate: number | null;
  /** Requests waiting for a slot now, over all models. */
  queue_depth: number;
  in_flight: number;
  /** Requests finished in the last hour. */
  requests_last_hour: number;
}

/** Chart data, one entry per bucket, oldest first; `t` is the bucket's start in ms. */
export interface Series {
  range: Range;
  /** Bucket width in ms. */
  step: number;
  t: number[];
  rps: number[];
  tps: number[];
  p50: (number | null)[];
  p95: (number | null)[];
  ttft50: (number | null)[];
  ttft95: (number | null)[];
  error_rate: (number | null)[];
  queue: number[];
  in_flight: number[];
}

/** One agent's chart data (no percentiles per agent: mean latency instead). */
export interface AgentSeries {
  range: Range;
  step: number;
  t: number[];
  rps: number[];
  tps: number[];
  mean_latency: (number | null)[];
  errors: number[];
}

/** One agent's figures. */
export interface AgentFigures {
  /** Requests it finished in the last hour. */
  requests: number;
  /** Requests per second over the last minute. */
  requests_per_second: number;
  /** Generation speed over the last 5 minutes (tokens out / generation time), null if unknown. */
  tokens_per_second: number | null;
  /** Requests with status ≥ 400 in the last hour. */
  errors: number;
  mean_latency_ms: number | null;
}

interface AgentRings {
  seconds: Ring;
  minutes: Ring;
}

/** What the sampler reports once a second. */
export interface Sample {
  queue: number;
  inFlight: number;
}

/** Options for {@linkcode Stats}. */
export interface StatsOptions {
  /** Subscribes to the bus's `request` and `agent_removed` messages. */
  bus?: Bus;
  /** Clock, injectable for tests. */
  now?: () => number;
  /** Reads the queue depth and in-flight count (sampled once a second and in summaries). */
  sample?: () => Sample;
}

/** The statistics aggregator. */
export class Stats {
  readonly #now: () => number;
  readonly #sample: () => Sample;
  readonly #seconds = new Ring(SECONDS_KEPT, 1000, true);
  readonly #minutes = new Ring(MINUTES_KEPT, 60_000, true);
  readonly #agents = new Map<string, AgentRings>();
  #unsubscribe?: () => void;
  #timer?: ReturnType<typeof setInterval>;

  constructor(options: StatsOptions = {}) {
    this.#now = options.now ?? Date.now;
    this.#sample = options.sample ?? (() => ({ queue: 0, inFlight: 0 }));
    this.#unsubscribe = options.bus?.subscribe((m) => {
      if (m.type === "request") this.record(m.request as unknown as RequestRecord);
      else if (m.type === "agent_removed") this.#agents.delete(m.id);
    }, ["request", "agent_removed"]);
  }

  /** Starts sampling the queue and in-flight count once a second; returns the stop function. */
  start(): () => void {
    clearInterval(this.#timer);
    this.#timer = setInterval(() => this.tick(), 1000);
    Deno.unrefTimer(this.#timer);
    return () => clearInterval(this.#timer);
  }

  /** Stops sampling and listening to the bus. */
  close(): void {
    clearInterval(this.#timer);
    this.#unsubscribe?.();
  }

  /** Samples the queue depth and in-flight count into the current buckets (keeping the max). */
  tick(): void {
    const now = this.#now();
    const { queue, inFlight } = this.#sample();
    for (const ring of [this.#seconds, this.#minutes]) {
      const s = ring.write(Math.floor(now / ring.width), Math.floor(now / ring.width));
      if (s === -1) continue;
      ring.f.queue[s] = Math.max(ring.f.queue[s], queue);
      ring.f.inFlight[s] = Math.max(ring.f.inFlight[s], inFlight);
    }
  }

  /** Adds a finished request, counted at `finishedAt` (default: now). */
  record(r: RequestRecord, finishedAt = this.#now()): void {
    const now = this.#now();
    const rings: Ring[] = [this.#seconds, this.#minutes];
    if (r.agent_id) {
      let a = this.#agents.get(r.agent_id);
      if (!a) {
        a = {
          seconds: new Ring(SECONDS_KEPT, 1000, false),
          minutes: new Ring(MINUTES_KEPT, 60_000, false),
        };
        this.#agents.set(r.agent_id, a);
      }
      rings.push(a.seconds, a.minutes);
    }
    const ok = r.status < 400;
    const tokens = r.tokens_out ?? 0;
    const tps = r.tokens_per_second;
    for (const ring of rings) {
      const s = ring.write(Math.floor(finishedAt / ring.width), Math.floor(now / ring.width));
      if (s === -1) continue;
      const f = ring.f;
      f.count[s]++;
      if (!ok) f.errors[s]++;
      f.tokens[s] += tokens;
      if (tokens > 0 && tps && tps > 0) {
        f.genTokens[s] += tokens;
        f.genSeconds[s] += tokens / tps;
      }
      if (ok) {
        f.latencySum[s] += r.latency_ms;
        f.latencyN[s]++;
        if (ring.latency) ring.latency[s * BINS + binOf(r.latency_ms)]++;
      }
      if (ring.ttft && r.ttft_ms !== null && r.ttft_ms !== undefined) {
        ring.ttft[s * BINS + binOf(r.ttft_ms)]++;
      }
    }
  }

  /** Replays records from the request log (after a restart); older than an hour is skipped. */
  replay(records: Iterable<RequestRecord>): void {
    for (const r of records) {
      const at = Date.parse(r.at);
      if (Number.isFinite(at)) this.record(r, at + (r.latency_ms || 0));
    }
  }

  /** The fleet's figures now. */
  summary(): StatsSummary {
    const now = this.#now();
    const sec = Math.floor(now / 1000);
    const r = this.#seconds;
    const lat = new Uint32Array(BINS);
    const ttft = new Uint32Array(BINS);
    for (let i = sec - PERCENTILE_WINDOW_S + 1; i <= sec; i++) addHist(r, i, lat, ttft);
    const count = r.sum("count", sec - PERCENTILE_WINDOW_S + 1, sec);
    const errors = r.sum("errors", sec - PERCENTILE_WINDOW_S + 1, sec);
    const { queue, inFlight } = this.#sample();
    const min = Math.floor(now / 60_000);
    return {
      at: now,
      requests_per_second: round(r.sum("count", sec - RATE_WINDOW_S, sec - 1) / RATE_WINDOW_S),
      tokens_per_second: round(r.sum("tokens", sec - RATE_WINDOW_S, sec - 1) / RATE_WINDOW_S, 1),
      latency_p50_ms: percentile(lat, 0.5),
      latency_p95_ms: percentile(lat, 0.95),
      ttft_p50_ms: percentile(ttft, 0.5),
      ttft_p95_ms: percentile(ttft, 0.95),
      error_rate: count ? round(errors / count, 4) : null,
      queue_depth: queue,
      in_flight: inFlight,
      requests_last_hour: this.#minutes.sum("count", min - 59, min),
    };
  }

  /**
   * Chart data for the fleet over a range: 5 minutes in 5-second points (per-second buckets
   * summed, calmer than single seconds) or an hour in 1-minute points. `last` keeps only the
   * newest points.
   */
  series(range: Range, last?: number): Series {
    const out: Series = {
      range,
      step: 0,
      t: [],
      rps: [],
      tps: [],
      p50: [],
      p95: [],
      ttft50: [],
      ttft95: [],
      error_rate: [],
      queue: [],
      in_flight: [],
    };
    const lat = new Uint32Array(BINS);
    const ttft = new Uint32Array(BINS);
    const ring = range === "5m" ? this.#seconds : this.#minutes;
    for (const pt of points(range, this.#now(), last)) {
      out.step = pt.step;
      lat.fill(0);
      ttft.fill(0);
      for (let i = pt.from; i <= pt.to; i++) addHist(ring, i, lat, ttft);
      const count = ring.sum("count", pt.from, pt.to);
      out.t.push(pt.t);
      out.rps.push(round(count / pt.seconds, 3));
      out.tps.push(round(ring.sum("tokens", pt.from, pt.to) / pt.seconds, 1));
      out.p50.push(percentile(lat, 0.5));
      out.p95.push(percentile(lat, 0.95));
      out.ttft50.push(percentile(ttft, 0.5));
      out.ttft95.push(percentile(ttft, 0.95));
      out.error_rate.push(count ? round(ring.sum("errors", pt.from, pt.to) / count, 4) : null);
      out.queue.push(ring.max("queue", pt.from, pt.to));
      out.in_flight.push(ring.max("inFlight", pt.from, pt.to));
    }
    return out;
  }

  /** Chart data for one agent, in the same points as {@linkcode series}. */
  agentSeries(agentId: string, range: Range, last?: number): AgentSeries {
    const a = this.#agents.get(agentId) ?? {
      seconds: new Ring(1, 1000, false),
      minutes: new Ring(1, 60_000, false),
    };
    const ring = range === "5m" ? a.seconds : a.minutes;
    const out: AgentSeries = {
      range,
      step: 0,
      t: [],
      rps: [],
      tps: [],
      mean_latency: [],
      errors: [],
    };
    for (const pt of points(range, this.#now(), last)) {
      out.step = pt.step;
      const latN = ring.sum("latencyN", pt.from, pt.to);
      out.t.push(pt.t);
      out.rps.push(round(ring.sum("count", pt.from, pt.to) / pt.seconds, 3));
      out.tps.push(round(ring.sum("tokens", pt.from, pt.to) / pt.seconds, 1));
      out.mean_latency.push(latN ? round(ring.sum("latencySum", pt.from, pt.to) / latN, 1) : null);
      out.errors.push(ring.sum("errors", pt.from, pt.to));
    }
    return out;
  }

  /** One agent's figures (zeros for an agent that served nothing). */
  agent(agentId: string): AgentFigures {
    const a = this.#agents.get(agentId);
    if (!a) {
      return {
        requests: 0,
        requests_per_second: 0,
        tokens_per_second: null,
        errors: 0,
        mean_latency_ms: null,
      };
    }
    const now = this.#now();
    const sec = Math.floor(now / 1000);
    const min = Math.floor(now / 60_000);
    const genTokens = a.seconds.sum("genTokens", sec - 299, sec);
    const genSeconds = a.seconds.sum("genSeconds", sec - 299, sec);
    const latN = a.minutes.sum("latencyN", min - 59, min);
    return {
      requests: a.minutes.sum("count", min - 59, min),
      requests_per_second: round(a.seconds.sum("count", sec - 59, sec) / 60, 3),
      tokens_per_second: genSeconds > 0 ? round(genTokens / genSeconds, 1) : null,
      errors: a.minutes.sum("errors", min - 59, min),
      mean_latency_ms: latN ? round(a.minutes.sum("latencySum", min - 59, min) / latN, 1) : null,
    };
  }

  /** Figures of every agent that served something in the last hour, by id. */
  agents(): Record<string, AgentFigures> {
    const out: Record<string, AgentFigures> = {};
    for (const id of this.#agents.keys()) out[id] = this.agent(id);
    return out;
  }
}

function addHist(ring: Ring, idx: number, lat: Uint32Array, ttft: Uint32Array): void {
  const s = ring.read(idx);
  if (s === -1 || !ring.latency || !ring.ttft) return;
  for (let b = 0; b < BINS; b++) {
    lat[b] += ring.latency[s * BINS + b];
    ttft[b] += ring.ttft[s * BINS + b];
  }
}

/** Buckets per chart point: 5 s points over 5 minutes, 1 min points over the hour. */
const POINTS: Record<Range, { group: number; count: number }> = {
  "5m": { group: 5, count: 60 },
  "1h": { group: 1, count: 60 },
};

/**
 * The points of a range, oldest first, each covering buckets `from..to`. Only finished points:
 * the one still filling is left out, as its sums would read low (a rate of 0 right after it
 * began) and every line would dip at "now".
 */
function* points(
  range: Range,
  now: number,
  last?: number,
): Generator<{ t: number; from: number; to: number; seconds: number; step: number }> {
  const { group, count } = POINTS[range];
  const width = range === "5m" ? 1000 : 60_000;
  const step = group * width;
  const nowGroup = Math.floor(Math.floor(now / width) / group);
  const n = Math.min(count, Math.max(1, last ?? count));
  for (let g = nowGroup - n; g < nowGroup; g++) {
    const from = g * group;
    yield { t: g * step, from, to: from + group - 1, seconds: step / 1000, step };
  }
}
