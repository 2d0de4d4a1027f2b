/**
 * The run locks: `deno.lock` holds every package the project uses, test tools included
 * (playwright-core, the npm `ollama` and `openai` clients), and Deno fetches every package of the
 * lock it runs with. So `deno task coordinator` and `deno task agent` run with a lock of their
 * own that holds only what the coordinator and the agent import.
 *
 * `deno task lock:run` writes them anew (after a dependency changed); `--check` only says whether
 * they are current (a test runs it).
 */
import { parseArgs } from "node:util";

const ROOT = new URL("../", import.meta.url);

/** Each run lock and the entry points whose imports it must hold. */
export const RUN_LOCKS = [
  { lock: "coordinator/run.lock", entries: ["coordinator/main.ts"] },
  { lock: "agent/run.lock", entries: ["agent/main.ts"] },
];

async function write(lock: string, entries: string[]): Promise<void> {
  const path = new URL(lock, ROOT);
  await Deno.remove(path).catch(() => {});
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["cache", "--quiet", `--lock=${path.pathname}`, ...entries],
    cwd: ROOT,
    stderr: "piped",
  }).output();
  if (!out.success) {
    throw new Error(`Cannot write ${lock}: ${new TextDecoder().decode(out.stderr).trim()}`);
  }
}

/** The packages a lock pins (name@version → integrity). */
export function pinned(lockText: string): Record<string, string> {
  const npm = JSON.parse(lockText).npm ?? {};
  return Object.fromEntries(
    Object.entries(npm).map(([k, v]) => [k, (v as { integrity?: string }).integrity ?? ""]),
  );
}

/**
 * Which run locks differ from what their entry points need now (writing fresh ones to a
 * temporary folder to compare). An empty list means they are current.
 */
export async function staleRunLocks(): Promise<string[]> {
  const tmp = await Deno.makeTempDir();
  const stale: string[] = [];
  try {
    for (const { lock, entries } of RUN_LOCKS) {
      const fresh = `${tmp}/${lock.replace("/", "_")}`;
      const out = await new Deno.Command(Deno.execPath(), {
        args: ["cache", "--quiet", `--lock=${fresh}`, ...entries],
        cwd: ROOT,
        stderr: "piped",
      }).output();
      if (!out.success) throw new Error(new TextDecoder().decode(out.stderr));
      const committed = await Deno.readTextFile(new URL(lock, ROOT)).catch(() => "{}");
      if (
        JSON.stringify(pinned(committed)) !== JSON.stringify(pinned(await Deno.readTextFile(fresh)))
      ) {
        stale.push(lock);
      }
    }
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
  return stale;
}

if (import.meta.main) {
  const { values } = parseArgs({ options: { check: { type: "boolean" } } });
  if (values.check) {
    const stale = await staleRunLocks();
    if (stale.length) {
      console.error(`Out of date: ${stale.join(", ")}; run deno task lock:run`);
      Deno.exit(1);
    }
    console.log("Run locks are current");
  } else {
    for (const { lock, entries } of RUN_LOCKS) await write(lock, entries);
    console.log(`Wrote ${RUN_LOCKS.map((l) => l.lock).join(", ")}`);
  }
}
