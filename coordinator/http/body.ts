/**
 * Reading a request body against a size and a time limit, whatever the client declares.
 *
 * `Request.arrayBuffer()` allocates a declared `content-length` before the bytes arrive: forty
 * connections that each declared 64 MiB and sent a hundred bytes took a gigabyte. Here the body
 * is read as it comes, so memory follows what arrived; a declared length above the limit is
 * refused before anything is read; a body that takes longer than its time limit is cut (a slow
 * sender would otherwise hold its connection busy, out of reach of the idle limits); and a
 * malformed body (bad chunked encoding, an overlong chunk extension) is a client error.
 *
 * @module
 */
import { Watchdog } from "../proxy/watchdog.ts";
import { bodyTimeoutOf, closeAfterResponse } from "./listener.ts";
import { MESSAGES } from "./messages.ts";

/** Why a body could not be read; `status` is the HTTP status to answer with. */
export class BodyError extends Error {
  constructor(
    message: string,
    /** 400: malformed or cut off; 408: too slow; 413: too large. */
    readonly status: 400 | 408 | 413,
  ) {
    super(message);
    this.name = "BodyError";
  }
}

/** Options of {@linkcode readBody}. */
export interface ReadBodyOptions {
  /** Most bytes accepted. */
  limit: number;
  /**
   * Time the whole body may take to arrive, from the call. Default: the accepting listener's
   * `bodyTimeoutMs`, else {@linkcode DEFAULT_BODY_TIMEOUT_MS}.
   */
  timeoutMs?: number;
}

/** The body time limit where neither the caller nor the listener sets one. */
export const DEFAULT_BODY_TIMEOUT_MS = 60_000;

/** Body time limits are checked by one sweep, not a timer per request. */
const watchdog = new Watchdog(100);

const EMPTY = new Uint8Array(0);

/**
 * Reads a request's whole body, at most `limit` bytes within `timeoutMs`.
 * Throws a {@linkcode BodyError} when it is larger (413), slower (408) or unreadable (400).
 */
export async function readBody(
  req: Request,
  options: ReadBodyOptions,
): Promise<Uint8Array<ArrayBuffer>> {
  const { limit } = options;
  const declared = req.headers.get("content-length");
  if (declared !== null && Number(declared) > limit) {
    await req.body?.cancel().catch(() => {});
    throw giveUp(req, MESSAGES.bodyTooLarge(limit), 413);
  }
  const body = req.body;
  if (!body) return EMPTY;
  const reader = body.getReader();
  const timeoutMs = options.timeoutMs ?? bodyTimeoutOf(req) ?? DEFAULT_BODY_TIMEOUT_MS;
  let timedOut = false;
  const watch = watchdog.watch(timeoutMs, () => {
    timedOut = true;
    reader.cancel().catch(() => {});
  });
  const chunks: Uint8Array[] = [];
  let size = 0;
  const length = declared === null ? NaN : Number(declared);
  try {
    for (;;) {
      // Every declared byte is in: the end is not read, as that read would leave a 64 KiB
      // buffer of the stream pending on the request for as long as it lives (a streamed
      // answer's whole length). Cancelling keeps the connection alive all the same.
      if (size === length) {
        reader.cancel().catch(() => {});
        break;
      }
      let result: ReadableStreamReadResult<Uint8Array>;
      try {
        result = await reader.read();
      } catch {
        // The reason (a malformed chunk, a cut connection) stays here: it says nothing useful.
        throw timedOut ? tooSlow(req, timeoutMs) : giveUp(req, MESSAGES.bodyUnreadable, 400);
      }
      if (result.done) break;
      if (timedOut) throw tooSlow(req, timeoutMs);
      size += result.value.byteLength;
      if (size > limit) {
        reader.cancel().catch(() => {});
        throw giveUp(req, MESSAGES.bodyTooLarge(limit), 413);
      }
      chunks.push(result.value);
    }
    // A cancel by the watchdog ends the stream as if it were complete.
    if (timedOut) throw tooSlow(req, timeoutMs);
  } finally {
    watch.stop();
  }
  return concat(chunks, size);
}

/** The error for a body given up half-read; its rest would hold the connection, so it closes. */
function giveUp(req: Request, message: string, status: 400 | 408 | 413): BodyError {
  closeAfterResponse(req);
  return new BodyError(message, status);
}

function tooSlow(req: Request, timeoutMs: number): BodyError {
  return giveUp(req, MESSAGES.bodyTooSlow(timeoutMs / 1000), 408);
}

function concat(chunks: Uint8Array[], size: number): Uint8Array<ArrayBuffer> {
  if (chunks.length === 0) return EMPTY;
  const only = chunks[0];
  // A piece is often a view of the stream's 64 KiB read buffer: kept as it is, a 2 KB prompt
  // would hold all of it for as long as its request lives (a stream's whole length).
  if (
    chunks.length === 1 && only.buffer instanceof ArrayBuffer &&
    only.byteLength === only.buffer.byteLength
  ) {
    return only as Uint8Array<ArrayBuffer>;
  }
  const out = new Uint8Array(size);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.byteLength;
  }
  return out;
}
