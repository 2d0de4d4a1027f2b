/**
 * The agent registry: every agent's identity (persisted in SQLite) and live state (in memory),
 * its status (online, offline, draining) and the events of its life.
 */
import type { DatabaseSync, StatementSync } from "node:sqlite";
import {
  type AgentMetrics,
  type AgentPatch,
  type AgentStatus,
  type AgentView,
  type HealthRequest,
  type InstalledModel,
  type LoadedModel,
  normalizeModelName,
  type RegisterRequest,
} from "@oc/shared";
import type { Bus, FleetEvent } from "../telemetry/bus.ts";
import { ollamaBaseUrl } from "./address.ts";

/** An agent as the coordinator knows it right now. */
export interface Agent {
  id: string;
  machineName: string;
  displayName: string | null;
  labels: string[];
  ipAddress: string;
  ollamaPort: number;
  ollamaVersion: string;
  agentVersion: string | null;
  os: string | null;
  parallel: number;
  weight: number;
  drain: boolean;
  status: AgentStatus;
  statusReason: string | null;
  registeredAt: number;
  lastSeen: number;
  metrics: AgentMetrics | null;
  models: InstalledModel[];
  loadedModels: LoadedModel[];
  /** Normalised names of installed models, for routing. */
  modelKeys: Set<string>;
  /** Normalised names of loaded models, for routing. */
  loadedKeys: Set<string>;
  /** Size in bytes of each installed model by normalised name, for cold-start choices. */
  modelSizes: Map<string, number>;
  /** The model lists as last stored, to skip writes when a heartbeat repeats them. */
  modelsJson: string;
  /** Whether the agent's Ollama answered its last probe (or heartbeat). */
  ollamaUp: boolean;
  /** Requests this coordinator has in flight on the agent. */
  inFlight: number;
  /**
   * Of those, per model (normalised name): Ollama's parallel slots (OLLAMA_NUM_PARALLEL) are per
   * loaded model.
   */
  inFlightByModel: Map<string, number>;
  /** Where its Ollama listens: `http://host:port`. */
  baseUrl: string;
}

/** Options for {@linkcode Registry}. */
export interface RegistryOptions {
  /** Milliseconds without a heartbeat before an agent is offline. */
  agentTimeoutMs: number;
  /** Clock, injectable for tests. */
  now?: () => number;
  bus?: Bus;
}

type Row = Record<string, unknown>;

const iso = (ms: number) => new Date(ms).toISOString();

function keysOf(models: { name: string }[]): Set<string> {
  return new Set(models.map((m) => normalizeModelName(m.name)));
}

function sizesOf(models: InstalledModel[]): Map<string, number> {
  return new Map(models.map((m) => [normalizeModelName(m.name), m.size ?? 0]));
}

function modelsJson(models: InstalledModel[], loaded: LoadedModel[]): string {
  return JSON.stringify([models, loaded]);
}

/** An agent's model lists with the indexes routing reads from them. */
function modelFields(models: InstalledModel[], loaded: LoadedModel[]) {
  return {
    models,
    loadedModels: loaded,
    modelKeys: keysOf(models),
    loadedKeys: keysOf(loaded),
    modelSizes: sizesOf(models),
    modelsJson: modelsJson(models, loaded),
  };
}

const HEARTBEAT_FLUSH_MS = 2000;

/** The registry of agents. */
export class Registry {
  readonly #db: DatabaseSync;
  readonly #agents = new Map<string, Agent>();
  readonly #now: () => number;
  readonly #timeoutMs: number;
  readonly #bus?: Bus;
  readonly #stmt: Record<string, StatementSync>;
  readonly #dirty = new Set<string>();
  #list: Agent[] | undefined;
  /** Agents by normalised model name they have installed; filled on demand, reset on change. */
  readonly #byModel = new Map<string, readonly Agent[]>();
  #flushTimer: ReturnType<typeof setTimeout> | undefined;

