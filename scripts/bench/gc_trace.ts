/**
 * Reading V8's `--trace-gc-nvp` output for `deno task bench:gc`: one JSON object per collection,
 * prefixed with the process and isolate, summed into what a phase's requests cost the collector.
 *
 * @module
 */

/** One collection as `--trace-gc-nvp` reports it (the fields read here). */
export interface GcEvent {
  isolate: string;
  /** "s" for a scavenge; anything else is a major collection or a step of one. */
  gc: string;
  pause: number;
  allocated: number;
  survived: number;
  promoted: number;
}

/** Reads one line of `--trace-gc-nvp` output; null for any other line. */
export function parseGcLine(line: string): GcEvent | null {
  const at = line.indexOf("GC: {");
  if (at < 0) return null;
  const isolate = /^\[\d+:(0x[0-9a-f]+)/.exec(line)?.[1] ?? "";
  try {
    const d = JSON.parse(line.slice(at + 4));
    return {
      isolate,
      gc: String(d.gc),
      pause: Number(d.pause) || 0,
      allocated: Number(d.allocated) || 0,
      survived: Number(d.new_space_survived) || 0,
      promoted: Number(d.promoted) || 0,
    };
  } catch {
    return null;
  }
}

/** What a phase's collections cost per request; the main isolate is the one that allocated most. */
export interface GcFigures {
  allocatedPerRequest: number;
  scavenges: number;
  scavengePauseMs: number;
  pausePerRequestUs: number;
  survivedPerScavenge: number;
  promotedPerScavenge: number;
  promotedPerRequest: number;
  majorPausePerRequestUs: number;
}

/** Sums a phase's collections of its busiest isolate into per-request figures. */
export function gcFigures(events: GcEvent[], requests: number): GcFigures {
  const byIsolate = new Map<string, number>();
  for (const e of events) byIsolate.set(e.isolate, (byIsolate.get(e.isolate) ?? 0) + e.allocated);
  const main = [...byIsolate].sort((a, b) => b[1] - a[1])[0]?.[0];
  const mine = events.filter((e) => e.isolate === main);
  const scavenges = mine.filter((e) => e.gc === "s");
  const sum = (xs: GcEvent[], k: keyof GcEvent) => xs.reduce((n, e) => n + (e[k] as number), 0);
  const n = Math.max(scavenges.length, 1);
  return {
    allocatedPerRequest: sum(mine, "allocated") / requests,
    scavenges: scavenges.length,
    scavengePauseMs: sum(scavenges, "pause") / n,
    pausePerRequestUs: (sum(scavenges, "pause") * 1000) / requests,
    survivedPerScavenge: sum(scavenges, "survived") / n,
    promotedPerScavenge: sum(scavenges, "promoted") / n,
    promotedPerRequest: sum(scavenges, "promoted") / requests,
    majorPausePerRequestUs: (sum(mine.filter((e) => e.gc !== "s"), "pause") * 1000) / requests,
  };
}
