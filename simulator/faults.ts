/**
 * Fault injection: what the simulated server does wrong, and the responses that do it. `refuse`
 * and `hang` are applied by the server, `busy` where a request would take a slot, `die_after`
 * where a body is written.
 *
 * @module
 */
import { type Ctx, encoder, JSON_TYPE } from "./http.ts";

/** A fault the simulated server shows until it is cleared with `{ type: "none" }`. */
export type SimFault =
  | { type: "none" }
  | { type: "refuse" }
  | { type: "busy" }
  | { type: "die_after"; chunks: number }
  | { type: "hang" };

/** Parses `none`, `refuse`, `busy`, `hang` or `die_after:N`. */
export function parseFault(value: string): SimFault {
  const v = value.trim().toLowerCase();
  if (v === "none" || v === "refuse" || v === "busy" || v === "hang") {
    return { type: v };
  }
  const m = v.match(/^die_after[:=](\d+)$/);
  if (m) return { type: "die_after", chunks: Number(m[1]) };
  throw new TypeError(
    `Cannot parse fault "${value}": expected none, refuse, busy, hang or die_after:N`,
  );
}

/** Throws a RangeError for a fault that cannot be applied. */
export function checkFault(fault: SimFault): void {
  if (
    fault.type === "die_after" &&
    !(Number.isInteger(fault.chunks) && fault.chunks >= 0)
  ) {
    throw new RangeError(
      `Cannot set fault die_after: chunks must be a whole number >= 0, got ${fault.chunks}`,
    );
  }
}

/** After how many of `total` chunks a stream drops, or undefined if it completes. */
export function dieAtChunk(fault: SimFault, total: number): number | undefined {
  return fault.type === "die_after" && fault.chunks < total ? fault.chunks : undefined;
}

/** A response that sends its headers and then drops the connection. */
export function dyingResponse(
  ctx: Ctx,
  status = 200,
  bytes = new Uint8Array(),
  length = 1,
): Response {
  ctx.failed = true;
  return cutShort(bytes, length, status, JSON_TYPE);
}

/** A whole JSON body, or under `die_after` its first half and then a dropped connection. */
export function wholeBody(ctx: Ctx, fault: SimFault, body: unknown): Response {
  const bytes = encoder.encode(JSON.stringify(body));
  if (fault.type === "die_after") {
    return dyingResponse(
      ctx,
      200,
      bytes.slice(0, bytes.length >> 1),
      bytes.length,
    );
  }
  return new Response(bytes, { headers: { "content-type": JSON_TYPE } });
}

/**
 * Deno aborts the connection, silently, when a body ends short of its Content-Length: the
 * client reads the bytes sent and then an error, as when a server process dies.
 */
function cutShort(
  bytes: Uint8Array,
  length: number,
  status: number,
  type: string,
): Response {
  const body = new ReadableStream<Uint8Array>({
    start(c) {
      if (bytes.length > 0) c.enqueue(bytes);
      c.close();
    },
  });
  return new Response(body, {
    status,
    headers: {
      "content-type": type,
      "content-length": String(Math.max(length, bytes.length + 1)),
    },
  });
}
