/**
 * The zero-setup default: when an Ollama already runs on the coordinator's machine, register it
 * and heartbeat for it, so a first start with no agents still serves requests. An agent started
 * beside that Ollama later takes the entry over (see {@linkcode Registry.register}); the built-in
 * heartbeats then stop, and later starts leave that Ollama to its agent.
 */
import type { InstalledModel, LoadedModel } from "@oc/shared";
import { HOP_HEADER, isSelf } from "../http/loop.ts";
import { isLocalEntry, LOCAL_AGENT_VERSION, localMachineName, type Registry } from "./registry.ts";

interface Snapshot {
  version: string;
  models: InstalledModel[];
  loaded: LoadedModel[];
}

async function snapshot(base: URL, instanceId: string): Promise<Snapshot | null> {
  const get = async (path: string) => {
    const res = await fetch(new URL(path, base), {
      headers: { [HOP_HEADER]: instanceId },
      signal: AbortSignal.timeout(3000),
    });
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    return await res.json();
  };
  try {
    const [version, tags, ps] = await Promise.all([
      get("/api/version"),
      get("/api/tags"),
      get("/api/ps"),
    ]);
    return {
      version: String(version.version ?? "unknown"),
      models: tags.models ?? [],
      loaded: ps.models ?? [],
    };
  } catch {
    return null;
  }
}

/** What the look for a local Ollama found. */
export interface LocalOllama {
  /**
   * `registered` (with built-in heartbeats), `none` (nothing answered there as an Ollama),
   * `self` (the URL leads back to this coordinator), `agent` (an agent already serves that
   * Ollama) or `error` (the store refused the registration).
   */
  found: "registered" | "none" | "self" | "agent" | "error";
  /** Where it looked (LOCAL_OLLAMA_URL). */
  url: string;
  /** The name of the agent that serves it, when `found` is `agent`. */
  agent?: string;
  /** Ends the built-in heartbeats (there are some only when `found` is `registered`). */
  stop(): void;
  /** Settles when the built-in heartbeats have ended: stopped, or the entry taken over. */
  done: Promise<void>;
}

/**
 * Checks for a local Ollama once and says what it found; when it registered one, `stop` ends its
 * heartbeats. The URL is not registered when it leads to this coordinator itself
 * (`COORDINATOR_PORT=11434`, Ollama's port), nor when an agent already serves it.
 */
export async function startLocalOllama(
  registry: Registry,
  options: { url: string; intervalMs: number; instanceId: string },
): Promise<LocalOllama> {
  const url = options.url;
  const nothing = () => {};
  const done = Promise.resolve();
  const base = new URL(url);
  if (await isSelf(base.origin, options.instanceId, { timeoutMs: 3000 })) {
    console.warn(
      `Not registering the local Ollama: ${url} is this coordinator itself ` +
        "(set LOCAL_OLLAMA_URL to where Ollama listens, or run the coordinator on another port)",
    );
    return { found: "self", url, stop: nothing, done };
  }
  const first = await snapshot(base, options.instanceId);
  if (!first) return { found: "none", url, stop: nothing, done };
  const endpoint = {
    address: base.hostname.replace(/^\[(.*)\]$/, "$1"),
    port: Number(base.port || 11434),
  };
  const agent = registry.servedBy(endpoint);
  if (agent) {
    const name = registry.label(agent);
    console.log(`The local Ollama at ${url} is served by agent "${name}": not registering it`);
    return { found: "agent", url, agent: name, stop: nothing, done };
  }
  let registered;
  try {
    registered = await registry.register({
      machine_name: localMachineName(),
      ip_address: endpoint.address,
      ollama_port: endpoint.port,
      ollama_version: first.version,
      agent_version: LOCAL_AGENT_VERSION,
      os: Deno.build.os,
      parallel: Number(Deno.env.get("OLLAMA_NUM_PARALLEL") ?? 1) || 1,
      models: first.models,
      loaded_models: first.loaded,
    });
  } catch (e) {
    console.error(`Cannot register the local Ollama at ${url}:`, (e as Error).message);
    return { found: "error", url, stop: nothing, done };
  }
  const { id } = registered.agent;
  console.log(`Registered the local Ollama at ${url}`);
  const ended = Promise.withResolvers<void>();
  const end = () => {
    clearInterval(timer);
    ended.resolve();
  };
  const timer = setInterval(async () => {
    // An agent took the entry over (or an admin removed it): its heartbeats are the agent's now.
    if (!isLocalEntry(registry.get(id))) return end();
    const s = await snapshot(base, options.instanceId);
    if (!s || !isLocalEntry(registry.get(id))) return; // silence: the monitor marks it offline
    const mem = Deno.systemMemoryInfo();
    const used = mem.total - mem.available;
    registry.heartbeat({
      agent_id: id,
      cpu_usage: Math.min(100, (Deno.loadavg()[0] / navigator.hardwareConcurrency) * 100),
      memory_usage: (used / mem.total) * 100,
      memory_used: used,
      memory_total: mem.total,
      active_requests: 0,
      ollama_up: true,
      ollama_version: s.version,
      models: s.models,
      loaded_models: s.loaded,
    });
  }, options.intervalMs);
  return { found: "registered", url, stop: end, done: ended.promise };
}
