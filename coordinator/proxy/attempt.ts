/**
 * One attempt at an inference request on one agent, top to bottom: send the client's bytes, turn
 * away an answer another agent should give instead (busy, lacks the model, failed), then read a
 * buffered answer whole, or wait for a stream's first chunk and hand the rest to the relay
 * (`relay.ts`). While the client has received nothing, a failure throws
 * {@linkcode AttemptError} and the retry loop (`mod.ts`) tries another agent.
 */
import type { Agent } from "../fleet/registry.ts";
import { probeOllama } from "../health/monitor.ts";
import { errorResponse } from "../http/errors.ts";
import { nextHops } from "../http/loop.ts";
import { MESSAGES } from "../http/messages.ts";
import type { Lease, Outcome } from "../scheduler/mod.ts";
import { clientResponseHeaders, upstreamRequestHeaders } from "./headers.ts";
import { INFERENCE_BODY_LIMIT } from "./parse.ts";
import { relay, type RelayResult } from "./relay.ts";
import type { LogEntry, ProxyDeps, ProxyRequest } from "./request.ts";
import { describeUpstreamError, isCut, UpstreamError, type UpstreamResponse } from "./upstream.ts";
import { readUsage, type Usage } from "./usage.ts";
import type { Watch } from "./watchdog.ts";

/** A failed attempt that may be retried on another agent. */
export class AttemptError extends Error {
  constructor(message: string, readonly outcome: Outcome["result"], readonly status = 502) {
    super(message);
  }
}

/** Largest error body read from an agent to quote its message. */
const ERROR_BODY_LIMIT = 64 * 1024;

/**
 * Largest non-streaming answer passed on (it is held whole before it is sent): the same bound as
 * a request body. A larger one fails the request with a 502 and drops the agent's connection.
 */
export const ANSWER_LIMIT = INFERENCE_BODY_LIMIT;

/** Makes one attempt on the leased agent (see the module doc). */
export function attempt(
  deps: ProxyDeps,
  req: ProxyRequest,
  options: { lease: Lease; entry: LogEntry },
): Promise<Response> {
  return new Attempt(deps, req, options).run();
}

class Attempt {
  readonly #deps: ProxyDeps;
  readonly #req: ProxyRequest;
  readonly #lease: Lease;
  readonly #entry: LogEntry;
  readonly #agent: Agent;
  readonly #name: string;
  /** Aborts the upstream request: the client left, or a time limit passed. */
  readonly #upstream = new AbortController();
  readonly #sentAt: number;
  #firstByte: Watch;
  /** Whether the first byte came or the attempt ended: the first-byte limit no longer applies. */
  #settled = false;
  #ended = false;

