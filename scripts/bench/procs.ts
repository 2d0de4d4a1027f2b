/**
 * Process helpers shared by the benchmarks: the bench upstream and scripts started as children,
 * and RSS and CPU time of a child from /proc.
 */
import { type Child, freePort, waitUntilUp } from "../../coordinator/testing/process.ts";

/**
 * Runs a script of scripts/bench/ (`path` relative to this module) as a child process listening on
 * `port`; resolves once it answers.
 */
export async function spawnScript(path: string, args: string[], port: number): Promise<Child> {
  const process = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL(path, import.meta.url).pathname, ...args],
    stdout: "null",
    stderr: "inherit",
  }).spawn();
  const url = `http://127.0.0.1:${port}`;
  await waitUntilUp(url);
  return childOf([process], port);
}

/** One `Child` for processes sharing a port: killed and awaited together. */
export function childOf(processes: Deno.ChildProcess[], port: number): Child {
  const kill = (signal: Deno.Signal = "SIGKILL") => {
    for (const p of processes) {
      try {
        p.kill(signal);
      } catch { /* gone */ }
    }
  };
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    process: processes[0],
    kill,
    stop: async () => {
      kill();
      await Promise.all(processes.map((p) => p.status));
    },
  };
}

/**
 * `count` processes of the bench upstream (scripts/bench/upstream.ts) sharing one port; resolves once every one of them listens. */
export async function spawnUpstream(count: number): Promise<Child> {
  const port = freePort();
  const script = new URL("./upstream.ts", import.meta.url).pathname;
  const processes = await Promise.all(Array.from({ length: count }, async () => {
    const process = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--unstable-net", script, String(port)],
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    // It prints one line when it listens; the rest of its output is not read.
    const reader = process.stdout.pipeThrough(new TextDecoderStream()).getReader();
    await reader.read();
    reader.releaseLock();
    return process;
  }));
  return childOf(processes, port);
}

/** Resident memory of a process in bytes (Linux), or NaN. */
export function rssBytes(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(Deno.readTextFileSync(`/proc/${pid}/status`));
    return m ? Number(m[1]) * 1024 : NaN;
  } catch {
    return NaN;
  }
}

/** CPU seconds (user + system) a process has used so far (Linux), or NaN. */
export function cpuSeconds(pid: number): number {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    const ticks = Number(fields[11]) + Number(fields[12]);
    return ticks / 100; // USER_HZ is 100 on Linux
  } catch {
    return NaN;
  }
}

/**
 * CPU seconds a process tree has used so far (Linux): the process with the children it has
 * waited for (exited ones, such as PostgreSQL's ended backends), and every live descendant.
 */
export function treeCpuSeconds(pid: number): number {
  const stats = new Map<number, { ppid: number; self: number; waited: number }>();
  for (const entry of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    try {
      const stat = Deno.readTextFileSync(`/proc/${entry.name}/stat`);
      const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      stats.set(Number(entry.name), {
        ppid: Number(f[1]),
        self: (Number(f[11]) + Number(f[12])) / 100,
        waited: (Number(f[13]) + Number(f[14])) / 100,
      });
    } catch { /* exited while we looked */ }
  }
  const root = stats.get(pid);
  if (!root) return NaN;
  let total = root.self + root.waited;
  const queue = [pid];
  while (queue.length) {
    const parent = queue.pop()!;
    for (const [child, s] of stats) {
      if (s.ppid !== parent) continue;
      total += s.self;
      queue.push(child);
    }
  }
  return total;
}

/** The median of numbers. */
export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** Formats a number with `d` decimals. */
export function fmt(x: number, d = 2): string {
  return Number.isFinite(x) ? x.toFixed(d) : "n/a";
}
