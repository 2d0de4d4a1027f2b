/**
 * The health monitor: on every tick, agents silent for longer than the timeout go offline, and
 * each agent that still heartbeats has its Ollama probed (`HEAD /`), so a dead Ollama behind a
 * live agent is noticed.
 */
import type { Agent, Registry } from "./mod.ts";

/** Options for {@linkcode checkFleet}. */
export interface MonitorOptions {
  probeTimeoutMs: number;
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
  const live = registry.all().filter((a) =>
    a.status !== "offline" || a.statusReason === "Ollama is not answering"
  );
  const results = await Promise.all(live.map((a) => probe(a, options.probeTimeoutMs)));
  live.forEach((a, i) => {
    if (registry.get(a.id)) registry.setOllamaUp(a, results[i]);
  });
}

/** Runs {@linkcode checkFleet} every `intervalMs` until the returned function is called. */
export function startMonitor(
  registry: Registry,
  options: MonitorOptions & { intervalMs: number; afterTick?: () => void },
): () => void {
  let running = false;
  const timer = setInterval(async () => {
    if (running) return; // a slow probe round never piles up
    running = true;
    try {
      await checkFleet(registry, options);
      options.afterTick?.();
    } catch (e) {
      console.error("Health check failed:", e);
    } finally {
      running = false;
    }
  }, options.intervalMs);
  return () => clearInterval(timer);
}
