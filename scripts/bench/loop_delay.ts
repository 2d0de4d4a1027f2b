/**
 * The coordinator's event-loop delay during one benchmark phase, read from its /metrics: the
 * quantiles and the maximum there cover the samples since the previous scrape, so a phase is
 * bracketed by one scrape before it (which starts the window) and one after.
 *
 * @module
 */

/** Event-loop delay in ms. */
export interface LoopDelay {
  p50: number;
  p99: number;
  max: number;
}

const NAME = "ollama_coordinator_event_loop_delay";

/** Reads p50, p99 and max (ms) from the exposition text; NaN for what is missing. */
export function parseLoopDelay(text: string): LoopDelay {
  const seconds = (re: RegExp) => {
    const m = re.exec(text);
    return m ? Number(m[1]) * 1000 : NaN;
  };
  return {
    p50: seconds(new RegExp(`\\n${NAME}_seconds\\{quantile="0.5"\\} (\\S+)`)),
    p99: seconds(new RegExp(`\\n${NAME}_seconds\\{quantile="0.99"\\} (\\S+)`)),
    max: seconds(new RegExp(`\\n${NAME}_max_seconds (\\S+)`)),
  };
}

/** Scrapes the coordinator's /metrics (with an admin session cookie) and starts a new window. */
export async function scrapeLoopDelay(url: string, cookie: string): Promise<LoopDelay> {
  const res = await fetch(`${url}/metrics`, { headers: { cookie } });
  const text = await res.text();
  if (!res.ok) throw new Error(`Cannot scrape ${url}/metrics: HTTP ${res.status}`);
  return parseLoopDelay(text);
}

/** Runs a phase between two scrapes; returns its result and the delay during it. */
export async function withLoopDelay<T>(
  coordinator: { url: string; cookie: string } | undefined,
  phase: () => Promise<T>,
): Promise<{ result: T; delay?: LoopDelay }> {
  if (!coordinator) return { result: await phase() };
  await scrapeLoopDelay(coordinator.url, coordinator.cookie);
  const result = await phase();
  return { result, delay: await scrapeLoopDelay(coordinator.url, coordinator.cookie) };
}
