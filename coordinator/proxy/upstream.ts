/**
 * The hot path's HTTP/1.1 client to agents: kept-alive TCP connections, the request written in
 * one go, the response head parsed in place and the body handed on as it is read from the
 * socket. Small chunks that arrived together leave as one, as nginx does with buffering off.
 *
 * Why not fetch: on this path fetch cost a third of the coordinator's CPU per request, about
 * 200 KB per open stream, and hands every upstream chunk on alone (see specs/proxy/plan.md).
 * Agents speak plain HTTP/1.1 (Ollama's Go server), which is all this client speaks.
 *
 * @module
 */

/** Largest response head accepted. */
const MAX_HEAD = 64 * 1024;
/**
 * Each connection's read buffer starts small (streamed chunks are a few hundred bytes and
 * thousands of streams may be open) and grows while reads fill it (a large answer), up to
 * MAX_READ_BUFFER; it shrinks back when the connection goes idle.
 */
const READ_BUFFER = 2 * 1024;
const MAX_READ_BUFFER = 64 * 1024;
/** Idle connections kept per agent, and for how long. */
const MAX_IDLE_PER_ORIGIN = 256;
const IDLE_TTL_MS = 30_000;

/** One request to an agent. */
export interface UpstreamRequest {
  /** The agent's base URL, `http://host:port`. */
  baseUrl: string;
  method: string;
  /** Path and query. */
  path: string;
  /** Header names in lower case; never `host`, `content-length` or `connection`. */
  headers: [string, string][];
  body: Uint8Array | null;
  /** Aborting closes the connection, which stops the agent's work at once. */
  signal: AbortSignal;
}

/** An agent's answer: status and head now, the body as it comes. */
export interface UpstreamResponse {
  status: number;
  /** Header names in lower case, in the agent's order. */
  headers: [string, string][];
  /** The next piece of the body, or null at its end. Throws when the connection fails. */
  read(): Promise<Uint8Array<ArrayBuffer> | null>;
  /** The whole (rest of the) body, or an error when it exceeds `limit` bytes. */
  readAll(limit?: number): Promise<Uint8Array<ArrayBuffer>>;
  /** Gives up the rest of the body and the connection. */
  cancel(): void;
}

/** The connection failed or was closed before the answer was complete. */
export class UpstreamError extends Error {
  constructor(
    message: string,
    /**
     * Refused: nothing listens. Lost: the connection failed. Protocol: not HTTP/1.1 we read.
     * Limit: the answer is larger than the reader's limit (the connection is dropped).
     * Cut: the client itself cut it ({@linkcode UpstreamClient.cutAll}), the agent is not to blame.
     */
    readonly kind: "refused" | "lost" | "protocol" | "limit" | "cut",
    /** Whether any byte of the answer had arrived. */
    readonly answered = true,
  ) {
    super(message);
    this.name = "UpstreamError";
  }
}

interface Origin {
  hostname: string;
  port: number;
  /** The Host header. */
  host: string;
  idle: Conn[];
}

/** One TCP connection with its read buffer and the bytes read but not yet consumed. */
class Conn {
  buf = new Uint8Array(READ_BUFFER);
  /** Unconsumed bytes are buf[start, end). */
  start = 0;
  end = 0;
  reused = false;
  closed = false;
  idleSince = 0;
  /** Whether the last read filled all the room it had. */
  #filled = false;
  /** Set when the client cut the connection on purpose: why. */
  cutReason: string | undefined;
  constructor(readonly tcp: Deno.TcpConn) {}

  /** Reads more bytes into the buffer; false at the end of the stream. */
  async fill(): Promise<boolean> {
    if (this.start === this.end) {
      this.start = this.end = 0;
      if (this.#filled && this.buf.length < MAX_READ_BUFFER) this.#resize(this.buf.length * 4);
    } else if (this.end === this.buf.length) {
      // Unconsumed bytes up to the end (a head still incomplete): make room.
      if (this.start > 0) {
        this.buf.copyWithin(0, this.start, this.end);
        this.end -= this.start;
        this.start = 0;
      } else if (this.buf.length < MAX_HEAD) this.#resize(this.buf.length * 4);
      else throw new UpstreamError("response head is too large", "protocol");
    }
    let n: number | null;
    try {
      n = await this.tcp.read(this.buf.subarray(this.end));
    } catch (e) {
      throw this.cutReason ? new UpstreamError(this.cutReason, "cut") : lost(e);
    }
    if (n === null) return false;
    this.#filled = this.end + n === this.buf.length;
    this.end += n;
    return true;
  }

  /** Back to a small buffer for a connection going idle. */
  shrink() {
    this.start = this.end = 0;
    this.#filled = false;
    if (this.buf.length > READ_BUFFER) this.buf = new Uint8Array(READ_BUFFER);
  }

  #resize(size: number) {
    const next = new Uint8Array(Math.min(size, MAX_READ_BUFFER));
    next.set(this.buf.subarray(this.start, this.end));
    this.end -= this.start;
    this.start = 0;
    this.buf = next;
  }

