/**
 * The stream relay: an agent's streamed answer passed to the client as it comes, chunk for
 * chunk, with nothing parsed per chunk. Only the last two chunks are kept, to read the final
 * usage figures once (and, on Anthropic's API, the first, whose `message_start` states the input
 * tokens); an upstream failure ends the stream with the API's in-stream error; a client that
 * leaves aborts the upstream request.
 */
import { anthropicErrorBody, ollamaErrorBody, openaiErrorBody } from "@oc/shared";
import type { Flavor } from "../http/errors.ts";
import { MESSAGES } from "../http/messages.ts";
import { describeUpstreamError, isCut, type UpstreamResponse } from "./upstream.ts";
import { readUsage, type Usage } from "./usage.ts";
import type { Watch } from "./watchdog.ts";

/** What the relay reads from and reports to. */
export interface RelayInput {
  reader: UpstreamResponse;
  /** The first chunk, already read by the attempt (null: the body was empty). */
  first: Uint8Array | null;
  /** Aborted to stop the agent: the client left, or the stream went silent. */
  upstream: AbortController;
  flavor: Flavor;
  /** The silence limit: paused while the client has not asked for more, stopped at the end. */
  idle: Watch;
  agentName: string;
  /** Changes each chunk on its way (an alias's model name); `flush` gives what it held back. */
  rewrite?: ChunkRewriter;
}

/** A per-chunk byte rewrite of a stream, holding back at most a few bytes between chunks. */
export interface ChunkRewriter {
  chunk(bytes: Uint8Array): Uint8Array;
  flush(): Uint8Array;
}

/** How a relayed stream ended. */
export interface RelayResult {
  usage: Usage;
  error?: string;
  clientGone?: boolean;
  /** The coordinator cut the stream (shutdown): not the agent's fault. */
  cut?: boolean;
}

/** The client's body for a streamed answer; `onEnd` is called once when it ends, however. */
export function relay(
  input: RelayInput,
  onEnd: (r: RelayResult) => void,
): ReadableStream<Uint8Array> {
  const { reader, upstream, idle, flavor, rewrite } = input;
  let prev: Uint8Array | undefined;
  let last: Uint8Array | undefined;
  let finished = false;
  idle.pause();
  const sse = flavor === "openai" ? { events: 0, lastByte: 0 } : undefined;
  // Anthropic's `message_start` (the first event) is where the input tokens are sure to be.
  const headPrompt = flavor === "anthropic" && input.first
    ? readUsage([input.first]).promptTokens
    : undefined;
  const finish = (r: Omit<RelayResult, "usage">) => {
    if (finished) return;
    finished = true;
    idle.stop();
    const usage = readUsage([prev, last]);
    usage.promptTokens ??= headPrompt;
    // A /v1 stream without `include_usage` states no counts: one event per token, less the
    // closing event and `[DONE]`, is what Ollama sends.
    if (sse && usage.completionTokens === undefined && sse.events >= 2) {
      usage.completionTokens = sse.events - 2;
    }
    onEnd({ ...r, usage });
  };
  const take = (chunk: Uint8Array) => {
    prev = last;
    last = chunk;
    if (sse) countEvents(sse, chunk);
  };
  const pass = (controller: ReadableStreamDefaultController<Uint8Array>, chunk: Uint8Array) => {
    const out = rewrite ? rewrite.chunk(chunk) : chunk;
    if (out.byteLength > 0) controller.enqueue(out);
  };
  const flush = (controller: ReadableStreamDefaultController<Uint8Array>) => {
    const rest = rewrite?.flush();
    if (rest && rest.byteLength > 0) controller.enqueue(rest);
  };
  return new ReadableStream<Uint8Array>({
    start(controller) {
      if (input.first === null) {
        controller.close();
        finish({});
        return;
      }
      take(input.first);
      pass(controller, input.first);
    },
    async pull(controller) {
      try {
        // The silence timer runs only while waiting on the agent: a client that reads slowly
        // holds back the pulls and must not be taken for an agent that stopped answering.
        idle.restart();
        const value = await reader.read();
        idle.pause();
        if (value === null) {
          flush(controller);
          controller.close();
          finish({});
          return;
        }
        take(value);
        pass(controller, value);
      } catch (e) {
        if (finished) return;
        const why = upstream.signal.reason instanceof DOMException &&
            upstream.signal.reason.name === "TimeoutError"
          ? "stopped answering"
          : describeUpstreamError(e);
        const message = isCut(e)
          ? e.message
          : `agent "${input.agentName}" ${why} during the stream`;
        flush(controller);
        const text = inStreamError(flavor, message, sseEnding([prev, last]));
        controller.enqueue(new TextEncoder().encode(text));
        controller.close();
        finish({ error: message, cut: isCut(e) });
      }
    },
    cancel(reason) {
      upstream.abort(reason);
      reader.cancel();
      finish({ error: MESSAGES.clientClosed, clientGone: true });
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

/**
 * What an SSE stream that ended with these chunks still needs to end its last event: nothing,
 * one line feed (it ended a line), or two (it broke off inside a line).
 */
function sseEnding(chunks: (Uint8Array | undefined)[]): string {
  let feeds = 0;
  for (let c = chunks.length - 1; c >= 0 && feeds < 2; c--) {
    const chunk = chunks[c];
    if (!chunk) continue;
    for (let i = chunk.length - 1; i >= 0; i--) {
      const b = chunk[i];
      if (b === 13) continue;
      if (b !== 10) return feeds === 0 ? "\n\n" : "\n";
      if (++feeds === 2) return "";
    }
  }
  return feeds === 1 ? "\n" : "";
}

/**
 * What ends a broken stream, in the client's API's shape: an NDJSON error line, an OpenAI error
 * event, or Anthropic's `error` event. An SSE stream cut inside an event first ends it, so the
 * error arrives as an event of its own.
 */
function inStreamError(flavor: Flavor, message: string, sseEnd: string): string {
  if (flavor === "openai") return `${sseEnd}data: ${openaiErrorBody(500, message)}\n\n`;
  if (flavor === "anthropic") {
    return `${sseEnd}event: error\ndata: ${anthropicErrorBody(500, message)}\n\n`;
  }
  return `${ollamaErrorBody(message)}\n`;
}
