/**
 * Builds the agent as one executable per platform with `deno compile`, into `dist/`:
 * `dist/ollama-coordinator-agent-<target>` (`.exe` added for Windows).
 *
 * The executables embed a bundle of `agent/main.ts` (`dist/agent.js`, made with `deno bundle`),
 * the same file `deno task agent` builds and runs. Bundling drops the parts of zod the agent does
 * not use (it validates with `zod/mini`, which tree-shakes): under `deno task agent` an idle agent
 * stays near 53 MB resident, against about 62 MB with the modules loaded one by one (issue #5 asks
 * for under 60 MB; `deno task bench:agent` measures it).
 *
 * `deno compile` downloads `denort` (the runtime it embeds) for each target. Machines without
 * access to Deno's download server cannot do that; this script then says so and exits non-zero.
 * For the host's own target, `DENORT_BIN=/path/to/denort` makes `deno compile` use a local copy.
 *
 * Usage: deno run --allow-run --allow-read --allow-write scripts/compile_agent.ts
 *          [--target <triple>]... [--out <dir>]
 */
import { parseArgs } from "node:util";

/** The targets released by default. */
export const TARGETS = [
  "x86_64-unknown-linux-gnu",
  "aarch64-unknown-linux-gnu",
  "x86_64-apple-darwin",
  "aarch64-apple-darwin",
  "x86_64-pc-windows-msvc",
] as const;

/** What the agent may do at run time, baked into the executable. */
export const PERMISSIONS = [
  "--allow-net",
  "--allow-read",
  "--allow-env",
  "--allow-sys",
  "--allow-run",
];

/** The bundle the executables embed, in the output folder. */
export const BUNDLE = "agent.js";

/** The agent's entry point, which the bundle starts from. */
export const ENTRY = "agent/main.ts";

/** The `deno bundle` arguments that write the agent's bundle into `outDir`. */
export function bundleArgs(outDir: string, entry = ENTRY): string[] {
  // The agent's own lock: only what the agent imports is fetched (see scripts/run_locks.ts).
  return [
    "bundle",
    "--lock=agent/run.lock",
    "--frozen",
    "--quiet",
    "--platform",
    "deno",
    "--output",
    `${outDir}/${BUNDLE}`,
    entry,
  ];
}

/**
 * The `deno task agent` command: bundle, then run the bundle with the executables' permissions.
 * `deno.json` must hold exactly this; a test checks it.
 */
export function agentTaskCommand(): string {
  return `deno ${bundleArgs("dist").join(" ")} && deno run ${PERMISSIONS.join(" ")} dist/${BUNDLE}`;
}

/** Output file (without `.exe`) for a target. */
export function outputName(target: string): string {
  return `ollama-coordinator-agent-${target}`;
}

/** The `deno compile` arguments for one target. */
export function compileArgs(target: string, outDir: string, entry: string): string[] {
  return [
    "compile",
    ...PERMISSIONS,
    "--target",
    target,
    "--output",
    `${outDir}/${outputName(target)}`,
    entry,
  ];
}

/** True when `deno compile` failed because it could not download denort. */
export function isDenortDownloadFailure(stderr: string): boolean {
  return /denort/i.test(stderr) &&
    /(error sending request|dns error|Download|Setting up base binary|connect)/i.test(stderr);
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      target: { type: "string", multiple: true },
      out: { type: "string" },
      help: { type: "boolean" },
    },
  });
  if (values.help) {
    console.log(
      "Usage: compile_agent.ts [--target <triple>]... [--out <dir>]\n" +
        `Targets (default all): ${TARGETS.join(", ")}`,
    );
    return 0;
  }
  const root = new URL("..", import.meta.url).pathname;
  const outDir = values.out ?? "dist";
  const targets = values.target?.length ? values.target : [...TARGETS];
  const unknown = targets.filter((t) => !(TARGETS as readonly string[]).includes(t));
  if (unknown.length) {
    console.error(`Cannot compile for "${unknown[0]}": expected one of ${TARGETS.join(", ")}`);
    return 2;
  }
  await Deno.mkdir(`${root}/${outDir}`, { recursive: true });
  console.log(`Bundling ${ENTRY} into ${outDir}/${BUNDLE}…`);
  const bundled = await new Deno.Command(Deno.execPath(), {
    args: bundleArgs(outDir),
    cwd: root,
    stdout: "inherit",
    stderr: "inherit",
  }).output();
  if (bundled.code !== 0) {
    console.error(`Cannot bundle the agent: deno bundle exited with ${bundled.code}`);
    return 1;
  }
  const built: string[] = [];
  for (const target of targets) {
    console.log(`Compiling the agent for ${target}…`);
    const out = await new Deno.Command(Deno.execPath(), {
      args: compileArgs(target, outDir, `${outDir}/${BUNDLE}`),
      cwd: root,
      stdout: "inherit",
      stderr: "piped",
    }).output();
    const stderr = new TextDecoder().decode(out.stderr);
    if (out.code === 0) {
      built.push(`${outDir}/${outputName(target)}${target.includes("windows") ? ".exe" : ""}`);
      continue;
    }
    if (isDenortDownloadFailure(stderr)) {
      console.error(
        `Cannot compile the agent for ${target}: deno compile could not download denort, the ` +
          "runtime it embeds (expected on machines that cannot reach Deno's download server). " +
          "Run this script where that server is reachable, or set DENORT_BIN to a local denort " +
          `of Deno ${Deno.version.deno} for the host's own target. ` +
          "For local use, run the agent with `deno task agent` instead.",
      );
    } else {
      console.error(stderr.trim());
      console.error(`Cannot compile the agent for ${target}: deno compile exited with ${out.code}`);
    }
    return 1;
  }
  console.log(`Built:\n${built.map((b) => `  ${b}`).join("\n")}`);
  return 0;
}

if (import.meta.main) Deno.exit(await main());