  close() {
    if (this.closed) return;
    this.closed = true;
    try {
      this.tcp.close();
    } catch { /* already closed */ }
  }
}

/** Whether the coordinator itself cut the upstream request (see `UpstreamClient.cutAll`). */
export function isCut(e: unknown): e is UpstreamError {
  return e instanceof UpstreamError && e.kind === "cut";
}

/** Why a request to an agent failed, in words for the client (never the agent's address). */
export function describeUpstreamError(e: unknown): string {
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

function lost(e: unknown): UpstreamError {
  if (e instanceof UpstreamError) return e;
  const message = e instanceof Error ? e.message : String(e);
  return new UpstreamError(message || "connection lost", "lost");
}

/** A pool of kept-alive connections, per agent address. */
export class UpstreamClient {
  #origins = new Map<string, Origin>();
  #lastSweep = 0;
  /** Connections with a request on them. */
  #active = new Set<Conn>();
  #cutReason: string | undefined;

  /** Sends a request; resolves once the response head has arrived. */
  async request(req: UpstreamRequest): Promise<UpstreamResponse> {
    const origin = this.#origin(req.baseUrl);
    req.signal.throwIfAborted();
    if (this.#cutReason) throw new UpstreamError(this.#cutReason, "cut");
    const head = requestHead(req, origin.host);
    // A kept-alive connection the agent closed meanwhile fails before any answer: then the
    // request goes once more on a fresh connection, as browsers and Go's client do.
    for (;;) {
      const conn = this.#idle(origin) ?? await this.#connect(origin, req.signal);
      if (this.#cutReason) {
        conn.close();
        throw new UpstreamError(this.#cutReason, "cut");
      }
      this.#active.add(conn);
      try {
        return await this.#exchange(origin, conn, head, req);
      } catch (e) {
        this.#active.delete(conn);
        conn.close();
        if (req.signal.aborted) throw req.signal.reason;
        if (conn.reused && e instanceof UpstreamError && e.kind === "lost" && !e.answered) {
          // The agent likely restarted: its other idle connections are dead too.
          for (const c of origin.idle) c.close();
          origin.idle.length = 0;
          continue;
        }
        throw e;
      }
    }
  }

  /**
   * Cuts every request in flight and refuses new ones, for a shutdown past its deadline: their
   * reads fail with an {@linkcode UpstreamError} of kind "cut" carrying `reason`.
   */
  cutAll(reason: string) {
    this.#cutReason = reason;
    for (const conn of this.#active) {
      conn.cutReason = reason;
      conn.close();
    }
    this.#active.clear();
    this.close();
  }

  /** Closes every idle connection. */
  close() {
    for (const o of this.#origins.values()) {
      for (const c of o.idle) c.close();
      o.idle.length = 0;
    }
  }

  #origin(baseUrl: string): Origin {
    let o = this.#origins.get(baseUrl);
    if (!o) {
      const url = new URL(baseUrl);
      if (url.protocol !== "http:") {
        throw new UpstreamError(`unsupported ${url.protocol}`, "protocol");
      }
      const hostname = url.hostname.replace(/^\[(.*)\]$/, "$1");
      const port = Number(url.port || 80);
      o = { hostname, port, host: url.host, idle: [] };
      this.#origins.set(baseUrl, o);
    }
    return o;
  }

  async #connect(origin: Origin, signal: AbortSignal): Promise<Conn> {
    let tcp: Deno.TcpConn;
    try {
      tcp = await Deno.connect({ hostname: origin.hostname, port: origin.port, signal });
    } catch (e) {
      if (signal.aborted) throw signal.reason;
      if (e instanceof Deno.errors.ConnectionRefused) {
        throw new UpstreamError("connection refused", "refused");
      }
      throw lost(e);
    }
    tcp.setNoDelay(true);
    return new Conn(tcp);
  }

  #release(origin: Origin, conn: Conn) {
    if (
      conn.closed || this.#cutReason || origin.idle.length >= MAX_IDLE_PER_ORIGIN ||
      conn.start !== conn.end
    ) {
      conn.close();
      return;
    }
    conn.shrink();
    conn.reused = true;
    conn.idleSince = performance.now();
    origin.idle.push(conn);
    if (conn.idleSince - this.#lastSweep > IDLE_TTL_MS) this.#sweep(conn.idleSince);
  }

  /** The most recently used idle connection that has not outlived the TTL. */
  #idle(origin: Origin): Conn | undefined {
    const conn = origin.idle.pop();
    if (conn && performance.now() - conn.idleSince > IDLE_TTL_MS) {
      this.#sweep(performance.now());
      conn.close();
      return origin.idle.pop();
    }
    return conn;
  }

  /**
   * Closes connections idle for longer than the TTL, also those of agents no longer asked.
   * Runs on use rather than on a timer, so an idle coordinator keeps no timer for it.
   */
  #sweep(now: number) {
    this.#lastSweep = now;
    for (const o of this.#origins.values()) {
      // Idle lists are stacks: the oldest connections are at the bottom.
      let stale = 0;
      while (stale < o.idle.length && now - o.idle[stale].idleSince > IDLE_TTL_MS) {
        o.idle[stale++].close();
      }
      if (stale) o.idle.splice(0, stale);
    }
  }

  async #exchange(
    origin: Origin,
    conn: Conn,
    head: Uint8Array,
    req: UpstreamRequest,
  ): Promise<UpstreamResponse> {
    // The closures below outlive the request (a stream lasts minutes): they take its signal
    // only, never `req`, which holds the body (a prompt with its chat history).
    const signal = req.signal;
    const onAbort = () => conn.close();
    signal.addEventListener("abort", onAbort, { once: true });
    let handedOver = false;
    try {
      await writeAll(conn, head, req.body);
      const res = await readHead(conn);
      const framing = bodyFraming(req.method, res.status, res.headers);
      const body = new BodyReader(conn, framing, () => {
        signal.removeEventListener("abort", onAbort);
        this.#active.delete(conn);
        if (framing.keepAlive) this.#release(origin, conn);
        else conn.close();
      }, () => {
        signal.removeEventListener("abort", onAbort);
        this.#active.delete(conn);
        conn.close();
      });
      handedOver = true;
      return {
        status: res.status,
        headers: res.headers,
        read: () => body.read(signal),
        readAll: (limit) => body.readAll(signal, limit),
        cancel: () => body.cancel(),
      };
    } finally {
      if (!handedOver) signal.removeEventListener("abort", onAbort);
    }
  }
}

