/**
 * Server-local routes: models live on one agent's disk, so pull, push, create, blobs, copy and
 * delete go to the agents the scheduler's placement chose rather than through the inference path.
 */
import { ollamaErrorBody } from "@oc/shared";
import type { Agent, Registry } from "../fleet/registry.ts";
import type { Scheduler } from "../scheduler/mod.ts";
import { HOP_HEADER, nextHops } from "../http/loop.ts";
import { MESSAGES } from "../http/messages.ts";
import { clientResponseHeaders } from "./headers.ts";

/** What {@linkcode forwardTo} and the fan-outs need from the context. */
export interface LocalDeps {
  registry: Registry;
  scheduler: Scheduler;
  /** This coordinator, named in the hop header so that a loop back to it is seen. */
  instanceId: string;
}

/** One request for {@linkcode forwardTo}. */
export interface ForwardRequest {
  path: string;
  method: string;
  headers?: Record<string, string>;
  body: BodyInit | null;
  /** The client's request: its abort ends the upstream request, its hops are passed on. */
  signal: AbortSignal;
  incoming?: Headers;
  requestId: string;
  /** Runs once the agent's answer has ended, before its last chunk reaches the client. */
  onEnd?: () => void | Promise<void>;
}

/** Sends one request to one agent and pipes its answer back (no retry: it changes state). */
export async function forwardTo(
  deps: LocalDeps,
  agent: Agent,
  req: ForwardRequest,
): Promise<Response> {
  const name = deps.registry.label(agent);
  const body = req.body instanceof ReadableStream ? watchBody(req.body) : undefined;
  const release = deps.scheduler.hold(agent);
  let ended = false;
  const end = async () => {
    if (ended) return;
    ended = true;
    release();
    await req.onEnd?.();
  };
  let res: Response;
  try {
    res = await fetch(agent.baseUrl + req.path, {
      method: req.method,
      headers: { ...req.headers, [HOP_HEADER]: nextHops(deps.instanceId, req.incoming) },
      body: body?.stream ?? req.body,
      signal: req.signal,
    });
  } catch (e) {
    void end();
    if (req.signal.aborted) throw e;
    // The client's upload broke off or was malformed: its fault, not the agent's.
    const [status, message] = body?.failed()
      ? [400, MESSAGES.bodyUnreadable]
      : [502, MESSAGES.agentUnreachable(name)];
    return new Response(ollamaErrorBody(message), {
      status,
      headers: { "content-type": "application/json; charset=utf-8", "x-request-id": req.requestId },
    });
  }
  const headers = clientResponseHeaders(res.headers, { agentName: name, requestId: req.requestId });
  if (!res.body) {
    await end();
    return new Response(null, { status: res.status, headers });
  }
  const piped = res.body.pipeThrough(holdLastChunk(end), { signal: req.signal });
  // A client that leaves: the pipe's signal ends the upstream read; count it released.
  req.signal.addEventListener("abort", () => void end(), { once: true });
  return new Response(piped, { status: res.status, headers });
}

/** A request body passed through, remembering whether reading it failed. */
function watchBody(source: ReadableStream<Uint8Array>) {
  let failed = false;
  const reader = source.getReader();
  const stream = new ReadableStream<Uint8Array>({
    async pull(controller) {
      let chunk: ReadableStreamReadResult<Uint8Array>;
      try {
        chunk = await reader.read();
      } catch (e) {
        failed = true;
        controller.error(e);
        return;
      }
      if (chunk.done) controller.close();
      else controller.enqueue(chunk.value);
    },
    cancel(reason) {
      return reader.cancel(reason);
    },
  }, { highWaterMark: 0 });
  return { stream, failed: () => failed };
}

/** One agent's answer to a fanned-out request. */
export interface FanResult {
  agent: Agent;
  status: number;
  text: string;
}

/** Largest answer read from one agent in a fan-out (model lists, a copy's or delete's reply). */
const FAN_OUT_ANSWER_LIMIT = 16 * 1024 * 1024;

/** A response's body as text, or null (and the body dropped) when it is larger than `limit`. */
async function readText(res: Response, limit: number): Promise<string | null> {
  if (!res.body) return "";
  const chunks: Uint8Array[] = [];
  let size = 0;
  for await (const chunk of res.body) {
    size += chunk.byteLength;
    if (size > limit) return null; // leaving the loop cancels the body
    chunks.push(chunk);
  }
  const decoder = new TextDecoder();
  return chunks.map((c, i) => decoder.decode(c, { stream: i < chunks.length - 1 })).join("");
}

/** Sends the same request to several agents at once and collects their answers. */
export function fanOut(
  deps: Pick<LocalDeps, "instanceId">,
  agents: readonly Agent[],
  req: { path: string; method: string; body?: string; timeoutMs: number; incoming?: Headers },
): Promise<FanResult[]> {
  const hops = nextHops(deps.instanceId, req.incoming);
  return Promise.all(agents.map(async (agent) => {
    try {
      const headers: Record<string, string> = { [HOP_HEADER]: hops };
      if (req.body) headers["content-type"] = "application/json";
      const res = await fetch(agent.baseUrl + req.path, {
        method: req.method,
        headers,
        body: req.body,
        signal: AbortSignal.timeout(req.timeoutMs),
      });
      const text = await readText(res, FAN_OUT_ANSWER_LIMIT);
      return text === null
        ? { agent, status: 0, text: "answered too much" }
        : { agent, status: res.status, text };
    } catch (e) {
      // Never pass the fetch error on: it names the agent's address.
      const timedOut = e instanceof DOMException && e.name === "TimeoutError";
      return { agent, status: 0, text: timedOut ? "timed out" : "unreachable" };
    }
  }));
}

/** Asks an agent's Ollama what it has installed and loaded now, and records it. */
export async function refreshModels(
  deps: Pick<LocalDeps, "registry" | "instanceId">,
  agent: Agent,
  timeoutMs = 5000,
): Promise<void> {
  const [[tags], [ps]] = await Promise.all([
    fanOut(deps, [agent], { path: "/api/tags", method: "GET", timeoutMs }),
    fanOut(deps, [agent], { path: "/api/ps", method: "GET", timeoutMs }),
  ]);
  try {
    const models = tags.status === 200 ? JSON.parse(tags.text).models ?? [] : agent.models;
    const loaded = ps.status === 200 ? JSON.parse(ps.text).models ?? [] : agent.loadedModels;
    deps.registry.setModels(agent, models, loaded);
    deps.registry.touch(agent);
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
