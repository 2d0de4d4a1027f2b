/**
 * The coordinator's log: one line per request and per fleet event, human-readable on a
 * terminal or JSON lines (`LOG_FORMAT=json`), filtered by `LOG_LEVEL`. Never prompts or secrets:
 * request lines carry only routing facts and figures.
 */
import { format } from "node:util";
import type { Bus } from "./bus.ts";
import type { RequestRecord } from "./request_log.ts";
import { LineWriter } from "./line_writer.ts";

// Standard output and error written behind, never synchronously on a request's way (a line per
// request would otherwise cost a blocking write each), and never through `console`, which
// `routeConsole` may replace, so that a logger's lines never loop back through the logger. Lines
// go out every LOG_DELAY_MS: one write per request cost about 25 µs of CPU per request.
const LOG_DELAY_MS = 20;
const stdout = new LineWriter(Deno.stdout, { delayMs: LOG_DELAY_MS });
const stderr = new LineWriter(Deno.stderr, { delayMs: LOG_DELAY_MS });
// Lines still queued when the process exits are written before it goes.
globalThis.addEventListener("unload", () => {
  stdout.flushSync();
  stderr.flushSync();
});

/** Writes one line to standard output, bypassing {@linkcode routeConsole}. */
export function writeStdout(line: string): void {
  stdout.write(line);
}

/** Writes one line to standard error, bypassing {@linkcode routeConsole}. */
export function writeStderr(line: string): void {
  stderr.write(line);
}

/** Resolves once every queued log line was written (before a planned exit). */
export async function flushLogs(): Promise<void> {
  await Promise.all([stdout.flush(), stderr.flush()]);
}

/**
 * Characters that could end a log line or drive a terminal: C0 controls (newline, carriage
 * return, ESC…), DEL, C1 controls (0x9b is an 8-bit CSI) and Unicode's line and paragraph
 * separators. Model names, agent names and error messages come from clients and agents: written
 * raw, a newline forges a log line and an escape sequence rewrites the operator's screen.
 */
// deno-lint-ignore no-control-regex
const UNSAFE = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g;
/** The same, to test for (a global expression's `test` keeps state between calls). */
// deno-lint-ignore no-control-regex
const HAS_UNSAFE = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/;
/** Those of them that JSON.stringify leaves as they are. */
const UNSAFE_IN_JSON = /[\u007f-\u009f\u2028\u2029]/g;
// deno-lint-ignore no-control-regex
const NEEDS_QUOTES = /[\s"\u0000-\u001f\u007f-\u009f]/;

const SHORT_ESCAPES: Record<string, string> = { "\n": "\\n", "\r": "\\r", "\t": "\\t" };

function escapeChar(ch: string): string {
  return SHORT_ESCAPES[ch] ?? `\\u${ch.charCodeAt(0).toString(16).padStart(4, "0")}`;
}

/** `s` with every unsafe character written as an escape (`\n`, `\u001b`). */
function escapeControl(s: string): string {
  return HAS_UNSAFE.test(s) ? s.replace(UNSAFE, escapeChar) : s;
}

/** A field's value in a text line: bare when it is one plain word, else quoted and escaped. */
function textValue(v: unknown): string {
  if (typeof v === "number") return String(v);
  const s = String(v);
  if (!NEEDS_QUOTES.test(s)) return s;
  return JSON.stringify(s).replace(UNSAFE_IN_JSON, escapeChar);
}

/** Log levels, least to most severe. */
export const LEVELS = ["debug", "info", "warn", "error"] as const;
/** A log level. */
export type Level = typeof LEVELS[number];

/** Each level as a text line shows it, padded to one width. */
const LABELS: Record<Level, string> = {
  debug: "DEBUG",
  info: "INFO ",
  warn: "WARN ",
  error: "ERROR",
};

/** A structured logger writing one line per entry. */
export class Logger {
  readonly #min: number;
  readonly #json: boolean;
  readonly #write: (line: string) => void;

  constructor(
    options: { level?: Level; format?: "text" | "json"; write?: (line: string) => void } = {},
  ) {
    this.#min = LEVELS.indexOf(options.level ?? "info");
    this.#json = options.format === "json";
    this.#write = options.write ?? writeStdout;
  }

  /** Whether entries of `level` are written. */
  enabled(level: Level): boolean {
    return LEVELS.indexOf(level) >= this.#min;
  }

  /** Writes an entry when `level` is at or above the configured level. */
  log(level: Level, msg: string, fields: Record<string, unknown> = {}): void {
    if (!this.enabled(level)) return;
    const time = new Date().toISOString();
    if (this.#json) {
      // JSON already escapes C0 controls; DEL, C1 and the separators are escaped too.
      this.#write(
        JSON.stringify({ time, level, msg, ...fields }).replace(UNSAFE_IN_JSON, escapeChar),
      );
      return;
    }
    // Built by hand, without intermediate arrays: it runs once per proxied request.
    let line = `${time} ${LABELS[level]} ${escapeControl(msg)}`;
    for (const k in fields) {
      const v = fields[k];
      if (v !== null && v !== undefined && v !== "") line += ` ${escapeControl(k)}=${textValue(v)}`;
    }
    this.#write(line);
  }

  debug(msg: string, fields?: Record<string, unknown>): void {
    this.log("debug", msg, fields);
  }
  info(msg: string, fields?: Record<string, unknown>): void {
    this.log("info", msg, fields);
  }
  warn(msg: string, fields?: Record<string, unknown>): void {
    this.log("warn", msg, fields);
  }
  error(msg: string, fields?: Record<string, unknown>): void {
    this.log("error", msg, fields);
  }
}

/**
 * Sends every `console` call of the process through loggers, so that with `LOG_FORMAT=json` even
 * the modules that print with `console.error` write one JSON object per line. `console.log`,
 * `info` and `debug` go to `out`, `warn` and `error` to `err`; the arguments are formatted as the
 * console would and become `msg`. Returns a function that puts the console back.
 */
export function routeConsole(out: Logger, err: Logger = out): () => void {
  const saved = {
    log: console.log,
    info: console.info,
    debug: console.debug,
    warn: console.warn,
    error: console.error,
  };
  const to = (logger: Logger, level: Level) => (...args: unknown[]) =>
    logger.log(level, format(...args));
  console.log = to(out, "info");
  console.info = to(out, "info");
  console.debug = to(out, "debug");
  console.warn = to(err, "warn");
  console.error = to(err, "error");
  return () => Object.assign(console, saved);
}

const round = (x: number | null) => (x === null ? null : Math.round(x * 10) / 10);

/** Logs every request and fleet event published on the bus. Returns the unsubscribe function. */
export function logBus(bus: Bus, logger: Logger): () => void {
  return bus.subscribe((m) => {
    if (m.type === "request") {
      const r = m.request as unknown as RequestRecord;
      const level = r.status >= 500 ? "warn" : "info";
      if (!logger.enabled(level)) return;
      logger.log(level, "request", {
        id: r.id,
        client_id: r.client_request_id,
        route: r.route,
        model: r.model,
        agent: r.agent_name,
        status: r.status,
        ms: round(r.latency_ms),
        ttft_ms: round(r.ttft_ms),
        tokens_in: r.tokens_in,
        tokens_out: r.tokens_out,
        tps: round(r.tokens_per_second),
        attempts: r.attempts,
        error: r.error,
      });
    } else if (m.type === "event") {
      const e = m.event;
      const level = e.kind === "failure" || e.kind === "circuit_open" ? "warn" : "info";
      logger.log(level, e.message, { event: e.kind, agent_id: e.agent_id });
    }
  }, ["request", "event"]);
}
