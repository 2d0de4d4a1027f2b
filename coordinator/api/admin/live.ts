/**
 * The dashboard's live data: `GET /api/stats` (figures and charts) and `GET /api/stream`, a
 * Server-Sent Events stream of everything the bus publishes, coalesced per connection so a busy
 * fleet costs each open page a few messages a second, not one per request.
 */
import { Hono } from "hono";
import { ollamaError } from "@oc/shared";
import type { AppContext } from "../../context.ts";
import type { Agent } from "../../fleet/registry.ts";
import type { BusMessage, FleetEvent } from "../../telemetry/bus.ts";
import { access } from "../../http/access.ts";
import { json } from "../../http/json.ts";
import { type AgentFigures, type Range, RANGES } from "../../telemetry/live_stats.ts";
import type { AgentRow, FleetSummary, StatsMessage } from "../../dashboard/wire.ts";

export type { AgentRow, FleetSummary, StatsMessage };

/** What the live routes read (every service is in the one context). */
export type LiveContext = AppContext;

/** The dashboard's view of one agent. */
export function agentRow(ctx: Pick<AppContext, "registry" | "scheduler">, agent: Agent): AgentRow {
  return {
    ...ctx.registry.view(agent),
    capacity: ctx.scheduler.capacity(agent),
    drain: agent.drain,
  };
}

/** Builds the fleet summary shown on the overview. */
export function fleetSummary(ctx: LiveContext): FleetSummary {
  const counts = { online: 0, offline: 0, draining: 0 };
  for (const a of ctx.registry.all()) counts[a.status]++;
  return {
    ...ctx.stats.summary(),
    agents_online: counts.online,
    agents_offline: counts.offline,
    agents_draining: counts.draining,
    queue_by_model: ctx.scheduler.queueDepths(),
  };
}

function statsMessage(ctx: LiveContext, agentId?: string): StatsMessage {
  const m: StatsMessage = {
    summary: fleetSummary(ctx),
    tail: { "5m": ctx.stats.series("5m", 3), "1h": ctx.stats.series("1h", 2) },
    agents: ctx.stats.agents(),
  };
  if (agentId) {
    m.agent = {
      id: agentId,
      tail: {
        "5m": ctx.stats.agentSeries(agentId, "5m", 3),
        "1h": ctx.stats.agentSeries(agentId, "1h", 2),
      },
    };
  }
  return m;
}

/** Every agent as the dashboard shows it, with its figures: what a page reloads on reconnect. */
export function fleetSnapshot(ctx: LiveContext): {
  agents: AgentRow[];
  figures: Record<string, AgentFigures>;
} {
  return {
    agents: ctx.registry.all().map((a) => agentRow(ctx, a)),
    figures: ctx.stats.agents(),
  };
}

/** Topics a client may ask the stream for (`?topics=a,b`); all by default. */
export const TOPICS = ["agents", "events", "requests", "progress", "stats"] as const;
type Topic = typeof TOPICS[number];

const FLUSH_MS = 200;
const STATS_MS = 1000;
const KEEPALIVE_MS = 15_000;
/** Milliseconds a browser waits before reconnecting. */
export const RETRY_MS = 1000;
/** Request records kept per flush for one client; older ones in a burst are skipped. */
const MAX_REQUESTS_PER_FLUSH = 100;
/** Chunks queued for a client that does not read before it is dropped (it reconnects). */
const MAX_QUEUED = 512;

/** The live routes (a management API, for admins). */
export function liveRoutes(ctx: LiveContext): Hono {
  const app = new Hono();

  app.get("/api/stats", access.admin, (c) => {
    const range = c.req.query("range") ?? "5m";
    if (!RANGES.includes(range as Range)) {
      return ollamaError(400, `Query range must be one of ${RANGES.join(", ")}`);
    }
    const agentId = c.req.query("agent_id");
    if (agentId !== undefined) {
      if (!ctx.registry.get(agentId)) return ollamaError(404, `Agent "${agentId}" not found`);
      return json({
        agent: ctx.stats.agent(agentId),
        series: ctx.stats.agentSeries(agentId, range as Range),
      });
    }
    return json({
      summary: fleetSummary(ctx),
      series: ctx.stats.series(range as Range),
      agents: ctx.stats.agents(),
    });
  });

  app.get("/api/fleet", access.admin, () => json(fleetSnapshot(ctx)));

  app.get("/api/stream", access.admin, (c) => {
    const asked = c.req.query("topics");
    const topics = new Set<Topic>(asked ? [] : TOPICS);
    for (const t of asked?.split(",") ?? []) {
      if (!TOPICS.includes(t as Topic)) {
        return ollamaError(400, `Unknown topic "${t.slice(0, 40)}"; known: ${TOPICS.join(", ")}`);
      }
      topics.add(t as Topic);
    }
    const agent = c.req.query("agent") || undefined;
    if (agent !== undefined && agent.length > 128) {
      return ollamaError(400, "Query agent is too long");
    }
    return new Response(openStream(ctx, { topics, agent }, c.req.raw.signal), {
      headers: {
        "content-type": "text/event-stream; charset=utf-8",
        "cache-control": "no-cache, no-transform",
        "x-accel-buffering": "no",
      },
    });
  });

  return app;
}

