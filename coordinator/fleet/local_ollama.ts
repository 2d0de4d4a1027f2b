/**
 * The zero-setup default: when an Ollama already runs on the coordinator's machine, register it
 * and heartbeat for it, so a first start with no agents still serves requests.
 */
import { hostname } from "node:os";
import type { InstalledModel, LoadedModel } from "@oc/shared";
import { HOP_HEADER, isSelf } from "../http/loop.ts";
import type { Registry } from "./registry.ts";

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

/**
 * Checks for a local Ollama once; returns a stop function when one was found. The URL is not
 * registered when it leads to this coordinator itself (`COORDINATOR_PORT=11434`, Ollama's port).
 */
export async function startLocalOllama(
  registry: Registry,
  options: { url: string; intervalMs: number; instanceId: string },
): Promise<(() => void) | null> {
  const base = new URL(options.url);
  if (await isSelf(base.origin, options.instanceId, { timeoutMs: 3000 })) {
    console.warn(
      `Not registering the local Ollama: ${options.url} is this coordinator itself ` +
        "(set LOCAL_OLLAMA_URL to where Ollama listens, or run the coordinator on another port)",
    );
    return null;
  }
  const first = await snapshot(base, options.instanceId);
  if (!first) return null;
  let registered;
  try {
    registered = await registry.register({
      machine_name: `${hostname()} (local)`,
      ip_address: base.hostname.replace(/^\[(.*)\]$/, "$1"),
      ollama_port: Number(base.port || 11434),
      ollama_version: first.version,
      agent_version: "built-in",
      os: Deno.build.os,
      parallel: Number(Deno.env.get("OLLAMA_NUM_PARALLEL") ?? 1) || 1,
      models: first.models,
      loaded_models: first.loaded,
    });
  } catch (e) {
    console.error(`Cannot register the local Ollama at ${options.url}:`, (e as Error).message);
    return null;
  }
  const { agent } = registered;
  console.log(`Registered the local Ollama at ${options.url}`);
  const timer = setInterval(async () => {
    const s = await snapshot(base, options.instanceId);
    if (!s || !registry.get(agent.id)) return; // silence: the monitor marks it offline
    const mem = Deno.systemMemoryInfo();
    const used = mem.total - mem.available;
    registry.heartbeat({
      agent_id: agent.id,
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
  return () => clearInterval(timer);
}
