/**
 * The inference path shared by every API: busy fault → slot → model load → tokens paced at the
 * configured speed, written in the request's {@linkcode Shape}, streamed or whole.
 *
 * @module
 */
import { BusyError } from "./slots.ts";
import { dieAtChunk, wholeBody } from "./faults.ts";
import { type Ctx, encoder, HttpError, sleep } from "./http.ts";
import type { ModelEntry } from "./models.ts";
import type { Shape, Summary } from "./shapes.ts";
import type { SimState } from "./state.ts";
import { countTokens, embedText, type Plan } from "./text.ts";

/** One generation to run. */
export interface InferRequest {
  entry: ModelEntry;
  keepAliveMs: number | undefined;
  plan: Plan;
  promptTokens: number;
  stream: boolean;
  shape: Shape;
}

/** The installed model an inference names; 400 without a name, 404 if unknown or unfit. */
export function requireModel(
  state: SimState,
  raw: string,
  what: "generate" | "chat" | "embed",
): ModelEntry {
  if (raw.trim() === "") throw new HttpError(400, "model is required");
  const entry = state.models.find(raw);
  if (!entry) {
    throw new HttpError(404, `model "${raw}" not found, try pulling it first`);
  }
  if (entry.embedding && what !== "embed") {
    throw new HttpError(400, `"${raw}" does not support ${what}`);
  }
  return entry;
}

function once(fn: () => void): () => void {
  let called = false;
  return () => {
    if (called) return;
    called = true;
    fn();
  };
}

/** Takes a slot, loads the model, then writes the paced answer in the request's shape. */
export async function infer(
  state: SimState,
  ctx: Ctx,
  r: InferRequest,
): Promise<Response> {
  const started = performance.now();
  const fault = state.fault;
  if (fault.type === "busy") throw new BusyError();
  const releaseSlot = await state.slots.acquire(r.entry.key, ctx.signal);
  let loadNs: number;
  try {
    loadNs = await state.models.use(r.entry, ctx.signal, {
      loadMs: state.settings.loadMs,
      closing: state.closing,
    });
  } catch (e) {
    releaseSlot();
    throw e;
  }
  const release = once(() => {
    releaseSlot();
    state.models.release(r.entry, r.keepAliveMs);
  });
  const run = new AbortController();
  const signal = AbortSignal.any([ctx.signal, run.signal]);
  const ttftMs = state.settings.ttftMs;
  let evalNs = 0;
  const summary = (): Summary => {
    const promptEvalNs = Math.round(ttftMs * 1e6);
    const measured = Math.round((performance.now() - started) * 1e6);
    return {
      text: r.plan.tokens.join(""),
      reason: r.plan.reason,
      promptTokens: r.promptTokens,
      evalCount: r.plan.tokens.length,
      loadNs,
      promptEvalNs,
      evalNs: Math.round(evalNs),
      totalNs: Math.max(measured, loadNs + promptEvalNs + Math.round(evalNs)),
    };
  };
  const settings = state.settings;
  // Token i is due at ttft + the sum of 1/tps so far; tps is read per token, so update()
  // changes the speed of streams already running.
  async function* chunks(): AsyncGenerator<string> {
    try {
      await sleep(ttftMs, signal);
      let due = performance.now();
      for (let i = 0; i < r.plan.tokens.length; i++) {
        if (i > 0) {
          const step = 1000 / settings.tokensPerSecond;
          due += step;
          const wait = due - performance.now();
          if (wait >= 1) await sleep(wait, signal);
          else signal.throwIfAborted();
        }
        evalNs += 1e9 / settings.tokensPerSecond;
        yield r.shape.chunk(r.plan.tokens[i], i);
      }
      release();
      for (const c of r.shape.final(summary())) yield c;
    } finally {
      release();
    }
  }
  const source = chunks();
  if (!r.stream) {
    try {
      // Drain the token chunks for their pacing; the body is written whole at the end.
      for await (const _ of source) { /* paced */ }
    } finally {
      release();
    }
    return wholeBody(ctx, fault, r.shape.whole(summary()));
  }
  const total = r.plan.tokens.length + r.shape.finalCount;
  return await streamResponse(state, ctx, {
    source,
    run,
    contentType: r.shape.contentType,
    dieAt: dieAtChunk(fault, total),
  });
}

