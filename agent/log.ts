/**
 * The agent's logger: one line per event, as text or JSON, with an optional status line (the
 * progress bar) that stays at the bottom of a terminal while other lines scroll above it.
 */

/** Severity of a log line, lowest first. */
export type LogLevel = "debug" | "info" | "warn" | "error";

/** How log lines are written. */
export type LogFormat = "text" | "json";

/** Extra key/value pairs attached to a log line. */
export type LogFields = Record<string, unknown>;

/** What the agent's modules log through. */
export interface Logger {
  debug(msg: string, fields?: LogFields): void;
  info(msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
  error(msg: string, fields?: LogFields): void;
  /**
   * Shows `text` as a status line that is redrawn in place (`\r`), or clears it with `null`.
   * Only terminals support this: returns false when the output is not a terminal.
   */
  status(text: string | null): boolean;
}

/** Options of {@linkcode createLogger}. */
export interface LoggerOptions {
  format?: LogFormat;
  level?: LogLevel;
  /** Where finished lines go (without a trailing newline); defaults to standard error. */
  sink?: (line: string) => void;
  /** Whether the output is a terminal that can redraw a status line; default: stderr's. */
  terminal?: boolean;
  /** Clock for timestamps. */
  now?: () => Date;
}

/** Numeric order of the levels. */
export const LOG_LEVELS: readonly LogLevel[] = ["debug", "info", "warn", "error"];

const encoder = new TextEncoder();

function writeStderr(text: string): void {
  try {
    Deno.stderr.writeSync(encoder.encode(text));
  } catch {
    // A closed stderr must not take the agent down.
  }
}

function formatValue(value: unknown): string {
  if (typeof value === "string") return /[\s"=]/.test(value) ? JSON.stringify(value) : value;
  if (value instanceof Error) return JSON.stringify(value.message);
  return JSON.stringify(value) ?? String(value);
}

/** Formats one log line as text: `2025-01-01T00:00:00.000Z INFO message key=value`. */
export function formatTextLine(
  time: Date,
  level: LogLevel,
  msg: string,
  fields?: LogFields,
): string {
  let line = `${time.toISOString()} ${level.toUpperCase().padEnd(5)} ${msg}`;
  for (const [key, value] of Object.entries(fields ?? {})) {
    if (value === undefined) continue;
    line += ` ${key}=${formatValue(value)}`;
  }
  return line;
}

/** Formats one log line as a JSON object: `{"time","level","msg",...fields}`. */
export function formatJsonLine(
  time: Date,
  level: LogLevel,
  msg: string,
  fields?: LogFields,
): string {
  const extra: LogFields = {};
  for (const [key, value] of Object.entries(fields ?? {})) {
    extra[key] = value instanceof Error ? value.message : value;
  }
  return JSON.stringify({ time: time.toISOString(), level, msg, ...extra });
}

/** Creates a logger writing to standard error (or `sink`) at or above `level`. */
export function createLogger(options: LoggerOptions = {}): Logger {
  const format = options.format ?? "text";
  const min = LOG_LEVELS.indexOf(options.level ?? "info");
  const now = options.now ?? (() => new Date());
  const sink = options.sink;
  const terminal = options.terminal ?? (sink ? false : Deno.stderr.isTerminal());
  let statusLine: string | null = null;

  function write(line: string): void {
    if (sink) {
      sink(line);
      return;
    }
    // Clear the status line, print the log line, then draw the status line again below it.
    const clear = statusLine !== null ? "\r\x1b[2K" : "";
    const redraw = statusLine !== null ? statusLine : "";
    writeStderr(`${clear}${line}\n${redraw}`);
  }

  function log(level: LogLevel, msg: string, fields?: LogFields): void {
    if (LOG_LEVELS.indexOf(level) < min) return;
    const time = now();
    write(
      format === "json"
        ? formatJsonLine(time, level, msg, fields)
        : formatTextLine(time, level, msg, fields),
    );
  }

  return {
    debug: (msg, fields) => log("debug", msg, fields),
    info: (msg, fields) => log("info", msg, fields),
    warn: (msg, fields) => log("warn", msg, fields),
    error: (msg, fields) => log("error", msg, fields),
    status(text) {
      if (!terminal || format === "json") return false;
      if (text === null) {
        if (statusLine !== null && !sink) writeStderr("\r\x1b[2K");
        statusLine = null;
      } else {
        statusLine = text;
        if (!sink) writeStderr(`\r\x1b[2K${text}`);
      }
      return true;
    },
  };
}

/** A logger that drops everything; the default where none is given. */
export const silentLogger: Logger = {
  debug() {},
  info() {},
  warn() {},
  error() {},
  status: () => false,
};

/** A log line captured by {@linkcode createMemoryLogger}. */
export interface CapturedLine {
  level: LogLevel;
  msg: string;
  fields?: LogFields;
}

/** A logger that keeps every line in memory and can wait for one, for tests. */
export interface MemoryLogger extends Logger {
  lines: CapturedLine[];
  /** Resolves with the first line, past or future, for which `match` is true. */
  waitFor(match: (line: CapturedLine) => boolean): Promise<CapturedLine>;
}

/** Creates a {@linkcode MemoryLogger}. */
export function createMemoryLogger(): MemoryLogger {
  const lines: CapturedLine[] = [];
  const waiters = new Set<
    { match: (l: CapturedLine) => boolean; resolve: (l: CapturedLine) => void }
  >();
  const push = (level: LogLevel) => (msg: string, fields?: LogFields) => {
    const line = { level, msg, fields };
    lines.push(line);
    for (const w of waiters) {
      if (w.match(line)) {
        waiters.delete(w);
        w.resolve(line);
      }
    }
  };
  return {
    lines,
    debug: push("debug"),
    info: push("info"),
    warn: push("warn"),
    error: push("error"),
    status: () => false,
    waitFor(match) {
      const found = lines.find(match);
      if (found) return Promise.resolve(found);
      return new Promise((resolve) => waiters.add({ match, resolve }));
    },
  };
}
