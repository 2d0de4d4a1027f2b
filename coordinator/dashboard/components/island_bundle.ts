/**
 * Bundles the islands (coordinator/dashboard/islands/*.tsx, one browser entry each) with Deno's bundler
 * (esbuild): minified ES modules with code splitting, so Preact and the live connection are one
 * shared chunk. The output goes to coordinator/dashboard/static/islands/<hash>/, where the hash covers the
 * island sources and the Deno version: a fresh clone builds on the first page view, an
 * unchanged tree reuses the last build, and browsers may cache the files for ever.
 *
 * Uses `Deno.bundle` (deno.json enables the unstable `bundle` API); falls back to running
 * `deno bundle` when the API is missing and running subprocesses is allowed.
 */
import { createHash } from "node:crypto";
import { fileURLToPath, pathToFileURL } from "node:url";

/** Where the island sources are. */
export const ISLANDS_DIR = fileURLToPath(new URL("../islands/", import.meta.url));
/** Browser-side helpers the islands share (their changes must rebuild the bundles too). */
export const LIB_DIR = fileURLToPath(new URL("../lib/", import.meta.url));
/** The entry helper every island's bundle calls. */
const BOOT = pathToFileURL(`${LIB_DIR}boot.ts`).href;
/** Where bundles are written (git-ignored). */
export const BUNDLES_DIR = fileURLToPath(new URL("../static/islands/", import.meta.url));

/** A finished build. */
export interface IslandBuild {
  hash: string;
  dir: string;
  /** Output file → size in bytes. */
  files: Record<string, number>;
}

/** The islands: every `.tsx` file in islands/ whose name does not start with `_`. */
export function islandNames(dir = ISLANDS_DIR): string[] {
  const names: string[] = [];
  for (const e of Deno.readDirSync(dir)) {
    if (e.isFile && e.name.endsWith(".tsx") && !e.name.startsWith("_")) {
      names.push(e.name.slice(0, -4));
    }
  }
  return names.sort();
}

/** A hash of every source file under `dirs` (names and contents) and of the Deno version. */
export function sourceHash(dirs = [ISLANDS_DIR, LIB_DIR]): string {
  const hash = createHash("sha256").update(Deno.version.deno);
  const walk = (d: string) => {
    const entries = [...Deno.readDirSync(d)].sort((a, b) => a.name.localeCompare(b.name));
    for (const e of entries) {
      const path = `${d}/${e.name}`;
      if (e.isDirectory) walk(path);
      else if (e.isFile) {
        hash.update(`\0${path.slice(dir.length)}\0`).update(Deno.readFileSync(path));
      }
    }
  };
  let dir = "";
  for (const d of dirs) {
    dir = d.replace(/\/$/, "");
    walk(dir);
  }
  return hash.digest("hex").slice(0, 16);
}

let currentHash: string | undefined;

/** The hash of the islands this process serves (computed once). */
export function islandsHash(): string {
  return currentHash ??= sourceHash();
}

let building: Promise<IslandBuild> | undefined;

/**
 * The current build, made first when it does not exist yet. Concurrent callers share one
 * build; a failed build is tried again by the next caller.
 */
export function ensureIslands(): Promise<IslandBuild> {
  building ??= (async () => {
    const hash = islandsHash();
    const existing = await readManifest(`${BUNDLES_DIR}${hash}`);
    return existing ?? await buildIslands({ hash });
  })().catch((e) => {
    building = undefined;
    throw e;
  });
  return building;
}

async function readManifest(dir: string): Promise<IslandBuild | null> {
  try {
    const m = JSON.parse(await Deno.readTextFile(`${dir}/manifest.json`));
    return { hash: m.hash, dir, files: m.files };
  } catch {
    return null;
  }
}

type BundleFn = (options: {
  entrypoints: string[];
  outputDir: string;
  platform: "browser";
  format: "esm";
  minify: boolean;
  codeSplitting: boolean;
  write: boolean;
}) => Promise<{ success: boolean; errors: { text: string }[] }>;

/** Bundles the islands now into `<out>/<hash>/`, replacing nothing that is in use. */
export async function buildIslands(
  options: { hash?: string; src?: string; out?: string } = {},
): Promise<IslandBuild> {
  const src = options.src ?? ISLANDS_DIR;
  const out = options.out ?? BUNDLES_DIR;
  const hash = options.hash ?? sourceHash([src, LIB_DIR]);
  const names = islandNames(src);
  await Deno.mkdir(out, { recursive: true });
  const tmp = await Deno.makeTempDir({ dir: out, prefix: ".build-" });
  try {
    const entries = names.map((name) => {
      const path = `${tmp}/entries/${name}.ts`;
      const rel = (file: string) =>
        JSON.stringify(pathToFileURL(`${src.replace(/\/$/, "")}/${file}`).href);
      return {
        path,
        text:
          `import C from ${rel(`${name}.tsx`)};\nimport { boot } from ${JSON.stringify(BOOT)};\n` +
          `boot(${JSON.stringify(name)}, C);\n`,
      };
    });
    await Deno.mkdir(`${tmp}/entries`);
    for (const e of entries) await Deno.writeTextFile(e.path, e.text);
    const outDir = `${tmp}/out`;
    const bundle = (Deno as unknown as { bundle?: BundleFn }).bundle;
    if (bundle) {
      const result = await bundle({
        entrypoints: entries.map((e) => e.path),
        outputDir: outDir,
        platform: "browser",
        format: "esm",
        minify: true,
        codeSplitting: true,
        write: true,
      });
      if (!result.success) {
        throw new Error(`Cannot bundle islands: ${result.errors.map((e) => e.text).join("; ")}`);
      }
    } else {
      const cmd = new Deno.Command(Deno.execPath(), {
        args: [
          "bundle",
          "--quiet",
          "--platform=browser",
          "--format=esm",
          "--minify",
          "--code-splitting",
          `--outdir=${outDir}`,
          ...entries.map((e) => e.path),
        ],
        stdout: "piped",
        stderr: "piped",
      });
      const { success, stderr } = await cmd.output();
      if (!success) {
        throw new Error(`Cannot bundle islands: ${new TextDecoder().decode(stderr).trim()}`);
      }
    }
    const files: Record<string, number> = {};
    for await (const e of Deno.readDir(outDir)) {
      if (e.isFile) files[e.name] = (await Deno.stat(`${outDir}/${e.name}`)).size;
    }
    for (const name of names) {
      if (!(`${name}.js` in files)) throw new Error(`Cannot bundle islands: ${name}.js is missing`);
    }
    await Deno.writeTextFile(`${outDir}/manifest.json`, JSON.stringify({ hash, files }, null, 2));
    const dir = `${out}${out.endsWith("/") ? "" : "/"}${hash}`;
    try {
      await Deno.rename(outDir, dir);
    } catch (e) {
      // Another process built the same sources first: theirs is as good as ours.
      if (!(await readManifest(dir))) throw e;
    }
    await prune(out, hash);
    return { hash, dir, files };
  } finally {
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
  }
}

/** Removes older builds (and build folders abandoned more than an hour ago). */
async function prune(out: string, keep: string): Promise<void> {
  for await (const e of Deno.readDir(out)) {
    if (!e.isDirectory || e.name === keep) continue;
    const path = `${out}/${e.name}`;
    if (e.name.startsWith(".build-")) {
      const age = Date.now() - ((await Deno.stat(path)).mtime?.getTime() ?? Date.now());
      if (age < 3_600_000) continue;
    }
    await Deno.remove(path, { recursive: true }).catch(() => {});
  }
}
