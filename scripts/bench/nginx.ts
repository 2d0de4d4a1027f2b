/**
 * nginx as the benchmark's reference proxy: Debian's nginx, one worker, `least_conn`, keepalive
 * to the upstream, buffering off (as a streaming proxy must), started in the foreground with its
 * own config in a temporary folder (see coordinator/testing/nginx.ts).
 *
 * @module
 */
import { startNginx as start } from "../../coordinator/testing/nginx.ts";

/** nginx proxying to `upstreamPort` on loopback, or null when nginx is not installed. */
export async function startNginx(
  upstreamPort: number,
): Promise<{ url: string; pid: number; stop: () => Promise<void> } | null> {
  return await start([upstreamPort], { balance: "least_conn" }) ?? null;
}