  constructor(deps: ProxyDeps, req: ProxyRequest, options: { lease: Lease; entry: LogEntry }) {
    this.#deps = deps;
    this.#req = req;
    this.#lease = options.lease;
    this.#entry = options.entry;
    this.#agent = options.lease.agent;
    this.#name = deps.registry.label(this.#agent);
    req.signal.addEventListener("abort", this.#onClientAbort, { once: true });
    this.#firstByte = deps.watchdog.watch(this.#firstByteMs, this.#onFirstByteTimeout);
    this.#sentAt = deps.now();
  }

  async run(): Promise<Response> {
    try {
      const res = await this.#send();
      await this.#turnAway(res);
      const headers = clientResponseHeaders(res.headers, {
        agentName: this.#name,
        requestId: this.#req.requestId,
      });
      const ok = res.status >= 200 && res.status < 300;
      // Buffered: a client that asked for one JSON object gets it whole, or a retry elsewhere.
      if (!ok || !this.#req.stream) return await this.#buffered(res, headers);
      return await this.#streamed(res, headers);
    } catch (e) {
      return this.#settle(e);
    }
  }

  /** Sends the client's bytes; resolves with the answer's head. */
  async #send(): Promise<UpstreamResponse> {
    const req = this.#req;
    try {
      return await this.#deps.upstream.request({
        baseUrl: this.#agent.baseUrl,
        method: req.method,
        path: req.upstreamPath,
        headers: upstreamRequestHeaders(req.headers, nextHops(this.#deps.instanceId, req.headers)),
        body: req.body,
        signal: this.#upstream.signal,
      });
    } catch (e) {
      if (req.signal.aborted || isCut(e)) throw e;
      throw new AttemptError(
        `agent "${this.#name}" ${describeUpstreamError(this.#upstream.signal.reason ?? e)}`,
        "failed",
      );
    }
  }

  /** Throws for an answer another agent should give: busy, lacks the model, or failed. */
  async #turnAway(res: UpstreamResponse): Promise<void> {
    const name = this.#name;
    if (res.status === 503 || res.status === 429) {
      await discard(res);
      throw new AttemptError(`agent "${name}" is busy`, "busy", 503);
    }
    const others = () =>
      this.#deps.scheduler.candidates(this.#req.model, { exclude: this.#entry.tried }).length;
    if (res.status === 404 && others() > 0) {
      await discard(res);
      throw new AttemptError(`agent "${name}" does not have the model`, "ok", 404);
    }
    if (res.status >= 500) {
      const text = await res.readAll(ERROR_BODY_LIMIT).then((b) => new TextDecoder().decode(b))
        .catch(() => "");
      throw new AttemptError(
        MESSAGES.agentFailed(name, upstreamMessage(text) ?? String(res.status)),
        "failed",
        res.status,
      );
    }
  }

  /** A non-streaming answer (or an error), read whole and sent with its length. */
  async #buffered(res: UpstreamResponse, headers: [string, string][]): Promise<Response> {
    let bytes: Uint8Array<ArrayBuffer>;
    try {
      bytes = await res.readAll(ANSWER_LIMIT);
    } catch (e) {
      if (this.#req.signal.aborted || isCut(e)) throw e;
      if (e instanceof UpstreamError && e.kind === "limit") return this.#tooLarge();
      throw new AttemptError(
        `agent "${this.#name}" ${describeUpstreamError(e)} while answering`,
        "failed",
      );
    }
    const ok = res.status >= 200 && res.status < 300;
    const usage = ok ? readUsage([bytes]) : {};
    if (ok && this.#req.echo) bytes = this.#req.echo.whole(bytes);
    const outcome = outcomeOf(usage, this.#sentAt, this.#deps.now());
    this.#end(outcome);
    this.#entry.write({
      status: res.status,
      ...this.#served(),
      queued_ms: this.#lease.queuedMs,
      ...usageFields(usage, outcome),
      error: ok ? null : upstreamMessage(new TextDecoder().decode(bytes)) ?? `HTTP ${res.status}`,
    });
    headers.push(["content-length", String(bytes.byteLength)]);
    return new Response(bytes, { status: res.status, headers });
  }

