/** Opens the store a database URL names. */
import type { Store } from "./mod.ts";
import { openSqliteStore } from "./sqlite/store.ts";

/** Opens (creating and migrating when needed) the store at `url`. */
export function openStore(url: string): Promise<Store> {
  if (url.startsWith("sqlite:")) return openSqliteStore(url);
  return Promise.reject(new TypeError(`Cannot open database "${url}": unsupported URL scheme`));
}
