/**
 * The abuse suite's watcher, run as a process by {@linkcode watchResponsiveness} with its orders
 * (JSON) as the argument: a probe of `/api/version` every 50 ms, a heartbeat every 250 ms, and the
 * coordinator's resident memory every 100 ms. Prints `started` once they run; when its standard
 * input closes, prints what they saw (one JSON line) and exits. A process of its own, so that the
 * attack sent from the test's process does not delay the probe: the latencies are the
 * coordinator's.
 *
 * @module
 */
import { quantile, residentMb, type Responsiveness, type WatchOrders } from "./abuse.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** How Deno's fetch reports a connection that ended before its answer's head. */
const CLOSED_BEFORE_ANSWER =
  /connection closed before message completed|Connection reset by peer|Broken pipe/;

/**
 * Fetches once more when the connection the request went out on was closed or reset before any
 * answer (at its cap the coordinator closes idle connections and ones that have not sent a head
 * yet; a close with the request unread reaches the client as a reset), as browsers and Go's
 * client do; `init` is called per try for a fresh time limit, `onResend` once a retry goes out.
 * Any other failure, or a second one, is thrown.
 */
export async function fetchOnceMore(
  url: string,
  init: () => RequestInit,
  onResend: () => void = () => {},
): Promise<Response> {
  try {
    return await fetch(url, init());
  } catch (e) {
    if (!CLOSED_BEFORE_ANSWER.test(failure(e))) throw e;
    onResend();
    return await fetch(url, init());
  }
}

function watch(orders: WatchOrders): () => Promise<Responsiveness> {
  const { url, agentId, secret, pid } = orders;
  const latencies: number[] = [];
  const errors: string[] = [];
  const note = (what: string) => errors.length < 10 && errors.push(what);
  let probeFailures = 0;
  let heartbeats = 0;
  let heartbeatFailures = 0;
  let resent = 0;
  let running = true;
  const send = (path: string, init: () => RequestInit) =>
    fetchOnceMore(`${url}${path}`, init, () => resent++);
  const rssStartMb = pid === undefined ? NaN : residentMb(pid);
  let rssPeakMb = rssStartMb;
  const probe = (async () => {
    while (running) {
      const t0 = performance.now();
      try {
        const res = await send("/api/version", () => ({ signal: AbortSignal.timeout(2000) }));
        await res.body?.cancel();
        if (!res.ok) {
          probeFailures++;
          note(`probe: HTTP ${res.status}`);
        }
        latencies.push(performance.now() - t0);
      } catch (e) {
        probeFailures++;
        note(`probe: ${failure(e)}`);
      }
      await sleep(50);
    }
  })();
  const beat = (async () => {
    while (running) {
      try {
        const res = await send("/api/health", () => ({
          method: "POST",
          headers: { authorization: `Bearer ${secret}` },
          body: JSON.stringify({
            agent_id: agentId,
            cpu_usage: 1,
            memory_usage: 1,
            active_requests: 0,
          }),
          signal: AbortSignal.timeout(2000),
        }));
        await res.body?.cancel();
        if (res.ok) heartbeats++;
        else {
          heartbeatFailures++;
          note(`heartbeat: HTTP ${res.status}`);
        }
      } catch (e) {
        heartbeatFailures++;
        note(`heartbeat: ${failure(e)}`);
      }
      await sleep(250);
    }
  })();
  const memory = (async () => {
    while (running && pid !== undefined) {
      const mb = residentMb(pid);
      if (mb > rssPeakMb) rssPeakMb = mb;
      await sleep(100);
    }
  })();
  return async () => {
    running = false;
    await Promise.all([probe, beat, memory]);
    const sorted = [...latencies].sort((a, b) => a - b);
    return {
      probes: latencies.length + probeFailures,
      probeFailures,
      p50Ms: quantile(sorted, 0.5),
      p99Ms: quantile(sorted, 0.99),
      maxMs: sorted.at(-1) ?? NaN,
      heartbeats,
      heartbeatFailures,
      resent,
      rssStartMb,
      rssPeakMb,
      errors,
    };
  };
}

if (import.meta.main) {
  const stop = watch(JSON.parse(Deno.args[0]) as WatchOrders);
  console.log("started");
  // Waits for standard input to close.
  for await (const _ of Deno.stdin.readable) { /* nothing is sent */ }
  console.log(JSON.stringify(await stop()));
}

/** A failed fetch in words, with its cause (`fetch failed` alone does not say what failed). */
function failure(e: unknown): string {
  const error = e as Error;
  return error.cause ? `${error.message} (${String(error.cause)})` : error.message;
}