  /**
   * An answer past {@linkcode ANSWER_LIMIT}: its connection is already dropped. Not retried, as
   * another agent would give as much; the agent is not to blame either.
   */
  #tooLarge(): Response {
    const message = MESSAGES.answerTooLarge(this.#name, ANSWER_LIMIT);
    this.#end({ result: "ok" });
    this.#entry.write({
      status: 502,
      ...this.#served(),
      queued_ms: this.#lease.queuedMs,
      error: message,
    });
    return errorResponse(this.#req.flavor, 502, message, this.#req.requestId);
  }

  /** A stream: the first chunk is awaited (a failure before it can still be retried), then relayed. */
  async #streamed(res: UpstreamResponse, headers: [string, string][]): Promise<Response> {
    let first: Uint8Array | null;
    try {
      first = await res.read();
    } catch (e) {
      if (this.#req.signal.aborted || isCut(e)) throw e;
      const why = describeUpstreamError(this.#upstream.signal.reason ?? e);
      throw new AttemptError(`agent "${this.#name}" ${why} before answering`, "failed");
    }
    this.#settled = true;
    this.#firstByte.stop();
    // No other attempt can follow once the answer streams: the body (a prompt with its chat
    // history) is let go rather than held for as long as the stream lasts.
    this.#req.body = null;
    // Time to first token as the client sees it: queueing and failed attempts included.
    const ttftMs = this.#deps.now() - this.#entry.started;
    const upstream = this.#upstream;
    const body = relay({
      reader: res,
      first,
      upstream,
      flavor: this.#req.flavor,
      idle: this.#deps.watchdog.watch(
        this.#deps.config.idleTimeout * 1000,
        () => upstream.abort(new DOMException("Stream went silent", "TimeoutError")),
      ),
      agentName: this.#name,
      rewrite: this.#req.echo?.stream(),
    }, (result) => this.#streamEnded(result, { status: res.status, ttftMs }));
    return new Response(body, { status: res.status, headers });
  }

  #streamEnded(result: RelayResult, at: { status: number; ttftMs: number }): void {
    const outcome: Outcome = result.error
      ? { result: result.clientGone || result.cut ? "ok" : "failed" }
      : { ...outcomeOf(result.usage, this.#sentAt, this.#deps.now()), ttftMs: at.ttftMs };
    this.#end(outcome);
    this.#entry.write({
      status: result.clientGone ? 499 : at.status,
      ...this.#served(),
      ttft_ms: at.ttftMs,
      queued_ms: this.#lease.queuedMs,
      ...usageFields(result.usage, outcome),
      error: result.error ?? null,
    });
  }

  /** How an attempt that threw ends: retried elsewhere, or answered here (cut, client gone). */
  #settle(e: unknown): Response {
    if (e instanceof AttemptError) {
      this.#end({ result: e.outcome });
      throw e;
    }
    this.#end({ result: "ok" });
    const req = this.#req;
    if (isCut(e)) {
      this.#entry.write({ status: 503, ...this.#served(), error: e.message });
      return errorResponse(req.flavor, 503, e.message, req.requestId, { "retry-after": "5" });
    }
    if (req.signal.aborted) {
      this.#entry.write({ status: 499, ...this.#served(), error: MESSAGES.clientClosed });
      return errorResponse(req.flavor, 499, MESSAGES.clientClosed, req.requestId);
    }
    throw e;
  }

  /** Ends the attempt, once: the scheduler gets its slot and outcome back. */
  #end(outcome: Outcome): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#settled = true;
    this.#firstByte.stop();
    this.#req.signal.removeEventListener("abort", this.#onClientAbort);
    this.#deps.scheduler.release(this.#lease, outcome, this.#req.affinity);
    this.#deps.registry.touch(this.#agent);
  }

  /** The request-log fields naming who served the attempt. */
  #served() {
    return { agent_id: this.#agent.id, agent_name: this.#name };
  }

  readonly #onClientAbort = () => this.#upstream.abort(this.#req.signal.reason);

  get #firstByteMs(): number {
    return this.#deps.config.firstByteTimeout * 1000;
  }

  /**
   * No first byte in time: a stream gives up. A non-streaming answer only comes when the whole
   * generation is done, so it waits on while the agent's Ollama still answers a probe.
   */
  readonly #onFirstByteTimeout = async () => {
    const probeMs = this.#deps.config.probeTimeout * 1000;
    if (!this.#req.stream && await probeOllama(this.#agent, probeMs)) {
      if (!this.#settled) {
        this.#firstByte = this.#deps.watchdog.watch(this.#firstByteMs, this.#onFirstByteTimeout);
      }
      return;
    }
    if (!this.#settled) {
      this.#upstream.abort(new DOMException("First byte timed out", "TimeoutError"));
    }
  };
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

/** Reads away a small unwanted answer so its connection can be kept; else drops it. */
async function discard(res: UpstreamResponse): Promise<void> {
  await res.readAll(ERROR_BODY_LIMIT).catch(() => {});
}
