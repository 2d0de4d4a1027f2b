/**
 * The agent registry: every agent's identity and live state, in memory for routing, and
 * persisted through the store. Changes an admin or an agent must see kept (registration, patch,
 * removal) are stored first and applied to memory only when the store took them; heartbeats,
 * status and model lists are written behind, in batches.
 */
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
import type { Bus } from "../telemetry/bus.ts";
import type { EventLog } from "../telemetry/event_log.ts";
import { type AgentRecord, type AgentUpdate, type Store, StoreError } from "../store/mod.ts";
import { hostname } from "node:os";
import { ollamaBaseUrl, sameOllama } from "./address.ts";

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
  /** Requests the other coordinators sharing the fleet have in flight on the agent. */
  remoteInFlight: number;
  /** Of those, per model (normalised name). */
  remoteInFlightByModel: Map<string, number>;
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
  /** Where the registry's events go. */
  events: EventLog;
  /** Agents as stored (from the store's snapshot at start-up). */
  agents?: AgentRecord[];
}

const iso = (ms: number) => new Date(ms).toISOString();

/** The `agent_version` of the coordinator's own registration of an Ollama on its machine. */
export const LOCAL_AGENT_VERSION = "built-in";

/** The machine name the coordinator registers the Ollama on its machine under. */
export function localMachineName(): string {
  return `${hostname()} (local)`;
}

/** Whether an agent is this coordinator's own registration of the Ollama on its machine. */
export function isLocalEntry(agent: Agent | undefined): boolean {
  return agent?.agentVersion === LOCAL_AGENT_VERSION && agent.machineName === localMachineName();
}

/** The status reason of an agent whose Ollama stopped answering (its agent still beats). */
const OLLAMA_DOWN = "Ollama is not answering";

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

/** An agent in memory from its stored record. */
function fromRecord(r: AgentRecord): Agent {
  return {
    id: r.id,
    machineName: r.machine_name,
    displayName: r.display_name,
    labels: r.labels,
    ipAddress: r.ip_address,
    ollamaPort: r.ollama_port,
    ollamaVersion: r.ollama_version,
    agentVersion: r.agent_version,
    os: r.os,
    parallel: r.parallel,
    weight: r.weight,
    drain: r.drain,
    status: r.status,
    statusReason: r.status_reason,
    registeredAt: r.registered_at,
    lastSeen: r.last_seen,
    metrics: r.metrics,
    ...modelFields(r.models, r.loaded_models),
    ollamaUp: true,
    inFlight: 0,
    inFlightByModel: new Map(),
    remoteInFlight: 0,
    remoteInFlightByModel: new Map(),
    baseUrl: ollamaBaseUrl(r.ip_address, r.ollama_port),
  };
}

/** An agent's record as it should be stored. */
function toRecord(a: Agent, secretHash: string | null): AgentRecord {
  return {
    id: a.id,
    machine_name: a.machineName,
    display_name: a.displayName,
    labels: a.labels,
    ip_address: a.ipAddress,
    ollama_port: a.ollamaPort,
    ollama_version: a.ollamaVersion,
    agent_version: a.agentVersion,
    os: a.os,
    parallel: a.parallel,
    weight: a.weight,
    drain: a.drain,
    status: a.status,
    status_reason: a.statusReason,
    registered_at: a.registeredAt,
    last_seen: a.lastSeen,
    metrics: a.metrics,
    models: a.models,
    loaded_models: a.loadedModels,
    secret_hash: secretHash,
  };
}

/**
 * How often heartbeat state (last seen, metrics, status, model lists) is written: a thousand
 * agents beating every few seconds cost one transaction a second, and a restart loses at most
 * that second.
 */
const FLUSH_MS = 1000;

/** The registry of agents. */
export class Registry {
  readonly #store: Store;
  readonly #events: EventLog;
  readonly #agents = new Map<string, Agent>();
  readonly #now: () => number;
  readonly #timeoutMs: number;
  readonly #bus?: Bus;
  /** Fields of each agent changed in memory and not yet written. */
  readonly #dirty = new Map<string, AgentUpdate["fields"]>();
  #list: Agent[] | undefined;
  /** Agents by normalised model name they have installed; filled on demand, reset on change. */
  readonly #byModel = new Map<string, readonly Agent[]>();
  #flushTimer: ReturnType<typeof setTimeout> | undefined;
  #flushing: Promise<void> | undefined;
  #failing = false;
  #writeFailures = 0;
  /** Registrations in progress by machine and address: the same agent registers one at a time. */
  readonly #registering = new Map<string, Promise<unknown>>();

