/**
 * Bundles the dashboard's islands now and prints the size of each file (minified; gzip in
 * brackets). The coordinator does the same by itself on the first page view when the sources
 * changed, so this is for checking sizes and for warming a deployment.
 *
 *   deno task build:islands
 */
import { gzipSync } from "node:zlib";
import { buildIslands, islandNames } from "../coordinator/dashboard/components/island_bundle.ts";

if (import.meta.main) {
  const started = performance.now();
  const build = await buildIslands();
  const ms = Math.round(performance.now() - started);
  console.log(`Bundled ${islandNames().length} islands into ${build.dir} in ${ms} ms`);
  let total = 0;
  let totalGz = 0;
  const rows = Object.entries(build.files).filter(([f]) => f.endsWith(".js")).sort();
  for (const [file, bytes] of rows) {
    const gz = gzipSync(await Deno.readFile(`${build.dir}/${file}`)).byteLength;
    total += bytes;
    totalGz += gz;
    console.log(`  ${file.padEnd(28)} ${String(bytes).padStart(7)} B  (${gz} B gzip)`);
  }
  console.log(`  ${"total".padEnd(28)} ${String(total).padStart(7)} B  (${totalGz} B gzip)`);
}
