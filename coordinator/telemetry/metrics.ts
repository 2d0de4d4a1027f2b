/**
 * Prometheus metrics (`GET /metrics`, text exposition format 0.0.4). Counters and histograms are
 * fed from the bus (requests, events); gauges are read from the registry and the scheduler at
 * scrape time, so the hot path does no metrics work of its own.
 */
import process from "node:process";
import type { Bus } from "./bus.ts";
import type { Registry } from "../fleet/registry.ts";
import type { Scheduler } from "../scheduler/mod.ts";
import type { RequestRecord } from "./request_log.ts";
import { LIMIT_NAMES, type Quotas } from "../quotas/mod.ts";

const LATENCY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120];
/** Distinct label sets per metric; past this, new ones are folded into `other`. */
const MAX_SERIES = 5_000;

type Labels = Record<string, string>;

const NEEDS_ESCAPE = /[\\\n"]/;

function escape(v: string): string {
  if (!NEEDS_ESCAPE.test(v)) return v;
  return v.replace(/\\/g, "\\\\").replace(/\n/g, "\\n").replace(/"/g, '\\"');
}

/** `{k="v",…}`; built by hand: it runs several times per proxied request. */
function labelText(labels: Labels): string {
  let out = "";
  for (const k in labels) out += `${out ? "," : "{"}${k}="${escape(labels[k])}"`;
  return out && out + "}";
}

class Counter {
  readonly values = new Map<string, number>();
  constructor(readonly name: string, readonly help: string) {}
  inc(labels: Labels, by = 1): void {
    let key = labelText(labels);
    if (!this.values.has(key) && this.values.size >= MAX_SERIES) {
      key = labelText(Object.fromEntries(Object.keys(labels).map((k) => [k, "other"])));
    }
    this.values.set(key, (this.values.get(key) ?? 0) + by);
  }
  render(out: string[]): void {
    out.push(`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} counter`);
    for (const [k, v] of this.values) out.push(`${this.name}${k} ${v}`);
  }
}

class Histogram {
  readonly series = new Map<
    string,
    { labels: Labels; counts: number[]; sum: number; count: number }
  >();
  constructor(readonly name: string, readonly help: string, readonly buckets: number[]) {}
  observe(labels: Labels, value: number): void {
    const key = labelText(labels);
    let s = this.series.get(key);
    if (!s) {
      if (this.series.size >= MAX_SERIES) return;
      this.series.set(key, s = { labels, counts: this.buckets.map(() => 0), sum: 0, count: 0 });
    }
    for (let i = 0; i < this.buckets.length; i++) if (value <= this.buckets[i]) s.counts[i]++;
    s.sum += value;
    s.count++;
  }
  render(out: string[]): void {
    out.push(`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} histogram`);
    for (const s of this.series.values()) {
      this.buckets.forEach((b, i) =>
        out.push(`${this.name}_bucket${labelText({ ...s.labels, le: String(b) })} ${s.counts[i]}`)
      );
      out.push(`${this.name}_bucket${labelText({ ...s.labels, le: "+Inf" })} ${s.count}`);
      out.push(`${this.name}_sum${labelText(s.labels)} ${s.sum}`);
      out.push(`${this.name}_count${labelText(s.labels)} ${s.count}`);
    }
  }
}

function gauge(out: string[], name: string, help: string, rows: [Labels, number][]): void {
  out.push(`# HELP ${name} ${help}`, `# TYPE ${name} gauge`);
  for (const [labels, v] of rows) {
    out.push(`${name}${labelText(labels)} ${Number.isFinite(v) ? v : 0}`);
  }
}

/** Samples kept between two scrapes; at 100 a second, the last 80 s. */
const DELAY_WINDOW = 8192;

/**
 * The event loop's delay: a timer due every `resolutionMs` notes how late it fires, which is how
 * long the loop was busy with other work. Quantiles and the maximum cover the samples since the
 * previous scrape (as prom-client's `nodejs_eventloop_lag_*` do), so a benchmark reads one run by
 * scraping before and after it; `_sum` and `_count` are cumulative. Deno 2.9's
 * `monitorEventLoopDelay` (node:perf_hooks) reported 3 ms for loops blocked 80 ms, hence a timer.
 */
export class EventLoopDelay {
  readonly #resolutionMs: number;
  readonly #now: () => number;
  readonly #window = new Float64Array(DELAY_WINDOW);
  #size = 0;
  #next = 0;
  #max = 0;
  #sum = 0;
  #count = 0;

  constructor(options: { resolutionMs?: number; now?: () => number } = {}) {
    this.#resolutionMs = options.resolutionMs ?? 10;
    this.#now = options.now ?? (() => performance.now());
  }

  /** Samples served so far (cumulative). */
  get count(): number {
    return this.#count;
  }

  /** Notes one delay, in seconds. */
  record(seconds: number): void {
    this.#window[this.#next] = seconds;
    this.#next = (this.#next + 1) % DELAY_WINDOW;
    this.#size = Math.min(this.#size + 1, DELAY_WINDOW);
    this.#max = Math.max(this.#max, seconds);
    this.#sum += seconds;
    this.#count++;
  }

  /**
   * Starts sampling; returns the function that stops it. One interval timer: a timeout made anew
   * on every tick cost ~90 µs a tick on a busy loop (1% of a core at 100 ticks a second).
   */
  start(): () => void {
    let due = this.#now() + this.#resolutionMs;
    const timer = setInterval(() => {
      const now = this.#now();
      this.record(Math.max(0, now - due) / 1000);
      due = now + this.#resolutionMs;
    }, this.#resolutionMs);
    Deno.unrefTimer(timer);
    return () => clearInterval(timer);
  }

  /** Writes the summary and the maximum, then starts a new window. */
  render(out: string[]): void {
    const name = "ollama_coordinator_event_loop_delay_seconds";
    out.push(
      `# HELP ${name} How late a ${this.#resolutionMs} ms timer fired; quantiles since the previous scrape`,
      `# TYPE ${name} summary`,
    );
    const sorted = this.#window.slice(0, this.#size).sort();
    if (sorted.length > 0) {
      for (const q of [0.5, 0.9, 0.99]) {
        const v = sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * q))];
        out.push(`${name}{quantile="${q}"} ${v}`);
      }
    }
    out.push(`${name}_sum ${this.#sum}`, `${name}_count ${this.#count}`);
    gauge(
      out,
      "ollama_coordinator_event_loop_delay_max_seconds",
      "Longest event loop delay since the previous scrape",
      [[{}, this.#max]],
    );
    this.#size = 0;
    this.#next = 0;
    this.#max = 0;
  }
}

/** Rows a write-behind buffer holds and has handled since start. */
export interface BufferCounts {
  buffered: number;
  written: number;
  dropped: number;
}

/** How the store keeps up, read at scrape time. */
export interface StoreHealth {
  requestLog: BufferCounts;
  events: BufferCounts;
  /** Batched writes of agent state the store refused (each kept and retried). */
  agentWriteFailures: number;
}

/** This coordinator among the others sharing its store, read at scrape time. */
export interface ClusterHealth {
  /** Whether it runs the fleet-wide chores (health monitor, retention). */
  leading: boolean;
  /** Other coordinators heard from lately. */
  peers: number;
}

/** Where the per-key series come from: the quotas' counts, and how to name a key. */
export interface KeyMetricsSource {
  quotas: Quotas;
  /** A key's name and prefix by id (never the key itself). */
  describe(tenant: string): { name: string; prefix: string };
}

/** The coordinator's metrics. */
export class Metrics {
  readonly requests = new Counter(
    "ollama_coordinator_requests_total",
    "Client requests by route, model, agent and status",
  );
  readonly latency = new Histogram(
    "ollama_coordinator_request_duration_seconds",
    "Time from request to the end of the answer",
    LATENCY_BUCKETS,
  );
  readonly ttft = new Histogram(
    "ollama_coordinator_time_to_first_token_seconds",
    "Time from request to the first byte of a streamed answer",
    LATENCY_BUCKETS,
  );
  readonly tokens = new Counter(
    "ollama_coordinator_tokens_total",
    "Tokens in (prompt) and out (generated)",
  );
  readonly retries = new Counter(
    "ollama_coordinator_retries_total",
    "Attempts that failed on an agent (each one retried elsewhere while attempts remain)",
  );
  readonly trips = new Counter(
    "ollama_coordinator_circuit_breaker_trips_total",
    "Times an agent was taken out after repeated failures",
  );
  readonly keyRequests = new Counter(
    "ollama_coordinator_key_requests_total",
    "Client requests per API key (by name and prefix) and status; 429s were refused by a limit",
  );
  readonly keyTokens = new Counter(
    "ollama_coordinator_key_tokens_total",
    "Tokens in (prompt) and out (generated) per API key",
  );
  readonly eventLoop = new EventLoopDelay();
  /** Where the store's series come from (set by whoever assembles the coordinator). */
  store?: () => StoreHealth;
  /** Where the cluster's series come from (set once the coordinator runs). */
  cluster?: () => ClusterHealth;
  /** Where the per-key series come from (set by whoever assembles the coordinator). */
  keys?: KeyMetricsSource;
  readonly #registry: Registry;
  readonly #scheduler: Scheduler;
  readonly #now: () => number;

  constructor(bus: Bus, registry: Registry, scheduler: Scheduler, now: () => number = Date.now) {
    this.#registry = registry;
    this.#scheduler = scheduler;
    this.#now = now;
    bus.subscribe((m) => {
      if (m.type === "request") this.#onRequest(m.request as unknown as RequestRecord);
      else if (m.type === "event") {
        const agent = this.#agentName(m.event.agent_id);
        if (m.event.kind === "failure") this.retries.inc({ agent });
        if (m.event.kind === "circuit_open") this.trips.inc({ agent });
      }
    }, ["request", "event"]);
  }

  #agentName(id: string | null): string {
    const a = id ? this.#registry.get(id) : undefined;
    return a ? this.#registry.label(a) : "none";
  }

  #onRequest(r: RequestRecord): void {
    // Only models some agent has become label values, so clients cannot mint series at will.
    const model = r.model && r.agent_id ? r.model : "none";
    this.requests.inc({
      route: r.route,
      model,
      agent: r.agent_name ?? "none",
      status: String(r.status),
    });
    this.latency.observe({ route: r.route }, r.latency_ms / 1000);
    if (r.ttft_ms !== null) this.ttft.observe({ route: r.route }, r.ttft_ms / 1000);
    if (r.tokens_in) this.tokens.inc({ direction: "in", model }, r.tokens_in);
    if (r.tokens_out) this.tokens.inc({ direction: "out", model }, r.tokens_out);
    if (r.key_id && this.keys) {
      const key = this.#keyLabels(r.key_id);
      this.keyRequests.inc({ ...key, status: String(r.status) });
      if (r.tokens_in) this.keyTokens.inc({ ...key, direction: "in" }, r.tokens_in);
      if (r.tokens_out) this.keyTokens.inc({ ...key, direction: "out" }, r.tokens_out);
    }
  }

  #keyLabels(tenant: string): Labels {
    const { name, prefix } = this.keys!.describe(tenant);
    return { key: name, key_prefix: prefix };
  }

  /** Refusals and requests in flight per key, as the quotas count them now. */
  #renderKeys(out: string[]): void {
    if (!this.keys) return;
    const limited: [Labels, number][] = [];
    const inFlight: [Labels, number][] = [];
    for (const [tenant, c] of this.keys.quotas.counts()) {
      const key = this.#keyLabels(tenant);
      for (const limit of LIMIT_NAMES) {
        if (c.limited[limit]) limited.push([{ ...key, limit }, c.limited[limit]]);
      }
      inFlight.push([key, c.inFlight]);
    }
    out.push(
      "# HELP ollama_coordinator_key_limited_total Requests refused with 429 per API key and limit",
      "# TYPE ollama_coordinator_key_limited_total counter",
    );
    for (const [labels, v] of limited) {
      out.push(`ollama_coordinator_key_limited_total${labelText(labels)} ${v}`);
    }
    gauge(
      out,
      "ollama_coordinator_key_in_flight",
      "Requests in flight per API key on this coordinator",
      inFlight,
    );
  }

  /** Starts sampling the event loop's delay; returns the function that stops it. */
  start(): () => void {
    return this.eventLoop.start();
  }

  /** The exposition text. */
  render(): string {
    const out: string[] = [];
    for (
      const m of [this.requests, this.latency, this.ttft, this.tokens, this.retries, this.trips]
    ) m.render(out);
    this.keyRequests.render(out);
    this.keyTokens.render(out);
    this.#renderKeys(out);
    const agents = this.#registry.all();
    const name = (a: (typeof agents)[number]) => ({ agent: this.#registry.label(a), id: a.id });
    gauge(
      out,
      "ollama_coordinator_agent_status",
      "1 for the agent's current status",
      agents.flatMap((a) =>
        (["online", "offline", "draining"] as const).map((
          s,
        ): [Labels, number] => [{ ...name(a), status: s }, a.status === s ? 1 : 0])
      ),
    );
    gauge(
      out,
      "ollama_coordinator_agent_heartbeat_age_seconds",
      "Seconds since the agent's last heartbeat",
      agents.map((a) => [name(a), (this.#now() - a.lastSeen) / 1000]),
    );
    gauge(
      out,
      "ollama_coordinator_agent_in_flight",
      "Requests in flight on the agent",
      agents.map((a) => [name(a), a.inFlight]),
    );
    gauge(
      out,
      "ollama_coordinator_agent_capacity",
      "Parallel slots the scheduler gives the agent",
      agents.map((a) => [name(a), this.#scheduler.capacity(a)]),
    );
    gauge(
      out,
      "ollama_coordinator_agent_cpu_percent",
      "CPU use the agent reported",
      agents.map((a) => [name(a), a.metrics?.cpu_usage ?? 0]),
    );
    gauge(
      out,
      "ollama_coordinator_agent_memory_percent",
      "Memory use the agent reported",
      agents.map((a) => [name(a), a.metrics?.memory_usage ?? 0]),
    );
    const gpus = agents.flatMap((a) =>
      (a.metrics?.gpus ?? []).map((g, i) => ({
        labels: { ...name(a), gpu: String(i), gpu_name: g.name },
        g,
      }))
    );
    gauge(
      out,
      "ollama_coordinator_agent_gpu_utilization_percent",
      "GPU utilisation the agent reported",
      gpus.map(({ labels, g }) => [labels, g.utilization ?? 0]),
    );
    gauge(
      out,
      "ollama_coordinator_agent_gpu_memory_used_bytes",
      "VRAM in use",
      gpus.map(({ labels, g }) => [labels, g.memory_used ?? 0]),
    );
    gauge(
      out,
      "ollama_coordinator_agent_gpu_memory_total_bytes",
      "VRAM in all",
      gpus.map(({ labels, g }) => [labels, g.memory_total ?? 0]),
    );
    gauge(out, "ollama_coordinator_in_flight_requests", "Requests in flight on all agents", [[
      {},
      agents.reduce((s, a) => s + a.inFlight, 0),
    ]]);
    gauge(
      out,
      "ollama_coordinator_queued_requests",
      "Requests waiting for a free slot, per model",
      Object.entries(this.#scheduler.queueDepths()).map(([model, n]) => [{ model }, n]),
    );
    if (this.store) storeMetrics(out, this.store());
    if (this.cluster) clusterMetrics(out, this.cluster());
    this.eventLoop.render(out);
    processMetrics(out);
    return out.join("\n") + "\n";
  }
}

function counter(out: string[], name: string, help: string, value: number): void {
  out.push(`# HELP ${name} ${help}`, `# TYPE ${name} counter`, `${name} ${value}`);
}

/**
 * The write-behind buffers and the agent-state writes: a database that is away shows as rows
 * buffered (and, past the bound, dropped) while inference goes on.
 */
function storeMetrics(out: string[], h: StoreHealth): void {
  const p = "ollama_coordinator";
  gauge(out, `${p}_request_log_buffered_rows`, "Request-log rows waiting to be written", [[
    {},
    h.requestLog.buffered,
  ]]);
  counter(
    out,
    `${p}_request_log_written_rows_total`,
    "Request-log rows written to the database",
    h.requestLog.written,
  );
  counter(
    out,
    `${p}_request_log_dropped_rows_total`,
    "Request-log rows dropped: the database stayed unavailable and the buffer was full",
    h.requestLog.dropped,
  );
  gauge(out, `${p}_events_buffered`, "Fleet events waiting to be written", [[
    {},
    h.events.buffered,
  ]]);
  counter(out, `${p}_events_written_total`, "Fleet events written", h.events.written);
  counter(
    out,
    `${p}_events_dropped_total`,
    "Fleet events dropped: the database stayed unavailable and the buffer was full",
    h.events.dropped,
  );
  counter(
    out,
    `${p}_agent_state_write_failures_total`,
    "Batched writes of agent state (heartbeats, status) the database refused; each is retried",
    h.agentWriteFailures,
  );
}

function clusterMetrics(out: string[], h: ClusterHealth): void {
  gauge(
    out,
    "ollama_coordinator_cluster_leader",
    "1 while this coordinator runs the fleet-wide chores (always 1 on SQLite)",
    [[{}, h.leading ? 1 : 0]],
  );
  gauge(
    out,
    "ollama_coordinator_cluster_peers",
    "Other coordinators sharing the database heard from in the last 3 s",
    [[{}, h.peers]],
  );
}

const STARTED_AT = Date.now() / 1000;

/** The standard `process_*` series, as Prometheus client libraries export them. */
function processMetrics(out: string[]): void {
  const { user, system } = process.cpuUsage();
  out.push(
    "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.",
    "# TYPE process_cpu_seconds_total counter",
    `process_cpu_seconds_total ${(user + system) / 1e6}`,
  );
  const mem = Deno.memoryUsage();
  gauge(out, "process_resident_memory_bytes", "Resident memory size in bytes.", [[{}, mem.rss]]);
  gauge(out, "process_heap_bytes", "JavaScript heap in use, in bytes.", [[{}, mem.heapUsed]]);
  gauge(out, "process_start_time_seconds", "Start time of the process since the epoch.", [[
    {},
    STARTED_AT,
  ]]);
  try {
    let fds = 0;
    for (const _ of Deno.readDirSync("/proc/self/fd")) fds++;
    gauge(out, "process_open_fds", "Number of open file descriptors.", [[{}, fds]]);
  } catch { /* not Linux */ }
}
