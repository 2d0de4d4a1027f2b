/**
 * `deno task db:copy FROM TO`: copies a coordinator's whole database into an empty one, SQLite
 * to PostgreSQL or back, so a one-machine install becomes several coordinators (or one again)
 * without agents registering again or keys being made again. Stop the coordinators first.
 */
import { parseArgs } from "node:util";
import { copyDatabase, type CopyResult } from "../coordinator/store/copy.ts";
import { redactUrl } from "../coordinator/store/open.ts";

const USAGE = `Usage: deno task db:copy FROM TO

Copies the coordinator database FROM into the empty database TO: settings (the agent
token and admin password hashes, model pins), agents with their heartbeat secrets, API
keys (revoked ones too, with their use counts), sessions, events and the request log.

FROM and TO are database URLs (sqlite://PATH, postgres://USER:PASSWORD@HOST:PORT/DB) or
paths of SQLite files. TO must be empty (a SQLite file that does not exist is created).
Stop every coordinator using either database first: one in use is refused.

Example:
  deno task db:copy coordinator.db postgres://oc:secret@db.example:5432/fleet

  -h, --help  show this help`;

/** A SQLite file's path becomes `sqlite://PATH`; URLs stay as they are. */
export function databaseUrl(arg: string): string {
  return /^(sqlite|postgres|postgresql):/.test(arg) ? arg : `sqlite://${arg}`;
}

const LABELS: Record<keyof CopyResult, string> = {
  settings: "settings",
  agents: "agents",
  api_keys: "API keys",
  sessions: "sessions",
  events: "events",
  requests: "request-log rows",
};

if (import.meta.main) {
  let parsed;
  try {
    parsed = parseArgs({
      allowPositionals: true,
      options: { help: { type: "boolean", short: "h" } },
    });
  } catch (e) {
    console.error(`Cannot read command line: ${(e as Error).message}\n\n${USAGE}`);
    Deno.exit(2);
  }
  if (parsed.values.help) {
    console.log(USAGE);
    Deno.exit(0);
  }
  if (parsed.positionals.length !== 2) {
    console.error(
      `Cannot copy: expected FROM and TO, got ${parsed.positionals.length} arguments\n\n${USAGE}`,
    );
    Deno.exit(2);
  }
  const [from, to] = parsed.positionals.map(databaseUrl);
  console.log(`Copying ${redactUrl(from)} into ${redactUrl(to)}`);
  const t0 = performance.now();
  const shown = new Map<string, number>();
  try {
    const result = await copyDatabase(from, to, {
      progress(table, rows) {
        // The long tables say how far they are every 50,000 rows.
        if (rows - (shown.get(table) ?? 0) < 50_000) return;
        shown.set(table, rows);
        console.log(`  ${LABELS[table]}: ${rows.toLocaleString("en")}`);
      },
    });
    const seconds = ((performance.now() - t0) / 1000).toFixed(1);
    console.log(
      `Copied ${
        Object.entries(result).map(([k, n]) =>
          `${n.toLocaleString("en")} ${LABELS[k as keyof CopyResult]}`
        ).join(", ")
      } in ${seconds} s.`,
    );
    console.log(`Start the coordinators with DATABASE_URL=${redactUrl(to)}`);
  } catch (e) {
    console.error((e as Error).message);
    Deno.exit(1);
  }
}
