/**
 * Forwarding one inference request: an agent from the scheduler, one upstream fetch with the
 * client's original bytes, the answer piped back unbuffered, a retry on another agent while the
 * client has received nothing, and the outcome fed back to the scheduler and the request log.
 */
import { ollamaErrorBody, openaiErrorBody } from "@oc/shared";
import type { AppContext } from "../context.ts";
import { type Lease, NoAgentError, type Outcome } from "../scheduler/mod.ts";
import type { RequestLog } from "../telemetry/request_log.ts";
import { errorResponse, type Flavor } from "../http/errors.ts";
import { readUsage, type Usage } from "./usage.ts";
import { UpstreamError, type UpstreamResponse } from "./upstream.ts";
import { probeOllama } from "../health/monitor.ts";
import type { Watch } from "./watchdog.ts";

/** Everything the proxy needs to know about one client request. */
export interface ProxyRequest {
  /** Client route, e.g. `/api/chat`. */
  route: string;
  /** Path and query to send upstream. */
  upstreamPath: string;
  method: string;
  headers: Headers;
  /** The client's body, forwarded byte for byte. */
  body: Uint8Array<ArrayBuffer> | null;
  model: string;
  /** Whether the answer streams (NDJSON or SSE). */
  stream: boolean;
  flavor: Flavor;
  requestId: string;
  /** Aborted when the client goes away. */
  signal: AbortSignal;
  affinity?: string;
  agentId?: string;
  /** The client's API key id, for fair queueing between keys. */
  tenant?: string;
}

/** Dependencies of the proxy. */
export interface ProxyDeps
  extends Pick<AppContext, "scheduler" | "registry" | "config" | "now" | "upstream" | "watchdog"> {
  log?: RequestLog;
}

const FORWARDED_REQUEST_HEADERS = ["content-type", "accept", "user-agent"];
const DROPPED_RESPONSE_HEADERS = new Set([
  "connection",
  "keep-alive",
  "transfer-encoding",
  "content-length",
  "date",
  "server",
]);

/** Headers sent upstream: only what Ollama reads; never the client's credentials. */
function upstreamHeaders(h: Headers): [string, string][] {
  const out: [string, string][] = [];
  for (const name of FORWARDED_REQUEST_HEADERS) {
    const v = h.get(name);
    if (v !== null) out.push([name, v]);
  }
  return out;
}

function responseHeaders(
  upstream: [string, string][],
  agentName: string,
  requestId: string,
): Headers {
  const h = new Headers();
  for (const [name, value] of upstream) {
    if (!DROPPED_RESPONSE_HEADERS.has(name)) h.append(name, value);
  }
  h.set("x-coordinator-agent", agentName);
  h.set("x-request-id", requestId);
  return h;
}

/** A failed attempt that may be retried on another agent. */
class AttemptError extends Error {
  constructor(message: string, readonly outcome: Outcome["result"], readonly status = 502) {
    super(message);
  }
}

function describeUpstreamError(e: unknown): string {
  if (e instanceof DOMException && e.name === "TimeoutError") return "timed out";
  if (e instanceof UpstreamError) {
    if (e.kind === "cut") return e.message;
    return e.kind === "refused"
      ? "connection refused"
      : e.kind === "lost"
      ? "connection lost"
      : `answered with broken HTTP (${e.message})`;
  }
  const msg = e instanceof Error ? e.message : String(e);
  if (/refused/i.test(msg)) return "connection refused";
  if (/reset|closed|broken pipe|EOF/i.test(msg)) return "connection lost";
  return "unreachable";
}

