/**
 * Proxy loops made impossible. Every request a coordinator sends to an agent carries
 * `X-Coordinator-Hop`: the ids of the coordinators it already passed through, then its own. An
 * "agent" that is in fact a coordinator (this one, through a wrong address or port, or another
 * one that lists this one as its agent) passes the list on, so a request that comes back is
 * recognised by its own id and refused with 508 Loop Detected, and a chain longer than
 * {@linkcode MAX_HOPS} is refused too. Without this, a fan-out route (`/api/ps`) calling itself
 * would recurse until memory and descriptors ran out.
 */
import type { MiddlewareHandler } from "hono";
import { errorFor } from "./errors.ts";
import type { AppEnv } from "./env.ts";
import { MESSAGES } from "./messages.ts";

/** The request header listing the coordinators a request passed through, comma-separated. */
export const HOP_HEADER = "x-coordinator-hop";
/** On a 508 for a request that came back: the id of the coordinator that refused it. */
export const INSTANCE_HEADER = "x-coordinator-instance";
/** Coordinators a request may pass through before it is taken for a loop. */
export const MAX_HOPS = 8;

/** The coordinators a request passed through, oldest first. */
export function hopsOf(headers: Headers): string[] {
  const value = headers.get(HOP_HEADER);
  if (!value) return [];
  return value.split(",").map((h) => h.trim()).filter(Boolean);
}

/**
 * The `X-Coordinator-Hop` value for a request this coordinator sends to an agent: the hops of the
 * client request it serves (none for its own background requests), then its own id.
 */
export function nextHops(instanceId: string, incoming?: Headers): string {
  const before = incoming?.get(HOP_HEADER);
  return before ? `${before}, ${instanceId}` : instanceId;
}

/** Refuses, with 508 in the route's error shape, a request that looped or hopped too often. */
export function loopGuard(instanceId: string): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    // Nearly every request comes straight from a client: one header lookup and on.
    if (c.req.raw.headers.get(HOP_HEADER) === null) return await next();
    const hops = hopsOf(c.req.raw.headers);
    const self = hops.includes(instanceId);
    if (!self && hops.length < MAX_HOPS) return await next();
    const message = self ? MESSAGES.loopDetected : MESSAGES.tooManyHops(MAX_HOPS);
    const headers: Record<string, string> = self ? { [INSTANCE_HEADER]: instanceId } : {};
    return errorFor(c, 508, message, headers);
  };
}

/**
 * Whether the server at `baseUrl` is this coordinator itself: asked for its version with this
 * coordinator's own hop, it refuses the request as a loop and names this instance. Anything else
 * (an Ollama, another coordinator, no answer) is not this coordinator.
 */
export async function isSelf(
  baseUrl: string,
  instanceId: string,
  options: { timeoutMs: number },
): Promise<boolean> {
  try {
    const res = await fetch(`${baseUrl}/api/version`, {
      headers: { [HOP_HEADER]: instanceId },
      signal: AbortSignal.timeout(options.timeoutMs),
    });
    await res.body?.cancel();
    return res.status === 508 && res.headers.get(INSTANCE_HEADER) === instanceId;
  } catch {
    return false;
  }
}
