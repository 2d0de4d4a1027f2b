/**
 * Several coordinators, one fleet. On a store others share (PostgreSQL), each coordinator:
 * - applies the changes the others make (registrations, heartbeat state, drains, pins, aliases,
 *   placement rules, keys, sessions, removals) within a moment, from the store's change feed, and
 *   reloads everything after the feed reconnects, since what was said meanwhile is lost;
 * - republishes the others' events on its own bus, so every dashboard shows every event;
 * - shares the commands waiting for agents and their progress (an agent heartbeats to one), and
 *   which agent each uploaded blob went to (the create that uses it may come through another);
 * - shares its requests in flight per agent, so routing weighs the whole fleet's load, and
 *   enforces its share of every API key's limits (the limit over the coordinators alive);
 * - runs the fleet-wide chores (health monitor, retention) only while it leads.
 * On a store of its own (SQLite) a coordinator simply leads.
 */
import type { AppContext } from "../context.ts";
import type { AgentRecord, ClusterMessage, StoreCluster, StoreSnapshot } from "../store/mod.ts";
import { abortableSleep } from "@oc/shared";
import { ClusterLoad } from "./load.ts";
import { ModelPins } from "../scheduler/pins.ts";
import { ModelAliases } from "../aliases/mod.ts";
import { PlacementRules } from "../placement/rules.ts";

/** Options for {@linkcode startCluster}. */
export interface ClusterOptions {
  /** Called when this coordinator starts (true) or stops (false) leading the chores. */
  leading(leading: boolean): void;
}

/** This coordinator's place among the others sharing its store. */
export interface ClusterMembership {
  /** Other coordinators heard from in the last 3 s (always 0 on a store of its own). */
  readonly peers: number;
  /** Leaves; resolves once nothing started from the others' messages still runs. */
  leave(): Promise<void>;
}

/** Joins the other coordinators sharing the store. */
export function startCluster(ctx: AppContext, options: ClusterOptions): ClusterMembership {
  const cluster = ctx.store.cluster;
  if (!cluster) {
    options.leading(true);
    return {
      peers: 0,
      leave() {
        options.leading(false);
        return Promise.resolve();
      },
    };
  }
  const load = new ClusterLoad(ctx.registry, cluster, {
    now: ctx.now,
    changed: () => ctx.scheduler.pump(),
  });
  const sync = new ClusterSync(ctx, cluster, load);
  ctx.quotas.shareWith(() => load.peers + 1);
  ctx.commands.onChange = (change) => {
    const m: ClusterMessage = change.kind === "added"
      ? { t: "command", agent: change.agentId, command: change.command }
      : change.kind === "taken"
      ? { t: "command_taken", agent: change.agentId, ids: change.ids }
      : { t: "progress", agent: change.agentId, model: change.model, progress: change.progress };
    cluster.publish(m).catch((e) => console.error("Cannot share a command:", e.message));
  };
  ctx.scheduler.placement.onBlob = (d, agent) => {
    cluster.publish({ t: "blob", d, agent }).catch((e) =>
      console.error("Cannot share a blob's agent:", e.message)
    );
  };
  const unsubscribe = cluster.subscribe({
    message: (m, from) => sync.message(m, from),
    connected: () => void sync.reload(),
  });
  const stopLoad = load.start();
  let leading = false;
  const resign = cluster.lead((now) => {
    leading = now;
    if (now) console.log(`This coordinator (${cluster.id}) leads the fleet-wide chores`);
    options.leading(now);
  });
  return {
    get peers() {
      return load.peers;
    },
    leave() {
      ctx.quotas.shareWith(() => 1);
      ctx.commands.onChange = undefined;
      ctx.scheduler.placement.onBlob = undefined;
      unsubscribe();
      stopLoad();
      resign();
      if (leading) options.leading(false);
      return sync.stop();
    },
  };
}