/** Proxies an inference request, retrying on other agents before the first byte. */
export async function proxyInference(deps: ProxyDeps, req: ProxyRequest): Promise<Response> {
  const { scheduler, registry, config } = deps;
  const started = deps.now();
  const tried = new Set<string>();
  let lastError: { status: number; message: string } | null = null;
  const maxAttempts = config.maxAttempts;
  const record = (r: Partial<Parameters<RequestLog["add"]>[0]> & { status: number }) =>
    deps.log?.add({
      id: req.requestId,
      at: new Date(started).toISOString(),
      route: req.route,
      model: req.model,
      agent_id: null,
      agent_name: null,
      latency_ms: deps.now() - started,
      ttft_ms: null,
      queued_ms: null,
      tokens_in: null,
      tokens_out: null,
      tokens_per_second: null,
      attempts: tried.size,
      error: null,
      ...r,
    });

  for (let attempt = 0; attempt < maxAttempts; attempt++) {
    let lease: Lease;
    try {
      lease = await scheduler.acquire(req.model, {
        exclude: tried,
        signal: req.signal,
        affinity: req.affinity,
        agentId: req.agentId,
        tenant: req.tenant,
      });
    } catch (e) {
      if (req.signal.aborted) {
        record({ status: 499, error: "Client closed the request while it was queued" });
        return errorResponse(req.flavor, 499, "Client closed the request", req.requestId);
      }
      if (!(e instanceof NoAgentError)) throw e;
      // After failed attempts, the client learns why those failed rather than "no agent".
      const status = lastError && e.status !== 404 ? 503 : e.status;
      const message = lastError && e.status !== 404
        ? `All agents failed to serve "${req.model}": ${lastError.message}`
        : e.message;
      record({ status, error: message });
      const headers: HeadersInit = e.retryAfter ? { "retry-after": String(e.retryAfter) } : {};
      return errorResponse(req.flavor, status, message, req.requestId, headers);
    }
    const { agent } = lease;
    tried.add(agent.id);
    const agentName = registry.label(agent);
    const upstream = new AbortController();
    const onClientAbort = () => upstream.abort(req.signal.reason);
    req.signal.addEventListener("abort", onClientAbort, { once: true });
    // No first byte in time: a stream gives up. A non-streaming answer only comes when the whole
    // generation is done, so it waits on while the agent's Ollama still answers a probe.
    let settled = false;
    const firstByteMs = config.firstByteTimeout * 1000;
    const onFirstByteTimeout = async () => {
      if (!req.stream && await probeOllama(agent, config.probeTimeout * 1000)) {
        if (!settled) firstByte = deps.watchdog.watch(firstByteMs, onFirstByteTimeout);
        return;
      }
      if (!settled) upstream.abort(new DOMException("First byte timed out", "TimeoutError"));
    };
    let firstByte = deps.watchdog.watch(firstByteMs, onFirstByteTimeout);
    const sentAt = deps.now();
    const done = (outcome: Outcome) => {
      settled = true;
      firstByte.stop();
      req.signal.removeEventListener("abort", onClientAbort);
      scheduler.release(lease, outcome, req.affinity);
      registry.touch(agent);
    };
    try {
      let res: UpstreamResponse;
      try {
        res = await deps.upstream.request({
          baseUrl: agent.baseUrl,
          method: req.method,
          path: req.upstreamPath,
          headers: upstreamHeaders(req.headers),
          body: req.body,
          signal: upstream.signal,
        });
      } catch (e) {
        if (req.signal.aborted || isCut(e)) throw e;
        throw new AttemptError(
          `agent "${agentName}" ${describeUpstreamError(upstream.signal.reason ?? e)}`,
          "failed",
        );
      }
      if (res.status === 503 || res.status === 429) {
        await discard(res);
        throw new AttemptError(`agent "${agentName}" is busy`, "busy", 503);
      }
      if (res.status === 404 && scheduler.candidates(req.model, { exclude: tried }).length > 0) {
        await discard(res);
        throw new AttemptError(`agent "${agentName}" does not have the model`, "ok", 404);
      }
      if (res.status >= 500) {
        const text = await res.readAll(ERROR_BODY_LIMIT).then((b) => new TextDecoder().decode(b))
          .catch(() => "");
        throw new AttemptError(
          `agent "${agentName}" failed: ${upstreamMessage(text) ?? res.status}`,
          "failed",
          res.status,
        );
      }
      const headers = responseHeaders(res.headers, agentName, req.requestId);
      const ok = res.status >= 200 && res.status < 300;
      if (!ok || !req.stream) {
        // Buffered: a client that asked for one JSON object gets it whole, or a retry elsewhere.
        let bytes: Uint8Array<ArrayBuffer>;
        try {
          bytes = await res.readAll();
        } catch (e) {
          if (req.signal.aborted || isCut(e)) throw e;
          throw new AttemptError(
            `agent "${agentName}" ${describeUpstreamError(e)} while answering`,
            "failed",
          );
        }
        const usage = ok ? readUsage([bytes]) : {};
        const outcome = outcomeOf(usage, sentAt, deps.now());
        done(outcome);
        record({
          status: res.status,
          agent_id: agent.id,
          agent_name: agentName,
          queued_ms: lease.queuedMs,
          ...usageFields(usage, outcome),
          error: ok
            ? null
            : upstreamMessage(new TextDecoder().decode(bytes)) ?? `HTTP ${res.status}`,
        });
        headers.set("content-length", String(bytes.byteLength));
        return new Response(bytes, { status: res.status, headers });
      }
      // Streaming: wait for the first chunk so a failure before it can still be retried.
      const reader = res;
      let first: Uint8Array | null;
      try {
        first = await reader.read();
      } catch (e) {
        if (req.signal.aborted || isCut(e)) throw e;
        throw new AttemptError(
          `agent "${agentName}" ${
            describeUpstreamError(upstream.signal.reason ?? e)
          } before answering`,
          "failed",
        );
      }
      settled = true;
      firstByte.stop();
      // Time to first token as the client sees it: queueing and failed attempts included.
      const ttftMs = deps.now() - started;
      return new Response(
        pipe(
          {
            reader,
            first,
            upstream,
            req,
            idle: deps.watchdog.watch(
              config.idleTimeout * 1000,
              () => upstream.abort(new DOMException("Stream went silent", "TimeoutError")),
            ),
            agentName,
          },
          (result) => {
            const outcome: Outcome = result.error
              ? { result: result.clientGone || result.cut ? "ok" : "failed" }
              : { ...outcomeOf(result.usage, sentAt, deps.now()), ttftMs };
            done(outcome);
            record({
              status: result.clientGone ? 499 : res.status,
              agent_id: agent.id,
              agent_name: agentName,
              ttft_ms: ttftMs,
              queued_ms: lease.queuedMs,
              ...usageFields(result.usage, outcome),
              error: result.error ?? null,
            });
          },
        ),
        { status: res.status, headers },
      );
    } catch (e) {
      if (e instanceof AttemptError) {
        done({ result: e.outcome });
        lastError = { status: e.status, message: e.message };
        if (e.outcome === "failed") {
          registry.recordEvent(
            "failure",
            agent.id,
            `Request ${req.requestId} failed on ${e.message}` +
              (attempt + 1 < maxAttempts ? "; retrying elsewhere" : "; no attempts left"),
          );
        }
        continue;
      }
      done({ result: "ok" });
      if (isCut(e)) {
        record({ status: 503, agent_id: agent.id, agent_name: agentName, error: e.message });
        return errorResponse(req.flavor, 503, e.message, req.requestId, { "retry-after": "5" });
      }
      if (req.signal.aborted) {
        record({
          status: 499,
          agent_id: agent.id,
          agent_name: agentName,
          error: "Client closed the request",
        });
        return errorResponse(req.flavor, 499, "Client closed the request", req.requestId);
      }
      throw e;
    }
  }
  const message = `All agents failed to serve "${req.model}": ${
    lastError?.message ?? "no attempt succeeded"
  }`;
  record({ status: 503, error: message });
  return errorResponse(req.flavor, 503, message, req.requestId, { "retry-after": "5" });
}

