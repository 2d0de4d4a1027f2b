/**
 * The host allow-list against DNS rebinding. A page on an attacker's domain can make its name
 * resolve to the coordinator; the browser then sends the attacker's name as `Host` (and as
 * `Origin`), so a request whose `Host` names neither this machine nor a configured name is
 * refused, whatever its origin. Reasoning and defaults: specs/security/spec.md.
 */
import { isIP } from "node:net";
import { hostname as osHostname } from "node:os";
import type { MiddlewareHandler } from "hono";
import { errorFor } from "./errors.ts";
import type { AppEnv } from "./env.ts";

/**
 * Name suffixes no public DNS can delegate (RFC 6761 `localhost`, RFC 6762 `local`, RFC 8375
 * `home.arpa`, ICANN's reserved `internal`): an attacker cannot point them anywhere.
 */
const PRIVATE_SUFFIXES = [".localhost", ".local", ".internal", ".home.arpa"];

/** Which `Host` names a request may use. */
export interface HostPolicy {
  /** Any host at all (`COORDINATOR_ALLOWED_HOSTS=*`). */
  any: boolean;
  /** Exact names, lower case, without a trailing dot. */
  names: Set<string>;
  /** Configured globs such as `*.example.com`. */
  patterns: RegExp[];
}

function globToRegExp(glob: string): RegExp {
  const escaped = glob.replace(/[.+?^${}()|[\]\\]/g, "\\$&").replace(/\*/g, ".*");
  return new RegExp(`^${escaped}$`, "i");
}

function normalize(name: string): string {
  return name.trim().toLowerCase().replace(/\.$/, "");
}

/**
 * The allow-list from the settings: this machine's host name, the listen address when it is a
 * name, and `COORDINATOR_ALLOWED_HOSTS` (names or globs; `*` allows any host).
 */
export function hostPolicy(
  config: { host: string; allowedHosts: string[] },
  options: { hostname?: string } = {},
): HostPolicy {
  const names = new Set<string>();
  let machine = options.hostname;
  if (machine === undefined) {
    try {
      machine = osHostname();
    } catch {
      machine = ""; // without --allow-sys: only the other rules apply
    }
  }
  if (machine) names.add(normalize(machine));
  if (!isIP(config.host)) names.add(normalize(config.host));
  const patterns: RegExp[] = [];
  let any = false;
  for (const entry of config.allowedHosts.map(normalize).filter(Boolean)) {
    if (entry === "*") any = true;
    else if (entry.includes("*")) patterns.push(globToRegExp(entry));
    else names.add(entry);
  }
  return { any, names, patterns };
}

/** The host part of a `Host` header value (`[::1]:8080` → `::1`), lower case, no trailing dot. */
export function hostOf(header: string): string {
  const h = header.trim();
  if (h.startsWith("[")) {
    const end = h.indexOf("]");
    return end === -1 ? h.toLowerCase() : h.slice(1, end).toLowerCase();
  }
  const colon = h.lastIndexOf(":");
  const name = colon !== -1 && h.indexOf(":") === colon ? h.slice(0, colon) : h;
  return normalize(name);
}

/**
 * Whether a `Host` header value may reach the coordinator. Allowed: no header; IP addresses (a
 * browser sends one only to a page whose own address it is, so it cannot be rebound); names
 * without a dot (`localhost`, `gpu-box`: public DNS has none); names under the private suffixes;
 * this machine's name; the listen name; the configured list.
 */
export function hostAllowed(header: string | undefined, policy: HostPolicy): boolean {
  if (policy.any || header === undefined || header === "") return true;
  const host = hostOf(header);
  if (isIP(host)) return true;
  if (!host.includes(".")) return true;
  if (PRIVATE_SUFFIXES.some((s) => host.endsWith(s))) return true;
  if (policy.names.has(host)) return true;
  return policy.patterns.some((p) => p.test(host));
}

/**
 * Whether a browser `Origin` is this server itself: it names the same host and port the request
 * was sent to, and that host is on the allow-list.
 */
export function ownOrigin(origin: string, host: string | undefined, policy: HostPolicy): boolean {
  if (host === undefined || !hostAllowed(host, policy)) return false;
  try {
    const from = new URL(origin);
    const to = new URL(`${from.protocol}//${host}`);
    // Ports compare with the scheme's default filled in (`Host: x:443` for `https://x`).
    return from.hostname === to.hostname && from.port === to.port;
  } catch {
    return false;
  }
}

/** Refuses requests whose `Host` is not on the allow-list, with 403 in the route's error shape. */
export function hostCheck(policy: HostPolicy): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    const host = c.req.header("host");
    if (hostAllowed(host, policy)) return await next();
    const message = `Host ${
      JSON.stringify(hostOf(host!).slice(0, 100))
    } is not allowed; add it to COORDINATOR_ALLOWED_HOSTS`;
    return errorFor(c, 403, message);
  };
}
