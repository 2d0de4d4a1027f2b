/**
 * `deno task restore FILE [--database-url sqlite://coordinator.db]`: puts a backup made by
 * `deno task backup` in the place of the coordinator's database. Stop the coordinator first: a
 * database in use is refused. The replaced database is kept as `<path>.before-restore-<time>`.
 */
import { parseArgs } from "node:util";
import { restoreDatabase } from "../coordinator/store/sqlite/backup.ts";

const USAGE = `Usage: deno task restore FILE [--database-url sqlite://coordinator.db]

Replaces the coordinator's database with FILE, a backup made by \`deno task backup\`.
Stop the coordinator first: a database in use is refused. The backup is checked
(integrity, the coordinator's schema), copied beside the database and renamed over it;
the replaced database is kept as <path>.before-restore-<time>.

  --database-url URL  the database to replace (default: DATABASE_URL or sqlite://coordinator.db)
  -h, --help          show this help`;

if (import.meta.main) {
  let parsed;
  try {
    parsed = parseArgs({
      allowPositionals: true,
      options: {
        "database-url": {
          type: "string",
          default: Deno.env.get("DATABASE_URL") ?? "sqlite://coordinator.db",
        },
        help: { type: "boolean", short: "h" },
      },
    });
  } catch (e) {
    console.error(`Cannot read command line: ${(e as Error).message}\n\n${USAGE}`);
    Deno.exit(2);
  }
  const { values, positionals } = parsed;
  if (values.help) {
    console.log(USAGE);
    Deno.exit(0);
  }
  if (positionals.length !== 1) {
    console.error(
      `Cannot restore: expected one backup FILE, got ${positionals.length}\n\n${USAGE}`,
    );
    Deno.exit(2);
  }
  const [file] = positionals;
  const url = values["database-url"]!;
  try {
    const { previous } = restoreDatabase(file, url);
    console.log(
      `Restored ${file} into ${url}` +
        (previous ? `; the replaced database is kept as ${previous}` : ""),
    );
  } catch (e) {
    console.error((e as Error).message);
    Deno.exit(1);
  }
}
