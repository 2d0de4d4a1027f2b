/**
 * Forwarding one inference request: the retry loop. Each turn takes an agent from the scheduler
 * and makes one attempt on it (`attempt.ts`, which hands a streamed answer to `relay.ts`); a
 * failure before the client received anything is tried on another agent, up to `MAX_ATTEMPTS`.
 * Every attempt ends in `scheduler.release` exactly once, and the request gets one request-log
 * record.
 */
import type { Agent } from "../fleet/registry.ts";
import { errorResponse } from "../http/errors.ts";
import { MESSAGES } from "../http/messages.ts";
import { type Lease, NoAgentError } from "../scheduler/mod.ts";
import { attempt, AttemptError } from "./attempt.ts";
import { LogEntry, type ProxyDeps, type ProxyRequest } from "./request.ts";

export type { ProxyDeps, ProxyRequest } from "./request.ts";

/**
 * Proxies an inference request, retrying on other agents before the first byte. A request over
 * one of its API key's limits is refused first, with 429 and `Retry-After`.
 */
export async function proxyInference(deps: ProxyDeps, req: ProxyRequest): Promise<Response> {
  const entry = new LogEntry(deps, req);
  const admission = deps.quotas?.admit(req.tenant);
  if (admission && !admission.ok) {
    entry.write({ status: 429, error: admission.message });
    return errorResponse(req.flavor, 429, admission.message, req.requestId, {
      "retry-after": String(admission.retryAfter),
    });
  }
  if (admission) entry.admitted(admission);
  try {
    return await attempts(deps, req, entry);
  } catch (e) {
    entry.abandon();
    throw e;
  }
}

/** The retry loop: one attempt per agent, until one answers or none is left. */
async function attempts(deps: ProxyDeps, req: ProxyRequest, entry: LogEntry): Promise<Response> {
  const maxAttempts = deps.config.maxAttempts;
  let lastError: AttemptError | undefined;
  for (let n = 1; n <= maxAttempts; n++) {
    const lease = await acquire(deps, req, { entry, lastError });
    if (lease instanceof Response) return lease;
    entry.tried.add(lease.agent.id);
    try {
      return await attempt(deps, req, { lease, entry });
    } catch (e) {
      if (!(e instanceof AttemptError)) throw e;
      lastError = e;
      if (e.outcome === "failed") {
        recordFailure(deps, req, { agent: lease.agent, error: e, retrying: n < maxAttempts });
      }
    }
  }
  const message = MESSAGES.allFailed(req.model, lastError?.message ?? "no attempt succeeded");
  entry.write({ status: 503, error: message });
  return errorResponse(req.flavor, 503, message, req.requestId, { "retry-after": "5" });
}

/** An agent for the next attempt (waiting in the queue if need be), or the answer when none. */
async function acquire(
  deps: ProxyDeps,
  req: ProxyRequest,
  state: { entry: LogEntry; lastError?: AttemptError },
): Promise<Lease | Response> {
  const { entry, lastError } = state;
  try {
    return await deps.scheduler.acquire(req.model, {
      exclude: entry.tried,
      signal: req.signal,
      affinity: req.affinity,
      agentId: req.agentId,
      tenant: req.tenant,
    });
  } catch (e) {
    // Refused before any agent was tried: the key's requests per minute do not count it.
    if (entry.tried.size === 0 && (req.signal.aborted || e instanceof NoAgentError)) {
      entry.refund();
    }
    if (req.signal.aborted) {
      entry.write({ status: 499, error: MESSAGES.clientClosedWhileQueued });
      return errorResponse(req.flavor, 499, MESSAGES.clientClosed, req.requestId);
    }
    if (!(e instanceof NoAgentError)) throw e;
    if (e.status === 429) deps.quotas?.queueShareRefused(req.tenant);
    // After failed attempts, the client learns why those failed rather than "no agent".
    const afterFailures = lastError !== undefined && e.status !== 404;
    const status = afterFailures ? 503 : e.status;
    const message = afterFailures ? MESSAGES.allFailed(req.model, lastError.message) : e.message;
    entry.write({ status, error: message });
    const headers: HeadersInit = e.retryAfter ? { "retry-after": String(e.retryAfter) } : {};
    return errorResponse(req.flavor, status, message, req.requestId, headers);
  }
}

/** A `failure` event for an attempt that failed on an agent. */
function recordFailure(
  deps: ProxyDeps,
  req: ProxyRequest,
  failure: { agent: Agent; error: AttemptError; retrying: boolean },
): void {
  deps.registry.recordEvent(
    "failure",
    failure.agent.id,
    `Request ${req.requestId} failed on ${failure.error.message}` +
      (failure.retrying ? "; retrying elsewhere" : "; no attempts left"),
  );
}
