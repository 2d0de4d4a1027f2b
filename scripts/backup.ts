/**
 * `deno task backup [--database-url sqlite://coordinator.db] [--out FILE]`: a consistent copy of
 * the coordinator's database, safe while the coordinator runs.
 */
import { parseArgs } from "node:util";
import { backupDatabase } from "../coordinator/store/sqlite/backup.ts";

if (import.meta.main) {
  const { values } = parseArgs({
    options: {
      "database-url": {
        type: "string",
        default: Deno.env.get("DATABASE_URL") ?? "sqlite://coordinator.db",
      },
      out: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    console.log(`Usage: deno task backup [--database-url sqlite://coordinator.db] [--out FILE]

Writes a consistent copy of the coordinator's database (VACUUM INTO), safe while it runs.

  --database-url URL  the database to copy (default: DATABASE_URL or sqlite://coordinator.db)
  --out FILE          where to write it (default: coordinator-backup-<time>.db; must not exist)
  -h, --help          show this help

Restore it with \`deno task restore FILE\` while the coordinator is stopped.`);
    Deno.exit(0);
  }
  const stamp = new Date().toISOString().replace(/[:.]/g, "-");
  const out = values.out ?? `coordinator-backup-${stamp}.db`;
  try {
    const size = backupDatabase(values["database-url"]!, out);
    console.log(`Backed up ${values["database-url"]} to ${out} (${size} bytes)`);
  } catch (e) {
    console.error((e as Error).message);
    Deno.exit(1);
  }
}
