/**
 * The harness of the abuse suite: while an attack runs against a real coordinator process, a
 * probe asks `/api/version` every 50 ms and a registered agent heartbeats every 250 ms. What they
 * saw says whether the coordinator stayed up and responsive for everyone else.
 */
import { TEST_AGENT_TOKEN } from "../config.ts";

/** What the probe and the heartbeating agent saw during an attack. */
export interface Responsiveness {
  probes: number;
  /** Probes that failed or took longer than 2 s. */
  probeFailures: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  heartbeats: number;
  heartbeatFailures: number;
}

function quantile(sorted: number[], q: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

/**
 * Starts probing `url` and heartbeating as a new agent named `name`; `stop()` ends both and
 * returns what they saw. The agent advertises a port nobody serves: it exists to be kept online.
 */
export async function watchResponsiveness(
  url: string,
  name = "watcher",
): Promise<{ agentId: string; stop(): Promise<Responsiveness> }> {
  const reg = await fetch(`${url}/api/agents`, {
    method: "POST",
    headers: { authorization: `Bearer ${TEST_AGENT_TOKEN}` },
    body: JSON.stringify({
      machine_name: name,
      ip_address: "127.0.0.1",
      ollama_port: 9,
      ollama_version: "0.12.6",
    }),
  });
  const { agent_id: agentId, agent_secret: secret, error } = await reg.json();
  if (!reg.ok) throw new Error(`Cannot register the watcher: ${error}`);
  const latencies: number[] = [];
  let probeFailures = 0;
  let heartbeats = 0;
  let heartbeatFailures = 0;
  let running = true;
  const probe = (async () => {
    while (running) {
      const t0 = performance.now();
      try {
        const res = await fetch(`${url}/api/version`, { signal: AbortSignal.timeout(2000) });
        await res.body?.cancel();
        if (!res.ok) probeFailures++;
        latencies.push(performance.now() - t0);
      } catch {
        probeFailures++;
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  })();
  const beat = (async () => {
    while (running) {
      try {
        const res = await fetch(`${url}/api/health`, {
          method: "POST",
          headers: { authorization: `Bearer ${secret}` },
          body: JSON.stringify({
            agent_id: agentId,
            cpu_usage: 1,
            memory_usage: 1,
            active_requests: 0,
          }),
          signal: AbortSignal.timeout(2000),
        });
        await res.body?.cancel();
        if (res.ok) heartbeats++;
        else heartbeatFailures++;
      } catch {
        heartbeatFailures++;
      }
      await new Promise((r) => setTimeout(r, 250));
    }
  })();
  return {
    agentId,
    async stop() {
      running = false;
      await Promise.all([probe, beat]);
      const sorted = [...latencies].sort((a, b) => a - b);
      return {
        probes: latencies.length + probeFailures,
        probeFailures,
        p50Ms: quantile(sorted, 0.5),
        p99Ms: quantile(sorted, 0.99),
        maxMs: sorted.at(-1) ?? NaN,
        heartbeats,
        heartbeatFailures,
      };
    },
  };
}

/** Resident memory of a process in MB (Linux), or NaN elsewhere. */
export function residentMb(pid: number): number {
  try {
    const status = Deno.readTextFileSync(`/proc/${pid}/status`);
    const kb = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1]);
    return kb / 1024;
  } catch {
    return NaN;
  }
}

/** One line for the test output: what the attack cost the others. */
export function describeResponsiveness(attack: string, r: Responsiveness, extra = ""): string {
  const f = (x: number) => x.toFixed(1);
  return `abuse: ${attack}: ${r.probes} probes, p50 ${f(r.p50Ms)} ms, p99 ${f(r.p99Ms)} ms, ` +
    `max ${f(r.maxMs)} ms, ${r.probeFailures} failed; ${r.heartbeats} heartbeats, ` +
    `${r.heartbeatFailures} failed${extra ? `; ${extra}` : ""}`;
}

/** Mounts a tmpfs of `size` at a new folder; null where this machine cannot mount (not root). */
export async function smallDisk(
  size: string,
): Promise<{ dir: string; unmount(): Promise<void> } | null> {
  const dir = await Deno.makeTempDir();
  const mount = await new Deno.Command("mount", {
    args: ["-t", "tmpfs", "-o", `size=${size}`, "tmpfs", dir],
    stderr: "null",
    stdout: "null",
  }).output().catch(() => ({ success: false }));
  if (!mount.success) {
    await Deno.remove(dir);
    return null;
  }
  return {
    dir,
    async unmount() {
      await new Deno.Command("umount", { args: ["-l", dir] }).output();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
  };
}

/** Fills the file system holding `dir` with a file; returns its path. */
export async function fillDisk(dir: string): Promise<string> {
  const path = `${dir}/filler`;
  const file = await Deno.open(path, { write: true, create: true, append: true });
  const block = new Uint8Array(64 * 1024);
  try {
    while (true) await file.write(block);
  } catch {
    /* full */
  } finally {
    file.close();
  }
  return path;
}