  constructor(store: Store, options: RegistryOptions) {
    this.#store = store;
    this.#events = options.events;
    this.#now = options.now ?? Date.now;
    this.#timeoutMs = options.agentTimeoutMs;
    this.#bus = options.bus;
    for (const r of options.agents ?? []) this.#agents.set(r.id, fromRecord(r));
  }

  /** Marks fields of an agent for the next batched write. */
  #mark(id: string, fields: AgentUpdate["fields"]): void {
    const pending = this.#dirty.get(id);
    if (pending) Object.assign(pending, fields);
    else this.#dirty.set(id, { ...fields });
    this.#scheduleFlush();
  }

  #scheduleFlush(): void {
    if (this.#flushTimer !== undefined) return;
    this.#flushTimer = setTimeout(() => void this.flush(), FLUSH_MS);
    Deno.unrefTimer(this.#flushTimer as unknown as number);
  }

  /**
   * Writes the batched agent state in one transaction. When the store cannot take it, the
   * fields stay marked (newer values win) and are written with a later batch. Never rejects.
   */
  flush(): Promise<void> {
    clearTimeout(this.#flushTimer);
    this.#flushTimer = undefined;
    const run = async () => {
      if (this.#dirty.size === 0) return;
      const batch: AgentUpdate[] = [...this.#dirty].map(([id, fields]) => ({ id, fields }));
      this.#dirty.clear();
      try {
        await this.#store.updateAgents(batch);
        if (this.#failing) console.error("Agent state is written again");
        this.#failing = false;
      } catch (e) {
        this.#writeFailures++;
        if (!this.#failing) {
          console.error(`Cannot write agent state, keeping it to retry: ${(e as Error).message}`);
        }
        this.#failing = true;
        for (const { id, fields } of batch) {
          if (!this.#agents.has(id)) continue;
          // What changed since the batch was taken is newer: it wins.
          this.#dirty.set(id, { ...fields, ...this.#dirty.get(id) });
        }
        this.#scheduleFlush();
      }
    };
    const next = (this.#flushing ?? Promise.resolve()).then(run);
    const settled = next.finally(() => {
      if (this.#flushing === settled) this.#flushing = undefined;
    });
    this.#flushing = settled;
    return settled;
  }

  /** Batched writes of agent state the store refused since start (each kept and retried). */
  get writeFailures(): number {
    return this.#writeFailures;
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
   * before (keeping its id). An agent registering the Ollama this coordinator registered itself
   * (the same port, on this machine) takes that entry over, with its id and history: one Ollama is
   * one agent. Stored first: when the store cannot take it, this rejects with a
   * {@linkcode StoreError} and nothing changed. `secretHash` is the hash of the agent's new
   * heartbeat secret (none for the built-in registration of a local Ollama).
   */
  register(
    req: RegisterRequest,
    options: { secretHash?: string | null } = {},
  ): Promise<{ agent: Agent; created: boolean }> {
    // Two registrations of one agent at once would both find none and insert twice.
    const key = `${req.machine_name}\0${req.ip_address}\0${req.ollama_port}`;
    const before = this.#registering.get(key) ?? Promise.resolve();
    const run = before.catch(() => {}).then(() => this.#register(req, options.secretHash ?? null));
    this.#registering.set(key, run);
    const clear = () => {
      if (this.#registering.get(key) === run) this.#registering.delete(key);
    };
    run.then(clear, clear);
    return run;
  }

  async #register(
    req: RegisterRequest,
    secretHash: string | null,
  ): Promise<{ agent: Agent; created: boolean }> {
    const now = this.#now();
    const existing =
      this.all().find((a) =>
        a.machineName === req.machine_name && a.ipAddress === req.ip_address &&
        a.ollamaPort === req.ollama_port
      ) ?? this.#localEntryServing(req);
    const models = req.models ?? existing?.models ?? [];
    const loaded = req.loaded_models ?? existing?.loadedModels ?? [];
    if (existing) {
      const takenOver = existing.machineName !== req.machine_name ? existing.machineName : null;
      const changes = {
        machineName: req.machine_name,
        ipAddress: req.ip_address,
        ollamaPort: req.ollama_port,
        baseUrl: ollamaBaseUrl(req.ip_address, req.ollama_port),
        ollamaVersion: req.ollama_version,
        agentVersion: req.agent_version ?? existing.agentVersion,
        os: req.os ?? existing.os,
        parallel: req.parallel ?? existing.parallel,
        lastSeen: now,
        ...modelFields(models, loaded),
        ollamaUp: true,
        metrics: req.gpus ? { ...this.#emptyMetrics(existing), gpus: req.gpus } : existing.metrics,
      };
      await this.#store.updateAgents([{
        id: existing.id,
        fields: {
          ...(takenOver !== null
            ? {
              machine_name: req.machine_name,
              ip_address: req.ip_address,
              ollama_port: req.ollama_port,
            }
            : {}),
          ollama_version: changes.ollamaVersion,
          agent_version: changes.agentVersion,
          os: changes.os,
          parallel: changes.parallel,
          last_seen: now,
          metrics: changes.metrics,
          models,
          loaded_models: loaded,
          ...(secretHash !== null ? { secret_hash: secretHash } : {}),
        },
      }]);
      // Registered again while this waited for the store: the agent is gone, register anew.
      if (this.#agents.get(existing.id) !== existing) return this.#register(req, secretHash);
      Object.assign(existing, changes);
      this.#byModel.clear();
      this.recordEvent(
        "registered",
        existing.id,
        takenOver !== null
          ? `Agent "${existing.machineName}" registered the Ollama known as "${takenOver}" and takes it over`
          : `Agent "${existing.machineName}" registered again`,
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
      remoteInFlight: 0,
      remoteInFlightByModel: new Map(),
      baseUrl: ollamaBaseUrl(req.ip_address, req.ollama_port),
    };
    try {
      await this.#store.putAgent(toRecord(agent, secretHash));
    } catch (e) {
      // Another coordinator sharing the store registered the same agent a moment ago and this
      // one has not heard yet: the agent tries again shortly and finds it.
      if (e instanceof StoreError && e.conflict) {
        throw new StoreError(
          `Cannot register agent "${req.machine_name}": another coordinator registered it at the same moment`,
          true,
        );
      }
      throw e;
    }
    this.#agents.set(agent.id, agent);
    this.#list = undefined;
    this.#byModel.clear();
    this.recordEvent("registered", agent.id, `Agent "${agent.machineName}" registered`);
    this.#publish(agent);
    return { agent, created: true };
  }

  /** The built-in entry of this machine's Ollama, when an agent registers that same Ollama. */
  #localEntryServing(req: RegisterRequest): Agent | undefined {
    if (req.agent_version === LOCAL_AGENT_VERSION) return undefined;
    const endpoint = { address: req.ip_address, port: req.ollama_port };
    return this.all().find((a) =>
      isLocalEntry(a) && sameOllama({ address: a.ipAddress, port: a.ollamaPort }, endpoint)
    );
  }

  /**
   * The agent, other than the built-in entry, that serves the Ollama at `endpoint`, if any: the
   * coordinator then does not register that Ollama itself.
   */
  servedBy(endpoint: { address: string; port: number }): Agent | undefined {
    return this.all().find((a) =>
      !isLocalEntry(a) && sameOllama({ address: a.ipAddress, port: a.ollamaPort }, endpoint)
    );
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
    // Older agents do not report their disk: the field stays absent rather than undefined.
    if (req.disk_free !== undefined) agent.metrics.disk_free = req.disk_free;
    if (req.disk_total !== undefined) agent.metrics.disk_total = req.disk_total;
    if (req.ollama_up !== undefined) agent.ollamaUp = req.ollama_up;
    if (req.ollama_version) agent.ollamaVersion = req.ollama_version;
    if (req.parallel) agent.parallel = req.parallel;
    this.#mark(agent.id, {
      last_seen: now,
      metrics: agent.metrics,
      ollama_version: agent.ollamaVersion,
      parallel: agent.parallel,
    });
    if (req.models || req.loaded_models) {
      this.setModels(agent, req.models ?? agent.models, req.loaded_models ?? agent.loadedModels);
    }
    this.#refresh(agent);
    this.#publish(agent);
    return agent;
  }

  /** Replaces what an agent has installed and loaded; written behind, only when it changed. */
  setModels(agent: Agent, models: InstalledModel[], loaded: LoadedModel[]): void {
    if (modelsJson(models, loaded) === agent.modelsJson) return;
    Object.assign(agent, modelFields(models, loaded));
    this.#byModel.clear();
    this.#mark(agent.id, { models, loaded_models: loaded });
  }

  /**
   * Applies an admin's change (display name, labels, weight, drain). Stored first: rejects with
   * a {@linkcode StoreError} and changes nothing when the store cannot take it. Resolves to
   * undefined for an unknown agent.
   */
  async patch(id: string, patch: AgentPatch): Promise<Agent | undefined> {
    const agent = this.#agents.get(id);
    if (!agent) return undefined;
    const next = {
      displayName: patch.display_name !== undefined
        ? patch.display_name || null
        : agent.displayName,
      labels: patch.labels !== undefined ? [...new Set(patch.labels)] : agent.labels,
      weight: patch.weight ?? agent.weight,
      drain: patch.drain ?? agent.drain,
    };
    await this.#store.updateAgents([{
      id,
      fields: {
        display_name: next.displayName,
        labels: next.labels,
        weight: next.weight,
        drain: next.drain,
      },
    }]);
    if (this.#agents.get(id) !== agent) return undefined; // removed meanwhile
    const drainChanged = next.drain !== agent.drain;
    Object.assign(agent, next);
    if (drainChanged) {
      this.recordEvent(
        next.drain ? "drain" : "enable",
        id,
        `Agent "${this.label(agent)}" ${next.drain ? "is draining" : "is enabled"}`,
      );
    }
    this.#refresh(agent);
    this.#publish(agent);
    return agent;
  }

  /**
   * Removes an agent. Stored first: rejects with a {@linkcode StoreError} when the store cannot
   * take it. Resolves to false when there was none.
   */
  async remove(id: string): Promise<boolean> {
    const agent = this.#agents.get(id);
    if (!agent) return false;
    await this.#store.deleteAgent(id);
    if (this.#agents.get(id) !== agent) return false;
    this.#agents.delete(id);
    this.#dirty.delete(id);
    this.#list = undefined;
    this.#byModel.clear();
    this.recordEvent("removed", id, `Agent "${this.label(agent)}" removed`);
    this.#bus?.publish({ type: "agent_removed", id });
    return true;
  }

  /**
   * Applies an agent as another coordinator stored it: nothing is written and no event recorded
   * (the coordinator that made the change did both). What this coordinator saw more recently
   * (a heartbeat that came here) is kept; admin settings always follow the stored record.
   */
  applyRemote(r: AgentRecord): Agent {
    const existing = this.#agents.get(r.id);
    if (!existing) {
      const agent = fromRecord(r);
      agent.ollamaUp = r.status_reason !== OLLAMA_DOWN;
      this.#agents.set(agent.id, agent);
      this.#list = undefined;
      this.#byModel.clear();
      this.#publish(agent);
      return agent;
    }
    Object.assign(existing, {
      machineName: r.machine_name,
      displayName: r.display_name,
      labels: r.labels,
      weight: r.weight,
      drain: r.drain,
      registeredAt: r.registered_at,
    });
    if (existing.ipAddress !== r.ip_address || existing.ollamaPort !== r.ollama_port) {
      existing.ipAddress = r.ip_address;
      existing.ollamaPort = r.ollama_port;
      existing.baseUrl = ollamaBaseUrl(r.ip_address, r.ollama_port);
    }
    if (r.last_seen >= existing.lastSeen) {
      // The stored record is at least as fresh as what this coordinator saw itself.
      Object.assign(existing, {
        ollamaVersion: r.ollama_version,
        agentVersion: r.agent_version,
        os: r.os,
        parallel: r.parallel,
        lastSeen: r.last_seen,
        metrics: r.metrics,
        status: r.status,
        statusReason: r.status_reason,
        ollamaUp: r.status_reason !== OLLAMA_DOWN,
      });
      if (modelsJson(r.models, r.loaded_models) !== existing.modelsJson) {
        Object.assign(existing, modelFields(r.models, r.loaded_models));
        this.#byModel.clear();
      }
    } else if (existing.status !== "offline") {
      // A fresher heartbeat came here: only an admin's drain can change the status.
      existing.status = existing.drain ? "draining" : "online";
    }
    this.#publish(existing);
    return existing;
  }

  /** Forgets an agent another coordinator removed; false when it was not known here. */
  removeRemote(id: string): boolean {
    if (!this.#agents.delete(id)) return false;
    this.#dirty.delete(id);
    this.#list = undefined;
    this.#byModel.clear();
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

  /** Recomputes an agent's status; records an event and marks it for writing when it changed. */
  #refresh(agent: Agent): boolean {
    const silentMs = this.#now() - agent.lastSeen;
    let status: AgentStatus;
    let reason: string | null = null;
    if (silentMs > this.#timeoutMs) {
      status = "offline";
      reason = `No heartbeat for ${Math.round(silentMs / 1000)} s`;
    } else if (!agent.ollamaUp) {
      status = "offline";
      reason = OLLAMA_DOWN;
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
    this.#mark(agent.id, { status, status_reason: reason });
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

  /** Records a fleet event (stored and published a moment later). */
  recordEvent(kind: string, agentId: string | null, message: string): void {
    this.#events.record(kind, agentId, message);
  }

  /** The most recent events, newest first. */
  events(options: { limit?: number; agentId?: string; beforeId?: number } = {}) {
    return this.#events.query(options);
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
