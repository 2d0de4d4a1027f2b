/**
 * Request ids. Every request gets its own id, made here once by middleware and read as
 * `c.get("requestId")`: it names the request's request-log row, its events and its log line, and is
 * sent back as `X-Request-Id`. A client's own id (from `X-Client-Request-Id` or `X-Request-Id`)
 * is never used in its place, because ten requests sharing one id would share one request-log row
 * and hide their usage; it is kept beside ours (`client_request_id`) and echoed as
 * `X-Client-Request-Id`.
 */
import type { MiddlewareHandler } from "hono";
import type { AppEnv } from "./env.ts";

/** The response header echoing the client's own request id. */
export const CLIENT_REQUEST_ID_HEADER = "x-client-request-id";

const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, "0"));
/** Random bytes drawn 4 KiB at a time: one call to the system per 409 ids. */
const random = new Uint8Array(4096);
let used = random.length;

/**
 * A new request id: a time-ordered UUID (version 7, RFC 9562), 74 of its bits random. It is the
 * request log's primary key, and random (version 4) ids scatter the inserts over the whole
 * index: each insert then costs more as the table grows (19 µs of CPU per row in an empty table,
 * 44 µs at 200,000 rows), where ordered ids are appended at the end (17-20 µs at any size).
 */
export function newRequestId(now: number = Date.now()): string {
  if (used + 10 > random.length) {
    crypto.getRandomValues(random);
    used = 0;
  }
  const r = used;
  used += 10;
  const time = now.toString(16).padStart(12, "0");
  return `${time.slice(0, 8)}-${time.slice(8)}-${HEX[0x70 | (random[r] & 0x0f)]}${
    HEX[random[r + 1]]
  }-${HEX[0x80 | (random[r + 2] & 0x3f)]}${HEX[random[r + 3]]}-${HEX[random[r + 4]]}${
    HEX[random[r + 5]]
  }${HEX[random[r + 6]]}${HEX[random[r + 7]]}${HEX[random[r + 8]]}${HEX[random[r + 9]]}`;
}

/** The id a client gave its request, when it is sane (`[\w.:-]{1,128}`), else null. */
export function clientRequestId(req: Request): string | null {
  const given = req.headers.get(CLIENT_REQUEST_ID_HEADER) ?? req.headers.get("x-request-id");
  return given && /^[\w.:-]{1,128}$/.test(given) ? given : null;
}

/** Sets `requestId` (`c.get("requestId")`) and puts it on every answer that does not carry one yet. */
export function requestId(): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    c.set("requestId", newRequestId());
    await next();
    // Proxied answers already carry the id the proxy logged them under.
    if (!c.res.headers.has("x-request-id")) c.res.headers.set("x-request-id", c.get("requestId"));
  };
}
