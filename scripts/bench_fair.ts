/**
 * `deno task bench:fair`: fair share between API keys. A coordinator as users run it (its own
 * process, a file database) in front of one simulated Ollama (its own process) with 2 slots and
 * answers of about 100 ms. A light key sends bursts of requests at a steady pace, first alone,
 * then while a second key floods (many requests at once, coming back as soon as it is refused).
 * Prints the light key's queue wait (p50, p95, from the coordinator's request log) in both runs
 * and what the flood got. Loopback only; asserts nothing.
 */
import { parseArgs } from "node:util";
import {
  adminCookie,
  registerSim,
  spawnCoordinator,
  spawnSimulator,
} from "../coordinator/testing/process.ts";
import { fairLoad, type FairLoadResult, percentile } from "../coordinator/testing/fair_load.ts";

const { values } = parseArgs({
  options: {
    bursts: { type: "string", default: "10" },
    "burst-size": { type: "string", default: "6" },
    period: { type: "string", default: "1200" },
    flood: { type: "string", default: "48" },
    queue: { type: "string", default: "32" },
    tokens: { type: "string", default: "20" },
    tps: { type: "string", default: "200" },
  },
});

/** Signs in and makes an admin API key (a session needs its CSRF token for changes). */
async function adminKey(url: string): Promise<string> {
  const cookie = await adminCookie(url);
  const { csrf } = await (await fetch(`${url}/api/admin/session`, { headers: { cookie } })).json();
  const res = await fetch(`${url}/api/keys`, {
    method: "POST",
    headers: { cookie, "x-csrf-token": csrf, "content-type": "application/json" },
    body: JSON.stringify({ name: "bench", scope: "admin" }),
  });
  if (!res.ok) throw new Error(`Cannot create an admin key: HTTP ${res.status}`);
  return (await res.json()).key;
}

async function createKey(url: string, admin: HeadersInit, name: string) {
  const res = await fetch(`${url}/api/keys`, {
    method: "POST",
    headers: { ...admin, "content-type": "application/json" },
    body: JSON.stringify({ name }),
  });
  if (!res.ok) throw new Error(`Cannot create key "${name}": HTTP ${res.status}`);
  return await res.json() as { id: string; key: string };
}

const dir = await Deno.makeTempDir({ prefix: "oc-bench-fair-" });
const coordinator = await spawnCoordinator({
  DATABASE_URL: `sqlite://${dir}/coordinator.db`,
  QUEUE_MAX_LENGTH: values.queue!,
  LOG_LEVEL: "error",
});
const sim = await spawnSimulator(["--parallel", "2", "--tps", values.tps!, "--loaded", "llama3.2"]);
try {
  await registerSim(coordinator.url, "sim", sim, 2, { keepAlive: true });
  const admin = { authorization: `Bearer ${await adminKey(coordinator.url)}` };
  const light = await createKey(coordinator.url, admin, "light");
  const flood = await createKey(coordinator.url, admin, "flood");
  const load = {
    url: coordinator.url,
    admin,
    model: "llama3.2",
    light,
    bursts: Number(values.bursts),
    burstSize: Number(values["burst-size"]),
    periodMs: Number(values.period),
    numPredict: Number(values.tokens),
  };
  console.log(
    `Fair share: 1 agent × 2 slots, answers of ${values.tokens} tokens at ${values.tps} tokens/s, ` +
      `QUEUE_MAX_LENGTH=${values.queue}; the light key sends ${load.bursts} bursts of ` +
      `${load.burstSize} every ${load.periodMs} ms; the flood keeps ${values.flood} requests going`,
  );
  const alone = await fairLoad(load);
  const flooded = await fairLoad({
    ...load,
    flood: { key: flood.key, concurrency: Number(values.flood) },
  });
  const row = (name: string, r: FairLoadResult) =>
    `| ${name} | ${r.lightWaits.length} | ${r.lightFailures} | ${
      percentile(r.lightWaits, 0.5).toFixed(0)
    } | ${
      percentile(r.lightWaits, 0.95).toFixed(0)
    } | ${r.flood.ok} | ${r.flood.limited} | ${r.flood.busy} |`;
  console.log(
    "| light key | served | refused | queue wait p50 (ms) | p95 (ms) | flood served | flood 429 | flood 503 |",
  );
  console.log("| --- | --- | --- | --- | --- | --- | --- | --- |");
  console.log(row("alone", alone));
  console.log(row("with a flood", flooded));
  const [a, f] = [percentile(alone.lightWaits, 0.95), percentile(flooded.lightWaits, 0.95)];
  console.log(
    `light key p95 queue wait: alone ${a.toFixed(0)} ms, with a flood ${f.toFixed(0)} ms ` +
      `(${(f / a).toFixed(2)}×; aim ≤ 2)`,
  );
} finally {
  await sim.stop();
  await coordinator.stop();
  await Deno.remove(dir, { recursive: true });
}