const encoder = new TextEncoder();

function requestHead(req: UpstreamRequest, host: string): Uint8Array {
  let head = `${req.method} ${req.path} HTTP/1.1\r\nhost: ${host}\r\n`;
  for (const [name, value] of req.headers) head += `${name}: ${value}\r\n`;
  if (req.body) head += `content-length: ${req.body.byteLength}\r\n`;
  else if (req.method !== "GET" && req.method !== "HEAD") head += "content-length: 0\r\n";
  return encoder.encode(head + "\r\n");
}

async function writeAll(conn: Conn, head: Uint8Array, body: Uint8Array | null) {
  // One write for a small request: the agent sees head and body in one packet.
  let data = head;
  if (body && body.byteLength <= 64 * 1024) {
    data = new Uint8Array(head.byteLength + body.byteLength);
    data.set(head);
    data.set(body, head.byteLength);
    body = null;
  }
  try {
    for (const part of body ? [data, body] : [data]) {
      for (let off = 0; off < part.byteLength;) off += await conn.tcp.write(part.subarray(off));
    }
  } catch (e) {
    if (conn.cutReason) throw new UpstreamError(conn.cutReason, "cut");
    throw new UpstreamError(lost(e).message, "lost", false);
  }
}

interface Head {
  status: number;
  headers: [string, string][];
}

const CR = 13;
const LF = 10;
const decoder = new TextDecoder("latin1");

/** Reads and parses the status line and headers; 1xx answers are skipped. */
async function readHead(conn: Conn): Promise<Head> {
  let answered = false;
  // Where to go on looking for the blank line, relative to conn.start.
  let scanned = 0;
  for (;;) {
    const end = headEnd(conn, scanned);
    if (end === -1) {
      scanned = Math.max(0, conn.end - conn.start - 3);
      if (conn.end - conn.start >= MAX_HEAD) {
        throw new UpstreamError("response head is too large", "protocol");
      }
      let more: boolean;
      try {
        more = await conn.fill();
      } catch (e) {
        const err = lost(e);
        throw new UpstreamError(err.message, err.kind, answered);
      }
      if (!more) {
        throw new UpstreamError(
          answered ? "connection closed mid-answer" : "connection closed",
          "lost",
          answered,
        );
      }
      answered = true;
      continue;
    }
    const text = decoder.decode(conn.buf.subarray(conn.start, end));
    conn.start = end;
    scanned = 0;
    const head = parseHead(text);
    if (head.status >= 200) return head;
  }
}