  constructor(db: DatabaseSync, options: RegistryOptions) {
    this.#db = db;
    this.#now = options.now ?? Date.now;
    this.#timeoutMs = options.agentTimeoutMs;
    this.#bus = options.bus;
    this.#stmt = {
      insert: db.prepare(`INSERT INTO agents (id, machine_name, ip_address, ollama_port,
        ollama_version, agent_version, os, parallel, status, registered_at, last_seen, metrics,
        models, loaded_models) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`),
      reregister: db.prepare(`UPDATE agents SET ollama_version = ?, agent_version = ?, os = ?,
        parallel = ?, last_seen = ?, models = ?, loaded_models = ? WHERE id = ?`),
      heartbeat: db.prepare("UPDATE agents SET last_seen = ?, metrics = ? WHERE id = ?"),
      models: db.prepare("UPDATE agents SET models = ?, loaded_models = ? WHERE id = ?"),
      status: db.prepare("UPDATE agents SET status = ?, status_reason = ? WHERE id = ?"),
      patch: db.prepare(
        "UPDATE agents SET display_name = ?, labels = ?, drain = ?, weight = ? WHERE id = ?",
      ),
      delete: db.prepare("DELETE FROM agents WHERE id = ?"),
      event: db.prepare(
        "INSERT INTO events (at, kind, agent_id, message) VALUES (?, ?, ?, ?) RETURNING id",
      ),
    };
    this.#load();
  }

  #load(): void {
    for (const r of this.#db.prepare("SELECT * FROM agents").all() as Row[]) {
      const models = JSON.parse(String(r.models)) as InstalledModel[];
      const loaded = JSON.parse(String(r.loaded_models)) as LoadedModel[];
      const agent: Agent = {
        id: String(r.id),
        machineName: String(r.machine_name),
        displayName: r.display_name == null ? null : String(r.display_name),
        labels: JSON.parse(String(r.labels)),
        ipAddress: String(r.ip_address),
        ollamaPort: Number(r.ollama_port),
        ollamaVersion: String(r.ollama_version),
        agentVersion: r.agent_version == null ? null : String(r.agent_version),
        os: r.os == null ? null : String(r.os),
        parallel: Number(r.parallel),
        weight: Number(r.weight ?? 1),
        drain: Boolean(r.drain),
        status: r.status as AgentStatus,
        statusReason: r.status_reason == null ? null : String(r.status_reason),
        registeredAt: Date.parse(String(r.registered_at)),
        lastSeen: Date.parse(String(r.last_seen)),
        metrics: r.metrics == null ? null : JSON.parse(String(r.metrics)),
        ...modelFields(models, loaded),
        ollamaUp: true,
        inFlight: 0,
        inFlightByModel: new Map(),
        baseUrl: ollamaBaseUrl(String(r.ip_address), Number(r.ollama_port)),
      };
      this.#agents.set(agent.id, agent);
    }
  }

  /** Writes the batched heartbeat state (last_seen, metrics) in one transaction. */
  flush(): void {
    clearTimeout(this.#flushTimer);
    this.#flushTimer = undefined;
    if (this.#dirty.size === 0) return;
    const ids = [...this.#dirty];
    this.#dirty.clear();
    try {
      this.#db.exec("BEGIN");
      try {
        for (const id of ids) {
          const a = this.#agents.get(id);
          if (a) this.#stmt.heartbeat.run(iso(a.lastSeen), JSON.stringify(a.metrics), id);
        }
        this.#db.exec("COMMIT");
      } catch (e) {
        this.#db.exec("ROLLBACK");
        throw e;
      }
    } catch (e) {
      console.error("Cannot write heartbeats:", (e as Error).message);
    }
  }

  /**
   * Every agent, in registration order. The array is shared and rebuilt only when an agent is
   * added or removed (the scheduler reads it for every request): do not modify it.
   */
  all(): readonly Agent[] {
    return this.#list ??= [...this.#agents.values()];
  }

  /**
   * The agents that have a model installed (normalised name), in registration order. Shared like
   * {@linkcode all} and rebuilt only when an agent or its model list changes: do not modify it.
   */
  withModel(key: string): readonly Agent[] {
    let list = this.#byModel.get(key);
    if (list === undefined) {
      list = this.all().filter((a) => a.modelKeys.has(key));
      // Any name can be asked for: remember only the models some agent has.
      if (list.length > 0) this.#byModel.set(key, list);
    }
    return list;
  }

  /** One agent by id. */
  get(id: string): Agent | undefined {
    return this.#agents.get(id);
  }

  /** Finds an agent by id, display name or machine name (for the `X-Coordinator-Agent` header). */
  find(ref: string): Agent | undefined {
    const byId = this.#agents.get(ref);
    if (byId) return byId;
    for (const a of this.#agents.values()) {
      if (a.displayName === ref || a.machineName === ref) return a;
    }
    return undefined;
  }

  /**
   * Registers an agent, or updates it when the same machine and Ollama address registered
   * before (keeping its id).
   */
  register(req: RegisterRequest): { agent: Agent; created: boolean } {
    const now = this.#now();
    const existing = this.all().find((a) =>
      a.machineName === req.machine_name && a.ipAddress === req.ip_address &&
      a.ollamaPort === req.ollama_port
    );
    const models = req.models ?? existing?.models ?? [];
    const loaded = req.loaded_models ?? existing?.loadedModels ?? [];
    if (existing) {
      Object.assign(existing, {
        ollamaVersion: req.ollama_version,
        agentVersion: req.agent_version ?? existing.agentVersion,
        os: req.os ?? existing.os,
        parallel: req.parallel ?? existing.parallel,
        lastSeen: now,
        ...modelFields(models, loaded),
        ollamaUp: true,
      });
      this.#byModel.clear();
      if (req.gpus) existing.metrics = { ...this.#emptyMetrics(existing), gpus: req.gpus };
      this.#stmt.reregister.run(
        existing.ollamaVersion,
        existing.agentVersion,
        existing.os,
        existing.parallel,
        iso(now),
        JSON.stringify(models),
        JSON.stringify(loaded),
        existing.id,
      );
      this.recordEvent(
        "registered",
        existing.id,
        `Agent "${existing.machineName}" registered again`,
      );
      this.#refresh(existing);
      this.#publish(existing);
      return { agent: existing, created: false };
    }
    const agent: Agent = {
      id: crypto.randomUUID(),
      machineName: req.machine_name,
      displayName: null,
      labels: [],
      ipAddress: req.ip_address,
      ollamaPort: req.ollama_port,
      ollamaVersion: req.ollama_version,
      agentVersion: req.agent_version ?? null,
      os: req.os ?? null,
      parallel: req.parallel ?? 1,
      weight: 1,
      drain: false,
      status: "online",
      statusReason: null,
      registeredAt: now,
      lastSeen: now,
      metrics: req.gpus
        ? { cpu_usage: 0, memory_usage: 0, active_requests: 0, gpus: req.gpus }
        : null,
      ...modelFields(models, loaded),
      ollamaUp: true,
      inFlight: 0,
      inFlightByModel: new Map(),
      baseUrl: ollamaBaseUrl(req.ip_address, req.ollama_port),
    };
    this.#stmt.insert.run(
      agent.id,
      agent.machineName,
      agent.ipAddress,
      agent.ollamaPort,
      agent.ollamaVersion,
      agent.agentVersion,
      agent.os,
      agent.parallel,
      agent.status,
      iso(now),
      iso(now),
      agent.metrics ? JSON.stringify(agent.metrics) : null,
      JSON.stringify(models),
      JSON.stringify(loaded),
    );
    this.#agents.set(agent.id, agent);
    this.#list = undefined;
    this.#byModel.clear();
    this.recordEvent("registered", agent.id, `Agent "${agent.machineName}" registered`);
    this.#publish(agent);
    return { agent, created: true };
  }

  #emptyMetrics(a: Agent): AgentMetrics {
    return a.metrics ?? { cpu_usage: 0, memory_usage: 0, active_requests: 0, gpus: [] };
  }

  /** Records a heartbeat. Returns undefined for an unknown agent (it must register again). */
  heartbeat(req: HealthRequest): Agent | undefined {
    const agent = this.#agents.get(req.agent_id);
    if (!agent) return undefined;
    const now = this.#now();
    agent.lastSeen = now;
    agent.metrics = {
      cpu_usage: req.cpu_usage,
      memory_usage: req.memory_usage,
      active_requests: req.active_requests,
      memory_used: req.memory_used,
      memory_total: req.memory_total,
      gpus: req.gpus ?? agent.metrics?.gpus ?? [],
    };
    if (req.ollama_up !== undefined) agent.ollamaUp = req.ollama_up;
    if (req.ollama_version) agent.ollamaVersion = req.ollama_version;
    if (req.parallel) agent.parallel = req.parallel;
    // last_seen and metrics are written in batches: a thousand agents beating every few seconds
    // must not cost a transaction each. A restart loses at most one batch of them.
    this.#dirty.add(agent.id);
    if (this.#flushTimer === undefined) {
      this.#flushTimer = setTimeout(() => this.flush(), HEARTBEAT_FLUSH_MS);
      Deno.unrefTimer(this.#flushTimer as unknown as number);
    }
    if (req.models || req.loaded_models) {
      this.setModels(agent, req.models ?? agent.models, req.loaded_models ?? agent.loadedModels);
    }
    this.#refresh(agent);
    this.#publish(agent);
    return agent;
  }

  /** Replaces what an agent has installed and loaded; persisted only when it changed. */
  setModels(agent: Agent, models: InstalledModel[], loaded: LoadedModel[]): void {
    if (modelsJson(models, loaded) === agent.modelsJson) return;
    Object.assign(agent, modelFields(models, loaded));
    this.#byModel.clear();
    this.#stmt.models.run(JSON.stringify(models), JSON.stringify(loaded), agent.id);
  }

  /** Applies an admin's change (display name, labels, weight, drain). */
  patch(id: string, patch: AgentPatch): Agent | undefined {
    const agent = this.#agents.get(id);
    if (!agent) return undefined;
    if (patch.display_name !== undefined) agent.displayName = patch.display_name || null;
    if (patch.labels !== undefined) agent.labels = [...new Set(patch.labels)];
    if (patch.weight !== undefined) agent.weight = patch.weight;
    if (patch.drain !== undefined && patch.drain !== agent.drain) {
      agent.drain = patch.drain;
      this.recordEvent(
        patch.drain ? "drain" : "enable",
        id,
        `Agent "${this.label(agent)}" ${patch.drain ? "is draining" : "is enabled"}`,
      );
    }
    this.#stmt.patch.run(
      agent.displayName,
      JSON.stringify(agent.labels),
      agent.drain ? 1 : 0,
      agent.weight,
      id,
    );
    this.#refresh(agent);
    this.#publish(agent);
    return agent;
  }

  /** Removes an agent. Returns false when there was none. */
  remove(id: string): boolean {
    const agent = this.#agents.get(id);
    if (!agent) return false;
    this.#agents.delete(id);
    this.#list = undefined;
    this.#byModel.clear();
    this.#stmt.delete.run(id);
    this.recordEvent("removed", id, `Agent "${this.label(agent)}" removed`);
    this.#bus?.publish({ type: "agent_removed", id });
    return true;
  }

  /** Records the result of probing an agent's Ollama. */
  setOllamaUp(agent: Agent, up: boolean): void {
    if (agent.ollamaUp === up) return;
    agent.ollamaUp = up;
    this.#refresh(agent);
    this.#publish(agent);
  }

  /** Marks agents silent for longer than the timeout offline. Returns those that changed. */
  sweep(): Agent[] {
    const changed: Agent[] = [];
    for (const agent of this.#agents.values()) {
      if (this.#refresh(agent)) {
        changed.push(agent);
        this.#publish(agent);
      }
    }
    return changed;
  }

  /** Recomputes an agent's status; records an event and persists when it changed. */
  #refresh(agent: Agent): boolean {
    const silentMs = this.#now() - agent.lastSeen;
    let status: AgentStatus;
    let reason: string | null = null;
    if (silentMs > this.#timeoutMs) {
      status = "offline";
      reason = `No heartbeat for ${Math.round(silentMs / 1000)} s`;
    } else if (!agent.ollamaUp) {
      status = "offline";
      reason = "Ollama is not answering";
    } else if (agent.drain) {
      status = "draining";
    } else {
      status = "online";
    }
    if (status === agent.status && (status !== "offline" || reason === agent.statusReason)) {
      return false;
    }
    const was = agent.status;
    agent.status = status;
    agent.statusReason = reason;
    this.#stmt.status.run(status, reason, agent.id);
    if (was !== status) {
      this.recordEvent(
        "status",
        agent.id,
        `Agent "${this.label(agent)}" is ${status}${reason ? `: ${reason}` : ""} (was ${was})`,
      );
    }
    return true;
  }

  /** The name to show for an agent. */
  label(agent: Agent): string {
    return agent.displayName ?? agent.machineName;
  }

  /** Stores an event and publishes it. */
  recordEvent(kind: string, agentId: string | null, message: string): FleetEvent {
    const at = iso(this.#now());
    const row = this.#stmt.event.get(at, kind, agentId, message) as { id: number };
    const event: FleetEvent = { id: Number(row.id), at, kind, agent_id: agentId, message };
    this.#bus?.publish({ type: "event", event });
    return event;
  }

  /** The most recent events, newest first. */
  events(options: { limit?: number; agentId?: string; beforeId?: number } = {}): FleetEvent[] {
    const limit = Math.min(Math.max(options.limit ?? 100, 1), 1000);
    const rows = this.#db.prepare(
      `SELECT id, at, kind, agent_id, message FROM events
       WHERE (?1 IS NULL OR agent_id = ?1) AND (?2 IS NULL OR id < ?2)
       ORDER BY id DESC LIMIT ?3`,
    ).all(options.agentId ?? null, options.beforeId ?? null, limit) as Row[];
    return rows.map((r) => ({
      id: Number(r.id),
      at: String(r.at),
      kind: String(r.kind),
      agent_id: r.agent_id == null ? null : String(r.agent_id),
      message: String(r.message),
    }));
  }

  /** The API view of an agent. */
  view(agent: Agent): AgentView {
    return {
      id: agent.id,
      machine_name: agent.machineName,
      display_name: agent.displayName,
      labels: agent.labels,
      ip_address: agent.ipAddress,
      ollama_version: agent.ollamaVersion,
      ollama_port: agent.ollamaPort,
      agent_version: agent.agentVersion,
      status: agent.status,
      status_reason: agent.statusReason,
      weight: agent.weight,
      parallel: agent.parallel,
      in_flight: agent.inFlight,
      registered_at: iso(agent.registeredAt),
      last_seen: iso(agent.lastSeen),
      metrics: agent.metrics,
      models: agent.models,
      loaded_models: agent.loadedModels,
    };
  }

  #publish(agent: Agent): void {
    if (this.#bus?.wants("agent")) this.#bus.publish({ type: "agent", id: agent.id });
  }

  /** Publishes an agent's current state (after in-flight changes, for the live dashboard). */
  touch(agent: Agent): void {
    this.#publish(agent);
  }
}