/** The message inside an Ollama or OpenAI error body, if any. */
function upstreamMessage(text: string): string | null {
  try {
    const v = JSON.parse(text);
    if (typeof v?.error === "string") return v.error;
    if (typeof v?.error?.message === "string") return v.error.message;
  } catch { /* not JSON */ }
  return null;
}

function outcomeOf(usage: Usage, sentAt: number, now: number): Outcome {
  let tps: number | undefined;
  if (usage.evalCount && usage.evalDurationNs) tps = usage.evalCount / (usage.evalDurationNs / 1e9);
  else if (usage.completionTokens) {
    tps = usage.completionTokens / Math.max((now - sentAt) / 1000, 0.001);
  }
  return { result: "ok", tokensPerSecond: tps, tokens: usage.completionTokens };
}

function usageFields(usage: Usage, outcome: Outcome) {
  return {
    tokens_in: usage.promptTokens ?? null,
    tokens_out: usage.completionTokens ?? null,
    tokens_per_second: outcome.tokensPerSecond ?? null,
  };
}

/** Largest error body read from an agent to quote its message. */
const ERROR_BODY_LIMIT = 64 * 1024;

/** Reads away a small unwanted answer so its connection can be kept; else drops it. */
async function discard(res: UpstreamResponse): Promise<void> {
  await res.readAll(ERROR_BODY_LIMIT).catch(() => {});
}