/** The index just past the head's blank line (CRLF CRLF, or bare LF LF), or -1. */
function headEnd(conn: Conn, from: number): number {
  const buf = conn.buf;
  for (let i = conn.start + from; i < conn.end; i++) {
    if (buf[i] !== LF) continue;
    if (i - 1 >= conn.start && buf[i - 1] === LF) return i + 1;
    if (i - 2 >= conn.start && buf[i - 1] === CR && buf[i - 2] === LF) return i + 1;
  }
  return -1;
}

/** A header name as `Headers` takes it (RFC 9110 token, lower case). */
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9a-z]+$/;

function parseHead(text: string): Head {
  // A NUL would make the answer's headers unusable: `Headers` refuses it.
  if (text.includes("\0")) throw new UpstreamError("malformed header line", "protocol");
  const lines = text.split(/\r?\n/);
  const m = /^HTTP\/1\.[01] (\d{3})(?: |$)/.exec(lines[0]);
  if (!m) throw new UpstreamError("malformed status line", "protocol");
  const headers: [string, string][] = [];
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i];
    if (line === "") continue;
    const colon = line.indexOf(":");
    if (colon <= 0) throw new UpstreamError("malformed header line", "protocol");
    const name = line.slice(0, colon).trim().toLowerCase();
    if (!TOKEN.test(name)) throw new UpstreamError("malformed header line", "protocol");
    headers.push([name, line.slice(colon + 1).trim()]);
  }
  return { status: Number(m[1]), headers };
}

interface Framing {
  kind: "none" | "length" | "chunked" | "close";
  length: number;
  keepAlive: boolean;
}

function bodyFraming(method: string, status: number, headers: [string, string][]): Framing {
  let length = -1;
  let chunked = false;
  let close = false;
  for (const [name, value] of headers) {
    if (name === "content-length") {
      if (!/^\d{1,15}$/.test(value)) throw new UpstreamError("bad content-length", "protocol");
      length = Number(value);
    } else if (name === "transfer-encoding") chunked = /chunked\s*$/i.test(value);
    else if (name === "connection") close = /\bclose\b/i.test(value);
  }
  if (method === "HEAD" || status === 204 || status === 304) {
    return { kind: "none", length: 0, keepAlive: !close };
  }
  if (chunked) return { kind: "chunked", length: 0, keepAlive: !close };
  if (length >= 0) return { kind: "length", length, keepAlive: !close };
  return { kind: "close", length: 0, keepAlive: false };
}

/** Chunked-decoding states. */
const S = {
  Size: 0,
  Ext: 1,
  SizeLf: 2,
  Data: 3,
  DataCr: 4,
  DataLf: 5,
  Trailer: 6,
  TrailerLine: 7,
  Done: 8,
} as const;

/** Decodes a body from a connection, by its framing, into pieces as they arrive. */
class BodyReader {
  #remaining: number;
  #state: number = S.Size;
  #size = 0;
  #finished = false;

  constructor(
    private conn: Conn,
    private framing: Framing,
    private onDone: () => void,
    private onFail: () => void,
  ) {
    this.#remaining = framing.length;
    if (framing.kind === "none" || (framing.kind === "length" && framing.length === 0)) {
      this.#finish();
    }
  }

  #finish() {
    if (this.#finished) return;
    this.#finished = true;
    this.onDone();
  }

