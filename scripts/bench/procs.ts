/** Process helpers shared by the benchmarks: RSS and CPU time of a child from /proc. */

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
