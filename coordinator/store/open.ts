/** Opens the store a database URL names. */
import type { Store } from "./mod.ts";
import { openSqliteStore } from "./sqlite/store.ts";

/** Whether `url` names a PostgreSQL database. */
export function isPostgresUrl(url: string): boolean {
  return /^postgres(ql)?:\/\//.test(url);
}

/** A database URL fit for a log line: a password it holds is replaced by `***`. */
export function redactUrl(url: string): string {
  return url.replace(/^(postgres(?:ql)?:\/\/[^:/@]*:).*@/, "$1***@");
}

/** Opens (creating and migrating when needed) the store at `url`. */
export async function openStore(url: string): Promise<Store> {
  if (url.startsWith("sqlite:")) return await openSqliteStore(url);
  if (isPostgresUrl(url)) {
    // Loaded only when asked for: a one-machine coordinator never loads the PostgreSQL client.
    const { openPostgresStore } = await import("./postgres/store.ts");
    return await openPostgresStore(url);
  }
  throw new TypeError(`Cannot open database "${url}": unsupported URL scheme`);
}
