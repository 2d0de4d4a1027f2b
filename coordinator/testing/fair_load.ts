/**
 * The two-key workload of the fair-share test and `deno task bench:fair`: a light key sends
 * bursts at a steady pace (open loop) while, optionally, a flood key keeps many requests going
 * and comes straight back when refused. The light key's queue waits are read from the
 * coordinator's request log (`queued_ms`), so they are the coordinator's own clock, not the
 * client's.
 */

/** What {@linkcode fairLoad} runs. */
export interface FairLoadOptions {
  /** The coordinator's base URL. */
  url: string;
  /** Headers that reach the admin API (to read the request log). */
  admin: HeadersInit;
  model: string;
  /** The light key and its id. */
  light: { key: string; id: string };
  /**
   * The flood key; none runs the light key alone. A refused flood request comes back after
   * `pauseMs` (default 100): the flood holds every place it can, without spending the test
   * machine's CPU on refusals.
   */
  flood?: { key: string; concurrency: number; pauseMs?: number };
  bursts: number;
  burstSize: number;
  periodMs: number;
  /** Tokens each answer has (the simulator generates exactly this many). */
  numPredict: number;
  /**
   * Milliseconds the flood runs alone before the first burst (default 1500): long enough to fill
   * the queue and to use up the turns a key new to the queue may take ahead of others.
   */
  warmupMs?: number;
}

/** What {@linkcode fairLoad} saw. */
export interface FairLoadResult {
  /** The light key's queue waits (ms), one per request it made. */
  lightWaits: number[];
  lightFailures: number;
  flood: { ok: number; limited: number; busy: number; failed: number };
}

/** The value below which `p` of `xs` fall. */
export function percentile(xs: number[], p: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(s.length * p))];
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function generate(o: FairLoadOptions, key: string, prompt: string): Promise<Response> {
  return await fetch(`${o.url}/api/generate`, {
    method: "POST",
    headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
    body: JSON.stringify({
      model: o.model,
      prompt,
      stream: false,
      options: { num_predict: o.numPredict },
    }),
  });
}

/** Runs the workload (see the module documentation) and reads the light key's queue waits. */
export async function fairLoad(o: FairLoadOptions): Promise<FairLoadResult> {
  const flood = { ok: 0, limited: 0, busy: 0, failed: 0 };
  let flooding = o.flood !== undefined;
  const workers = Array.from({ length: o.flood?.concurrency ?? 0 }, async (_, w) => {
    for (let i = 0; flooding; i++) {
      try {
        const res = await generate(o, o.flood!.key, `flood ${w} ${i}`);
        await res.body?.cancel();
        if (res.ok) flood.ok++;
        else if (res.status === 429) flood.limited++;
        else if (res.status === 503) flood.busy++;
        else flood.failed++;
        if (!res.ok) await sleep(o.flood!.pauseMs ?? 100);
      } catch {
        flood.failed++;
        await sleep(o.flood!.pauseMs ?? 100);
      }
    }
  });
  if (o.flood) await sleep(o.warmupMs ?? 1500);
  const ids: string[] = [];
  let lightFailures = 0;
  const t0 = performance.now();
  const bursts: Promise<void>[] = [];
  for (let b = 0; b < o.bursts; b++) {
    const wait = t0 + b * o.periodMs - performance.now();
    if (wait > 0) await sleep(wait);
    bursts.push(
      ...Array.from({ length: o.burstSize }, async (_, i) => {
        const res = await generate(o, o.light.key, `light ${b} ${i}`);
        await res.body?.cancel();
        if (res.ok) ids.push(res.headers.get("x-request-id")!);
        else lightFailures++;
      }),
    );
  }
  await Promise.all(bursts);
  flooding = false;
  await Promise.all(workers);
  const log = await fetch(
    `${o.url}/api/requests?key_id=${encodeURIComponent(o.light.id)}&limit=10000`,
    { headers: o.admin },
  );
  if (!log.ok) throw new Error(`Cannot read the request log: HTTP ${log.status}`);
  const records = await log.json() as { id: string; queued_ms: number | null }[];
  const wanted = new Set(ids);
  const lightWaits = records.filter((r) => wanted.has(r.id)).map((r) => r.queued_ms ?? 0);
  return { lightWaits, lightFailures, flood };
}