/** What {@linkcode streamResponse} writes. */
export interface StreamSource {
  source: AsyncGenerator<string>;
  /** Aborted when the body ends, however it ends: stops the source's sleeps. */
  run: AbortController;
  contentType: string;
  /** Drop the connection after this many chunks. */
  dieAt?: number;
}

/**
 * Streams the chunks, sending headers with the first one (as Ollama does), so an error before
 * the first token is a real HTTP error. With `dieAt` the connection drops after that many chunks.
 */
export async function streamResponse(
  state: SimState,
  ctx: Ctx,
  { source, run, contentType, dieAt }: StreamSource,
): Promise<Response> {
  let first: IteratorResult<string>;
  try {
    first = await source.next();
  } catch (e) {
    await source.return(undefined);
    throw e;
  }
  ctx.streaming = true;
  let sent = 0;
  let controller!: ReadableStreamDefaultController<Uint8Array>;
  let ended = false;
  const end = () => {
    ended = true;
    state.streams.delete(kill);
    run.abort();
    void source.return(undefined).catch(() => {});
  };
  const kill = () => {
    if (ended) return;
    ctx.failed = true;
    end();
    // Erroring the body aborts the connection; Deno logs the reason, so keep it to one line.
    const reason = new Error("Simulator closed");
    reason.stack = "Ollama simulator closed with a response in flight: connection aborted";
    controller.error(reason);
  };
  state.streams.add(kill);
  const enqueue = (chunk: string): boolean => {
    controller.enqueue(encoder.encode(chunk));
    sent++;
    if (dieAt !== undefined && sent >= dieAt) {
      ctx.failed = true;
      end();
      controller.close();
      return false;
    }
    return true;
  };
  const body = new ReadableStream<Uint8Array>({
    start: (c) => {
      controller = c;
      if (dieAt === 0) {
        ctx.failed = true;
        end();
        c.close();
      } else if (first.done) {
        ctx.done = true;
        end();
        c.close();
      } else enqueue(first.value);
    },
    pull: async (c) => {
      if (ended) return;
      try {
        const next = await source.next();
        if (ended) return;
        if (next.done) {
          ctx.done = true;
          end();
          c.close();
        } else enqueue(next.value);
      } catch (e) {
        if (ended) return;
        ctx.failed = true;
        end();
        c.error(e);
      }
    },
    cancel: () => {
      if (!ctx.done) ctx.failed = true;
      end();
    },
  });
  const headers: Record<string, string> = { "content-type": contentType };
  if (dieAt !== undefined) headers["content-length"] = String(1 << 30);
  return new Response(body, { headers });
}

/** Takes a slot and loads the model like a generation; returns vectors and timings. */
export async function embedVectors(
  state: SimState,
  ctx: Ctx,
  r: {
    entry: ModelEntry;
    inputs: string[];
    keepAliveMs: number | undefined;
    dim: number;
  },
) {
  const started = performance.now();
  if (state.fault.type === "busy") throw new BusyError();
  const releaseSlot = await state.slots.acquire(r.entry.key, ctx.signal);
  try {
    const loadNs = await state.models.use(r.entry, ctx.signal, {
      loadMs: state.settings.loadMs,
      closing: state.closing,
    });
    state.models.release(r.entry, r.keepAliveMs);
    const embeddings = r.inputs.map((t) => embedText(t, r.dim));
    const promptTokens = r.inputs.reduce(
      (n, t) => n + Math.max(1, countTokens(t)),
      0,
    );
    const totalNs = Math.max(
      loadNs,
      Math.round((performance.now() - started) * 1e6),
    );
    return { embeddings, loadNs, totalNs, promptTokens };
  } finally {
    releaseSlot();
  }
}

/** An empty prompt loads the model (or unloads it with keep_alive 0) and answers at once. */
export async function loadOnly(
  state: SimState,
  ctx: Ctx,
  r: { entry: ModelEntry; keepAliveMs: number | undefined },
): Promise<"load" | "unload"> {
  if (state.fault.type === "busy") throw new BusyError();
  if (r.keepAliveMs === 0) {
    state.models.unload(r.entry);
    return "unload";
  }
  await state.models.use(r.entry, ctx.signal, {
    loadMs: state.settings.loadMs,
    closing: state.closing,
  });
  state.models.release(r.entry, r.keepAliveMs);
  return "load";
}
