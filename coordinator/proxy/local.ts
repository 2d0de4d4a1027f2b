/**
 * Server-local routes: models live on one agent's disk, so pull, push, create, blobs, copy and
 * delete go to chosen agents rather than through the scheduler's inference path.
 */
import { ollamaErrorBody } from "@oc/shared";
import type { Agent, Registry } from "../fleet/registry.ts";

/** Sends one request to one agent and pipes its answer back (no retry: it changes state). */
export async function forwardTo(
  registry: Registry,
  agent: Agent,
  req: {
    path: string;
    method: string;
    headers?: HeadersInit;
    body: BodyInit | null;
    signal: AbortSignal;
    requestId: string;
  },
  onEnd?: () => void | Promise<void>,
): Promise<Response> {
  const name = registry.label(agent);
  let res: Response;
  agent.inFlight++;
  let ended = false;
  const end = async () => {
    if (ended) return;
    ended = true;
    agent.inFlight = Math.max(0, agent.inFlight - 1);
    await onEnd?.();
  };
  try {
    res = await fetch(agent.baseUrl + req.path, {
      method: req.method,
      headers: req.headers,
      body: req.body,
      signal: req.signal,
    });
  } catch (e) {
    void end();
    if (req.signal.aborted) throw e;
    return new Response(ollamaErrorBody(`agent "${name}" is unreachable`), {
      status: 502,
      headers: { "content-type": "application/json; charset=utf-8", "x-request-id": req.requestId },
    });
  }
  const headers = new Headers(res.headers);
  for (const h of ["connection", "keep-alive", "transfer-encoding", "date", "server"]) {
    headers.delete(h);
  }
  headers.set("x-coordinator-agent", name);
  headers.set("x-request-id", req.requestId);
  if (!res.body) {
    await end();
    return new Response(null, { status: res.status, headers });
  }
  const body = res.body.pipeThrough(
    holdLastChunk(end),
    { signal: req.signal },
  );
  // A client that leaves: the pipe's signal ends the upstream read; count it released.
  req.signal.addEventListener("abort", () => void end(), { once: true });
  return new Response(body, { status: res.status, headers });
}

/** One agent's answer to a fanned-out request. */
export interface FanResult {
  agent: Agent;
  status: number;
  text: string;
}

/** Sends the same request to several agents at once and collects their answers. */
export function fanOut(
  agents: Agent[],
  req: { path: string; method: string; body?: string; timeoutMs: number },
): Promise<FanResult[]> {
  return Promise.all(agents.map(async (agent) => {
    try {
      const res = await fetch(agent.baseUrl + req.path, {
        method: req.method,
        headers: req.body ? { "content-type": "application/json" } : undefined,
        body: req.body,
        signal: AbortSignal.timeout(req.timeoutMs),
      });
      return { agent, status: res.status, text: await res.text() };
    } catch (e) {
      // Never pass the fetch error on: it names the agent's address.
      const timedOut = e instanceof DOMException && e.name === "TimeoutError";
      return { agent, status: 0, text: timedOut ? "timed out" : "unreachable" };
    }
  }));
}

/** Asks an agent's Ollama what it has installed and loaded now, and records it. */
export async function refreshModels(
  registry: Registry,
  agent: Agent,
  timeoutMs = 5000,
): Promise<void> {
  const [[tags], [ps]] = await Promise.all([
    fanOut([agent], { path: "/api/tags", method: "GET", timeoutMs }),
    fanOut([agent], { path: "/api/ps", method: "GET", timeoutMs }),
  ]);
  try {
    const models = tags.status === 200 ? JSON.parse(tags.text).models ?? [] : agent.models;
    const loaded = ps.status === 200 ? JSON.parse(ps.text).models ?? [] : agent.loadedModels;
    registry.setModels(agent, models, loaded);
    registry.touch(agent);
  } catch {
    // A malformed answer leaves the last known lists in place.
  }
}

/**
 * Passes chunks through one behind, and sends the last one only after `onEnd` finished: the
 * final line of a pull (`success`) then reaches the client after the model lists were
 * refreshed, so a client that lists right after a pull sees the new model.
 */
function holdLastChunk(onEnd: () => Promise<void>): TransformStream<Uint8Array, Uint8Array> {
  let held: Uint8Array | undefined;
  return new TransformStream({
    transform(chunk, controller) {
      if (held) controller.enqueue(held);
      held = chunk;
    },
    async flush(controller) {
      await onEnd();
      if (held) controller.enqueue(held);
    },
  });
}