/** Applies what the other coordinators say. */
class ClusterSync {
  readonly #ctx: AppContext;
  readonly #cluster: StoreCluster;
  readonly #load: ClusterLoad;
  /** The agents' change counter up to which this coordinator has read. */
  #agentsSeen = 0;
  /** The newest event id published here. */
  #lastEvent: number | undefined;
  /** One read of changed agents at a time; another notice meanwhile asks for one more. */
  #readingAgents: Promise<void> | undefined;
  #agentsAgain = false;
  #readingEvents: Promise<void> | undefined;
  #eventsAgain = false;
  /** Work started from the others' messages, awaited before the store closes. */
  readonly #running = new Set<Promise<boolean>>();
  #stopped = false;
  /** Ends the reload's pauses between attempts when this coordinator leaves. */
  readonly #stop = new AbortController();
  /** One reload at a time; a reconnection meanwhile asks for one more. */
  #reloading: Promise<void> | undefined;
  #reloadAgain = false;

  constructor(ctx: AppContext, cluster: StoreCluster, load: ClusterLoad) {
    this.#ctx = ctx;
    this.#cluster = cluster;
    this.#load = load;
  }

  /** Takes no more messages; resolves when what is being applied is done. */
  async stop(): Promise<void> {
    this.#stopped = true;
    this.#stop.abort();
    while (this.#running.size > 0) await Promise.allSettled([...this.#running]);
  }

  message(m: ClusterMessage, from: string): void {
    if (this.#stopped) return;
    const { ctx, cluster } = { ctx: this.#ctx, cluster: this.#cluster };
    switch (m.t) {
      case "agents":
        return void this.#readAgents();
      case "agent_removed":
        if (ctx.registry.removeRemote(m.id)) {
          ctx.security.revokeAgentSecret(m.id);
          ctx.scheduler.forget(m.id);
          ctx.commands.forget(m.id);
        }
        return;
      case "events":
        return void this.#readEvents();
      case "key":
        return void this.#apply("an API key", async () => {
          ctx.security.applyRemoteKey(m.id, await cluster.key(m.id));
        });
      case "session":
        return void this.#apply("a session", async () => {
          ctx.security.applyRemoteSession(m.h, await cluster.session(m.h));
        });
      case "sessions_cleared":
        return ctx.security.clearSessions();
      case "setting":
        return void this.#apply("a setting", async () => {
          ctx.security.applyRemoteSetting(m.k, await cluster.setting(m.k));
          if (m.k === ModelPins.SETTING) ctx.scheduler.pins.reload();
          if (m.k === ModelAliases.SETTING) ctx.aliases.reload();
          if (m.k === PlacementRules.SETTING) {
            ctx.placement.rules.reload();
            ctx.placement.nudge();
          }
        });
      case "command":
        return ctx.commands.remote({ kind: "added", agentId: m.agent, command: m.command });
      case "command_taken":
        return ctx.commands.remote({ kind: "taken", agentId: m.agent, ids: m.ids });
      case "progress":
        return ctx.commands.remote({
          kind: "progress",
          agentId: m.agent,
          model: m.model,
          progress: m.progress,
        });
      case "blob":
        return ctx.scheduler.placement.rememberBlob(m.d, m.agent);
      case "load":
        return this.#load.receive(from, m);
    }
  }

  /** Runs `fn`; false (and a log line unless `quiet`) when it failed. */
  async #apply(what: string, fn: () => Promise<void>, quiet = false): Promise<boolean> {
    if (this.#stopped) return false;
    const running = (async () => {
      try {
        await fn();
        return true;
      } catch (e) {
        // The feed reconnects and reloads everything after an outage: nothing is lost for good.
        if (this.#stopped || quiet) return false;
        console.error(
          `Cannot apply another coordinator's change to ${what}:`,
          (e as Error).message,
        );
        return false;
      }
    })();
    this.#running.add(running);
    try {
      return await running;
    } finally {
      this.#running.delete(running);
    }
  }

  /** Reads the agents changed since last time (coalescing notices that come meanwhile). */
  #readAgents(): Promise<void> {
    if (this.#readingAgents) {
      this.#agentsAgain = true;
      return this.#readingAgents;
    }
    this.#readingAgents = (async () => {
      do {
        this.#agentsAgain = false;
        await this.#apply("agents", async () => {
          const { agents, watermark } = await this.#cluster.agentsChangedSince(this.#agentsSeen);
          this.#agentsSeen = watermark;
          for (const r of agents) this.#applyAgent(r);
          if (agents.length) this.#ctx.scheduler.pump();
        });
      } while (this.#agentsAgain);
    })().finally(() => this.#readingAgents = undefined);
    return this.#readingAgents;
  }

  #applyAgent(r: AgentRecord): void {
    this.#ctx.registry.applyRemote(r);
    // A registration elsewhere rotated the agent's secret: the old one stops working here too.
    if (r.secret_hash && !this.#ctx.security.agentHasSecret(r.id, r.secret_hash)) {
      this.#ctx.security.rememberAgentSecret(r.id, r.secret_hash);
    }
  }

  /** Publishes the events the others stored since the last one seen here. */
  #readEvents(): Promise<void> {
    if (this.#readingEvents) {
      this.#eventsAgain = true;
      return this.#readingEvents;
    }
    this.#readingEvents = (async () => {
      do {
        this.#eventsAgain = false;
        await this.#apply("events", async () => {
          if (this.#lastEvent === undefined) return;
          const events = await this.#cluster.eventsAfter(this.#lastEvent);
          for (const event of events) {
            this.#lastEvent = Math.max(this.#lastEvent, event.id);
            if (!this.#ctx.events.wrote(event.id)) {
              this.#ctx.bus.publish({ type: "event", event });
            }
          }
          if (events.length === 1000) this.#eventsAgain = true;
        });
      } while (this.#eventsAgain);
    })().finally(() => this.#readingEvents = undefined);
    return this.#readingEvents;
  }

  /**
   * After the feed (re)connected: everything again, as notices may have been missed. Tried
   * again until it succeeds: a database just back or busy may refuse the reads, and what a
   * reload brings (a key revoked meanwhile, where the event feed starts) would otherwise wait
   * for the next reconnection.
   */
  reload(): Promise<void> {
    if (this.#reloading) {
      this.#reloadAgain = true;
      return this.#reloading;
    }
    this.#reloading = (async () => {
      do {
        this.#reloadAgain = false;
        let delay = RELOAD_RETRY_MS;
        for (let attempt = 0; !this.#stopped; attempt++) {
          if (await this.#apply("the fleet", () => this.#reloadOnce(), attempt > 0)) break;
          await abortableSleep(delay, this.#stop.signal);
          delay = Math.min(delay * 2, RELOAD_RETRY_MAX_MS);
        }
      } while (this.#reloadAgain && !this.#stopped);
    })().finally(() => this.#reloading = undefined);
    return this.#reloading;
  }

  async #reloadOnce(): Promise<void> {
    const { ctx, cluster } = { ctx: this.#ctx, cluster: this.#cluster };
    // A sign-in, key, revocation or registration here (or a notice applied) while the snapshot
    // was read may be newer than it: read again rather than undo it.
    let snapshot: StoreSnapshot;
    let ids: string[];
    for (let attempt = 1;; attempt++) {
      const before = ctx.security.changes;
      [snapshot, ids] = await Promise.all([ctx.store.load(), cluster.agentIds()]);
      if (ctx.security.changes === before || attempt === SNAPSHOT_ATTEMPTS) break;
    }
    const stored = new Set(ids);
    for (const a of [...ctx.registry.all()]) {
      if (!stored.has(a.id)) this.message({ t: "agent_removed", id: a.id }, cluster.id);
    }
    ctx.security.applySnapshot(snapshot);
    ctx.scheduler.pins.reload();
    ctx.aliases.reload();
    ctx.placement.rules.reload();
    this.#agentsSeen = 0;
    await this.#readAgents();
    // Events from before this coordinator listened are history, not news: start at the newest;
    // after a reconnect, publish what came meanwhile.
    if (this.#lastEvent === undefined) this.#lastEvent = await cluster.lastEventId();
    else await this.#readEvents();
  }
}

/** Reads of the snapshot while this coordinator's own state keeps changing, before giving up. */
const SNAPSHOT_ATTEMPTS = 5;

/** First pause before a failed reload is tried again; it doubles up to the maximum. */
const RELOAD_RETRY_MS = 250;
const RELOAD_RETRY_MAX_MS = 5000;
