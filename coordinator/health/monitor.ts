/**
 * The health monitor: on every tick, agents silent for longer than the timeout go offline, and
 * each agent that still heartbeats has its Ollama probed (`HEAD /`), so a dead Ollama behind a
 * live agent is noticed.
 */
import type { Agent, Registry } from "../fleet/registry.ts";

/** Options for {@linkcode checkFleet}. */
export interface MonitorOptions {
  probeTimeoutMs: number;
  /**
   * Least time between two probes of a healthy agent (its heartbeats already say whether its
   * Ollama answers locally). Agents whose Ollama is not answering are probed on every tick.
   */
  probeIntervalMs?: number;
  /** When each agent was last probed; kept by {@linkcode startMonitor} between ticks. */
  lastProbe?: Map<string, number>;
  now?: () => number;
  /** Replaceable for tests. */
  probe?: (agent: Agent, timeoutMs: number) => Promise<boolean>;
}

/** Asks an agent's Ollama whether it is running. */
export async function probeOllama(agent: Agent, timeoutMs: number): Promise<boolean> {
  try {
    const res = await fetch(agent.baseUrl + "/", {
      method: "HEAD",
      signal: AbortSignal.timeout(timeoutMs),
    });
    await res.body?.cancel();
    return res.ok;
  } catch {
    return false;
  }
}

/** One monitor tick: sweep silent agents, then probe the rest. */
export async function checkFleet(registry: Registry, options: MonitorOptions): Promise<void> {
  registry.sweep();
  const probe = options.probe ?? probeOllama;
  const now = (options.now ?? Date.now)();
  const last = options.lastProbe;
  const every = options.probeIntervalMs ?? 0;
  const live = registry.all().filter((a) => {
    if (a.status === "offline" && a.statusReason !== "Ollama is not answering") return false;
    if (!a.ollamaUp || !last) return true;
    return now - (last.get(a.id) ?? -Infinity) >= every;
  });
  for (const a of live) last?.set(a.id, now);
  const results = await Promise.all(live.map((a) => probe(a, options.probeTimeoutMs)));
  live.forEach((a, i) => {
    if (registry.get(a.id)) registry.setOllamaUp(a, results[i]);
  });
}

/**
 * Runs {@linkcode checkFleet} every `intervalMs`. The returned function stops it and resolves once
 * a round in progress has finished, so the database can be closed safely afterwards.
 */
export function startMonitor(
  registry: Registry,
  options: MonitorOptions & { intervalMs: number; afterTick?: () => void },
): () => Promise<void> {
  let running: Promise<void> | null = null;
  let stopped = false;
  const lastProbe = new Map<string, number>();
  const timer = setInterval(() => {
    if (running || stopped) return; // a slow probe round never piles up
    running = (async () => {
      try {
        await checkFleet(registry, { ...options, lastProbe });
        for (const id of lastProbe.keys()) if (!registry.get(id)) lastProbe.delete(id);
        if (!stopped) options.afterTick?.();
      } catch (e) {
        console.error("Health check failed:", e);
      } finally {
        running = null;
      }
    })();
  }, options.intervalMs);
  return async () => {
    stopped = true;
    clearInterval(timer);
    await running;
  };
}
