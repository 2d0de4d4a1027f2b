/**
 * The harness of the abuse suite: while an attack runs against a real coordinator process, a
 * probe asks `/api/version` every 50 ms and a registered agent heartbeats every 250 ms. What they
 * saw says whether the coordinator stayed up and responsive for everyone else.
 */
import { TEST_AGENT_TOKEN } from "../config.ts";
import { prioritized } from "./raw_http.ts";

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
  /**
   * Probes and heartbeats sent once more because the connection they went out on was closed or
   * reset by the coordinator before any answer (at its connection cap, idle connections and ones
   * without a head go): what browsers and Go's client do. Only a second failure counts.
   */
  resent: number;
  /** The coordinator's resident memory when watching began and at its highest, sampled every 100 ms (MB). */
  rssStartMb: number;
  rssPeakMb: number;
  /** What failed, for the assertion messages (at most ten). */
  errors: string[];
}

/** The watcher's orders (see abuse_watcher.ts). */
export interface WatchOrders {
  url: string;
  agentId: string;
  secret: string;
  pid?: number;
}

/**
 * Starts probing `url` and heartbeating as a new agent named `name`; `stop()` ends both and
 * returns what they saw. The agent advertises a port nobody serves: it exists to be kept online.
 * Both run in a process of their own (abuse_watcher.ts), at a higher CPU priority where it may be
 * raised (as the coordinator under test should be), so that neither the attack sent from this
 * process nor a busy machine delays them: what they measure is the coordinator. With `pid`, the
 * coordinator's resident memory is sampled too.
 */
export async function watchResponsiveness(
  url: string,
  name = "watcher",
  options: { pid?: number } = {},
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
  const orders: WatchOrders = { url, agentId, secret, pid: options.pid };
  const [cmd, ...args] = prioritized([
    Deno.execPath(),
    "run",
    "-A",
    new URL("./abuse_watcher.ts", import.meta.url).pathname,
    JSON.stringify(orders),
  ]);
  const watcher = new Deno.Command(cmd, {
    args,
    stdin: "piped",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const lines = watcher.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let out = "";
  const nextLine = async (): Promise<string> => {
    while (!out.includes("\n")) {
      const { value, done } = await lines.read();
      if (done) throw new Error("The watcher exited before it said anything");
      out += value;
    }
    const line = out.slice(0, out.indexOf("\n"));
    out = out.slice(line.length + 1);
    return line;
  };
  try {
    const first = await nextLine();
    if (first !== "started") throw new Error(`The watcher said ${first}`);
  } catch (e) {
    watcher.kill();
    await watcher.status;
    throw e;
  }
  return {
    agentId,
    async stop() {
      // Its standard input closing tells the watcher to stop and report.
      await watcher.stdin.close();
      try {
        return JSON.parse(await nextLine()) as Responsiveness;
      } finally {
        await lines.cancel().catch(() => {});
        await watcher.status;
      }
    },
  };
}

/** The `q` quantile of sorted values. */
export function quantile(sorted: number[], q: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
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
  const rss = Number.isNaN(r.rssPeakMb)
    ? ""
    : `; RSS ${r.rssStartMb.toFixed(0)} → peak ${r.rssPeakMb.toFixed(0)} MB`;
  return `abuse: ${attack}: ${r.probes} probes, p50 ${f(r.p50Ms)} ms, p99 ${f(r.p99Ms)} ms, ` +
    `max ${f(r.maxMs)} ms, ${r.probeFailures} failed; ${r.heartbeats} heartbeats, ` +
    `${r.heartbeatFailures} failed${
      r.resent ? ` (${r.resent} re-sent after a connection closed or reset before its answer)` : ""
    }` +
    `${rss}${extra ? `; ${extra}` : ""}`;
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