  #fail(e: unknown, signal: AbortSignal): never {
    this.#finished = true;
    this.onFail();
    if (signal.aborted) throw signal.reason;
    throw lost(e);
  }

  cancel() {
    if (this.#finished) return;
    this.#finished = true;
    this.onFail();
  }

  /** The next piece of the body: all that is available now, copied out; null at the end. */
  async read(signal: AbortSignal): Promise<Uint8Array<ArrayBuffer> | null> {
    for (;;) {
      if (this.#finished) return null;
      const conn = this.conn;
      if (conn.start < conn.end) {
        const piece = this.#decode();
        const kind = this.framing.kind;
        if (kind === "length" ? this.#remaining === 0 : this.#state === S.Done) this.#finish();
        if (piece) return piece;
        if (this.#finished) return null;
      }
      let more: boolean;
      try {
        more = await conn.fill();
      } catch (e) {
        this.#fail(e, signal);
      }
      if (!more) {
        if (this.framing.kind === "close") {
          this.#finish();
          return null;
        }
        this.#fail(new UpstreamError("connection closed mid-answer", "lost"), signal);
      }
    }
  }

  /** Reads to the end, into one buffer. */
  async readAll(signal: AbortSignal, limit = Infinity): Promise<Uint8Array<ArrayBuffer>> {
    if (this.framing.kind === "length" && this.#remaining > limit) {
      this.cancel();
      throw new UpstreamError("answer is too large", "limit");
    }
    const pieces: Uint8Array[] = [];
    let total = 0;
    for (let p = await this.read(signal); p; p = await this.read(signal)) {
      pieces.push(p);
      total += p.byteLength;
      if (total > limit) {
        this.cancel();
        throw new UpstreamError("answer is too large", "limit");
      }
    }
    if (pieces.length === 1) return pieces[0] as Uint8Array<ArrayBuffer>;
    return concat(pieces, total);
  }

  /** Consumes buffered bytes; returns the payload among them (copied), if any. */
  #decode(): Uint8Array<ArrayBuffer> | null {
    const conn = this.conn;
    const buf = conn.buf;
    if (this.framing.kind !== "chunked") {
      let n = conn.end - conn.start;
      if (this.framing.kind === "length") n = Math.min(n, this.#remaining);
      const out = buf.slice(conn.start, conn.start + n);
      conn.start += n;
      if (this.framing.kind === "length") this.#remaining -= n;
      return out;
    }
    // Chunked: payload ranges of this buffer, gathered then copied out once.
    const ranges: number[] = [];
    let total = 0;
    let i = conn.start;
    const end = conn.end;
    while (i < end && this.#state !== S.Done) {
      switch (this.#state) {
        case S.Size: {
          const b = buf[i++];
          const digit = hexValue(b);
          if (digit >= 0) {
            this.#size = this.#size * 16 + digit;
            if (this.#size > 2 ** 40) throw this.#protocol("chunk is too large");
          } else if (b === CR) this.#state = S.SizeLf;
          else if (b === LF) this.#endSize();
          else if (b === 59 /* ; */ || b === 32 || b === 9) this.#state = S.Ext;
          else throw this.#protocol("malformed chunk size");
          break;
        }
        case S.Ext:
          if (buf[i++] === LF) this.#endSize();
          break;
        case S.SizeLf:
          if (buf[i++] !== LF) throw this.#protocol("malformed chunk size");
          this.#endSize();
          break;
        case S.Data: {
          const n = Math.min(this.#remaining, end - i);
          ranges.push(i, i + n);
          total += n;
          i += n;
          this.#remaining -= n;
          if (this.#remaining === 0) this.#state = S.DataCr;
          break;
        }
        case S.DataCr: {
          const b = buf[i++];
          if (b === CR) this.#state = S.DataLf;
          else if (b === LF) this.#state = S.Size;
          else throw this.#protocol("malformed chunk end");
          break;
        }
        case S.DataLf:
          if (buf[i++] !== LF) throw this.#protocol("malformed chunk end");
          this.#state = S.Size;
          break;
        case S.Trailer: {
          // At the start of a trailer line: an empty line ends the body.
          const b = buf[i++];
          if (b === LF) this.#state = S.Done;
          else if (b !== CR) this.#state = S.TrailerLine;
          break;
        }
        case S.TrailerLine:
          if (buf[i++] === LF) this.#state = S.Trailer;
          break;
      }
    }
    conn.start = i;
    if (total === 0) return null;
    if (ranges.length === 2) return buf.slice(ranges[0], ranges[1]);
    const out = new Uint8Array(total);
    let at = 0;
    for (let r = 0; r < ranges.length; r += 2) {
      out.set(buf.subarray(ranges[r], ranges[r + 1]), at);
      at += ranges[r + 1] - ranges[r];
    }
    return out;
  }

  #endSize() {
    if (this.#size === 0) this.#state = S.Trailer;
    else {
      this.#remaining = this.#size;
      this.#state = S.Data;
    }
    this.#size = 0;
  }

  #protocol(message: string): UpstreamError {
    this.#finished = true;
    this.onFail();
    return new UpstreamError(message, "protocol");
  }
}

function hexValue(b: number): number {
  if (b >= 48 && b <= 57) return b - 48;
  if (b >= 97 && b <= 102) return b - 87;
  if (b >= 65 && b <= 70) return b - 55;
  return -1;
}

function concat(pieces: Uint8Array[], total: number): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(total);
  let at = 0;
  for (const p of pieces) {
    out.set(p, at);
    at += p.byteLength;
  }
  return out;
}