interface PipeInput {
  reader: UpstreamResponse;
  first: Uint8Array | null;
  upstream: AbortController;
  req: ProxyRequest;
  /** The silence limit: paused while the client has not asked for more, stopped at the end. */
  idle: Watch;
  agentName: string;
}

interface PipeResult {
  usage: Usage;
  error?: string;
  clientGone?: boolean;
  /** The coordinator cut the stream (shutdown): not the agent's fault. */
  cut?: boolean;
}

/** Whether the coordinator itself cut the upstream request (see `UpstreamClient.cutAll`). */
function isCut(e: unknown): e is UpstreamError {
  return e instanceof UpstreamError && e.kind === "cut";
}

/**
 * The client's body: upstream chunks passed through as they come. The last two chunks are kept
 * to read the final usage figures once; nothing is parsed per chunk. An upstream failure ends
 * the stream with the API's in-stream error; a client that leaves aborts the upstream request.
 */
function pipe(input: PipeInput, onEnd: (r: PipeResult) => void): ReadableStream<Uint8Array> {
  const { reader, upstream, req } = input;
  let prev: Uint8Array | undefined;
  let last: Uint8Array | undefined;
  let finished = false;
  const { idle } = input;
  idle.pause();
  const finish = (r: Omit<PipeResult, "usage">) => {
    if (finished) return;
    finished = true;
    idle.stop();
    const usage = readUsage([prev, last]);
    // A /v1 stream without `include_usage` states no counts: one event per token, less the
    // closing event and `[DONE]`, is what Ollama sends.
    if (sse && usage.completionTokens === undefined && sse.events >= 2) {
      usage.completionTokens = sse.events - 2;
    }
    onEnd({ ...r, usage });
  };
  const sse = req.flavor === "openai" ? { events: 0, lastByte: 0 } : undefined;
  const take = (chunk: Uint8Array) => {
    prev = last;
    last = chunk;
    if (sse) countEvents(sse, chunk);
  };
  return new ReadableStream<Uint8Array>({
    start(controller) {
      if (input.first === null) {
        controller.close();
        finish({});
        return;
      }
      take(input.first);
      controller.enqueue(input.first);
    },
    async pull(controller) {
      try {
        // The silence timer runs only while waiting on the agent: a client that reads slowly
        // holds back the pulls and must not be taken for an agent that stopped answering.
        idle.restart();
        const value = await reader.read();
        idle.pause();
        if (value === null) {
          controller.close();
          finish({});
          return;
        }
        take(value);
        controller.enqueue(value);
      } catch (e) {
        if (finished) return;
        const why = upstream.signal.reason instanceof DOMException &&
            upstream.signal.reason.name === "TimeoutError"
          ? "stopped answering"
          : describeUpstreamError(e);
        const message = isCut(e)
          ? e.message
          : `agent "${input.agentName}" ${why} during the stream`;
        controller.enqueue(
          new TextEncoder().encode(inStreamError(req.flavor, message)),
        );
        controller.close();
        finish({ error: message, cut: isCut(e) });
      }
    },
    cancel(reason) {
      upstream.abort(reason);
      reader.cancel();
      finish({ error: "Client closed the request", clientGone: true });
    },
  }, { highWaterMark: 0 });
}

/** Counts SSE events (blank-line ends, also when split between pieces). */
function countEvents(state: { events: number; lastByte: number }, chunk: Uint8Array) {
  let prevByte = state.lastByte;
  for (let i = 0; i < chunk.length; i++) {
    const b = chunk[i];
    if (b === 10 && prevByte === 10) state.events++;
    if (b !== 13) prevByte = b;
  }
  state.lastByte = prevByte;
}

/** The line that ends a broken stream, in the client's API's shape. */
function inStreamError(flavor: Flavor, message: string): string {
  if (flavor === "openai") return `data: ${openaiErrorBody(500, message)}\n\n`;
  return `${ollamaErrorBody(message)}\n`;
}