/** The bus messages a stream with these topics needs (the stats come from a timer). */
function busTypes(topics: ReadonlySet<Topic>): BusMessage["type"][] {
  const types: BusMessage["type"][] = [];
  if (topics.has("agents")) types.push("agent", "agent_removed");
  if (topics.has("events")) types.push("event");
  if (topics.has("requests")) types.push("request");
  if (topics.has("progress")) types.push("progress");
  return types;
}

function openStream(
  ctx: LiveContext,
  { topics, agent: agentId }: { topics: Set<Topic>; agent?: string },
  signal: AbortSignal,
): ReadableStream<Uint8Array> {
  const encoder = new TextEncoder();
  /** Agents that changed since the last flush; their rows are built once, at the flush. */
  const agents = new Set<string>();
  const removed = new Set<string>();
  const progress = new Map<string, Record<string, unknown>>();
  let events: FleetEvent[] = [];
  let requests: Record<string, unknown>[] = [];
  let flushTimer: ReturnType<typeof setTimeout> | undefined;
  let statsTimer: ReturnType<typeof setInterval> | undefined;
  let lastStats = "";
  let lastWrite = Date.now();
  let closed = false;
  let unsubscribe = () => {};
  let unregister = () => {};
  let controller!: ReadableStreamDefaultController<Uint8Array>;

  const cleanup = () => {
    if (closed) return;
    closed = true;
    clearTimeout(flushTimer);
    clearInterval(statsTimer);
    unsubscribe();
    unregister();
    signal.removeEventListener("abort", end);
  };
  function end() {
    if (closed) return;
    cleanup();
    try {
      controller.close();
    } catch { /* already closed */ }
  }
  const write = (text: string) => {
    if (closed) return;
    if ((controller.desiredSize ?? 0) < -MAX_QUEUED) return end();
    lastWrite = Date.now();
    controller.enqueue(encoder.encode(text));
  };
  const send = (event: string, data: unknown) =>
    write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);

  const flush = () => {
    flushTimer = undefined;
    const rows: AgentRow[] = [];
    for (const id of agents) {
      const agent = ctx.registry.get(id);
      if (agent) rows.push(agentRow(ctx, agent));
    }
    if (rows.length) send("agents", rows);
    if (removed.size) send("removed", [...removed]);
    if (events.length) send("events", events);
    if (requests.length) send("requests", requests);
    if (progress.size) send("progress", [...progress.values()]);
    agents.clear();
    removed.clear();
    progress.clear();
    events = [];
    requests = [];
  };
  const onMessage = (m: BusMessage) => {
    switch (m.type) {
      case "agent":
        if (!topics.has("agents")) return;
        removed.delete(m.id);
        agents.add(m.id);
        break;
      case "agent_removed":
        if (!topics.has("agents")) return;
        agents.delete(m.id);
        removed.add(m.id);
        break;
      case "event":
        if (!topics.has("events")) return;
        events.push(m.event);
        break;
      case "request":
        if (!topics.has("requests")) return;
        requests.push(m.request);
        if (requests.length > MAX_REQUESTS_PER_FLUSH) requests.shift();
        break;
      case "progress": {
        if (!topics.has("progress")) return;
        const id = String(m.progress.id ?? m.progress.command_id ?? "");
        progress.set(id, { ...m.progress, id });
        break;
      }
    }
    flushTimer ??= setTimeout(flush, FLUSH_MS);
  };
  const sendStats = () => {
    const text = JSON.stringify(statsMessage(ctx, agentId));
    // Unchanged figures are not sent again; a comment keeps proxies from closing the stream.
    if (text !== lastStats) {
      lastStats = text;
      write(`event: stats\ndata: ${text}\n\n`);
    } else if (Date.now() - lastWrite > KEEPALIVE_MS) write(": keep-alive\n\n");
  };

  return new ReadableStream<Uint8Array>({
    start(c) {
      controller = c;
      if (signal.aborted) return end();
      signal.addEventListener("abort", end, { once: true });
      unregister = ctx.live.add(end);
      unsubscribe = ctx.bus.subscribe(onMessage, busTypes(topics));
      write(`retry: ${RETRY_MS}\n\n`);
      send("hello", { at: ctx.now(), topics: [...topics] });
      if (topics.has("stats")) sendStats();
      statsTimer = setInterval(
        topics.has("stats") ? sendStats : () => {
          if (Date.now() - lastWrite > KEEPALIVE_MS) write(": keep-alive\n\n");
        },
        STATS_MS,
      );
    },
    cancel() {
      cleanup();
    },
  });
}
