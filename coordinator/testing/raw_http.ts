/** Helpers for the HTTP listener's and body reader's tests: raw connections and a child server. */

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Opens a raw TCP connection to a loopback port. */
export function connect(port: number): Promise<Deno.TcpConn> {
  return Deno.connect({ hostname: "127.0.0.1", port });
}

/** Writes a string to a connection. */
export async function send(conn: Deno.Conn, text: string | Uint8Array): Promise<void> {
  const bytes = typeof text === "string" ? encoder.encode(text) : text;
  for (let at = 0; at < bytes.length;) at += await conn.write(bytes.subarray(at));
}

/**
 * Resolves once the peer has closed the connection (end of stream or reset), with what was read
 * before. Rejects after `boundMs`, only so that a broken test ends: tests wait on the close.
 */
export async function closedByPeer(conn: Deno.Conn, boundMs = 10_000): Promise<string> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const bound = new Promise<never>((_, reject) =>
    timer = setTimeout(
      () => reject(new Error(`The server kept the connection open for ${boundMs} ms`)),
      boundMs,
    )
  );
  const read = (async () => {
    const chunks: string[] = [];
    const buf = new Uint8Array(4096);
    for (;;) {
      let n: number | null;
      try {
        n = await conn.read(buf);
      } catch {
        n = null;
      }
      if (n === null) return chunks.join("");
      chunks.push(decoder.decode(buf.subarray(0, n)));
    }
  })();
  try {
    return await Promise.race([read, bound]);
  } finally {
    clearTimeout(timer);
  }
}

/** An HTTP/1.1 response read off a raw connection. */
export interface RawResponse {
  status: number;
  headers: Headers;
  body: string;
}

/** Sends one request on a kept-alive connection and reads its response (content-length only). */
export async function exchange(conn: Deno.Conn, request: string): Promise<RawResponse> {
  await send(conn, request);
  const buf = new Uint8Array(64 * 1024);
  let text = "";
  for (;;) {
    const n = await conn.read(buf);
    if (n === null) throw new Error(`Connection closed before a full response: ${text}`);
    text += decoder.decode(buf.subarray(0, n));
    const end = text.indexOf("\r\n\r\n");
    if (end < 0) continue;
    const [statusLine, ...lines] = text.slice(0, end).split("\r\n");
    const headers = new Headers(lines.map((l) => {
      const i = l.indexOf(":");
      return [l.slice(0, i).trim(), l.slice(i + 1).trim()] as [string, string];
    }));
    const length = Number(headers.get("content-length") ?? 0);
    if (text.length - end - 4 < length) continue;
    return {
      status: Number(statusLine.split(" ")[1]),
      headers,
      body: text.slice(end + 4, end + 4 + length),
    };
  }
}

/** A child server process, on a loopback port. */
export interface ServerProcess {
  port: number;
  pid: number;
  url: string;
  /** Standard error so far. */
  stderr(): string;
  /** Resolves when the process exits on its own. */
  exited: Promise<Deno.CommandStatus>;
  stop(): Promise<void>;
}

/**
 * The command that runs `command` at a higher CPU priority where this process may raise
 * priorities (as root), else `command` itself: a measurement of a child's latency on a shared
 * machine then shows the child, not its neighbours. Linux shares the CPU between sessions first
 * (autogroups) and by `nice` only within one, so the child gets a session of its own (`setsid`,
 * the same pid) whose share is raised, and a raised `nice` within it.
 */
export function prioritized(command: string[]): string[] {
  if (Deno.build.os !== "linux" || Deno.uid() !== 0) return command;
  return [
    "setsid",
    "bash",
    "-c",
    'echo -10 > /proc/self/autogroup 2>/dev/null; exec nice -n -10 "$@"',
    "bash",
    ...command,
  ];
}

/**
 * Runs `deno run -A <args>` as a child process, under a descriptor limit when `openFiles` is
 * given (`ulimit -n` in bash, then exec: the process keeps the pid), at a higher CPU priority
 * with `priority` (see {@linkcode prioritized}), and waits until it prints the port it listens on
 * (`listening 1234` or `listening on http://host:1234`).
 */
export async function spawnServer(
  args: string[],
  options: { openFiles?: number; env?: Record<string, string>; priority?: boolean } = {},
): Promise<ServerProcess> {
  const run = [Deno.execPath(), "run", "-A", ...args];
  const deno = options.priority ? prioritized(run) : run;
  const [cmd, cmdArgs] = options.openFiles
    ? ["bash", ["-c", `ulimit -n ${options.openFiles} && exec "$@"`, "bash", ...deno]]
    : [deno[0], deno.slice(1)];
  const process = new Deno.Command(cmd, {
    args: cmdArgs,
    cwd: new URL("../../", import.meta.url),
    env: options.env,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let stderr = "";
  const stderrDone = process.stderr.pipeThrough(new TextDecoderStream()).pipeTo(
    new WritableStream({ write: (s) => void (stderr += s) }),
  );
  const lines = process.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let out = "";
  let port = 0;
  while (!port) {
    const { value, done } = await lines.read();
    if (done) {
      await stderrDone;
      throw new Error(`Cannot start ${args.join(" ")}: it exited\n${stderr}`);
    }
    out += value;
    const m = out.match(/listening (?:on \S+:)?(\d+)/);
    if (m) port = Number(m[1]);
  }
  // Keep draining standard output so that the child never blocks on it.
  const stdoutDone = (async () => {
    while (!(await lines.read()).done) { /* drain */ }
  })();
  const exited = process.status;
  return {
    port,
    pid: process.pid,
    url: `http://127.0.0.1:${port}`,
    stderr: () => stderr,
    exited,
    async stop() {
      try {
        process.kill("SIGKILL");
      } catch { /* already gone */ }
      await exited;
      await stdoutDone;
      await stderrDone;
    },
  };
}

/**
 * Starts `listener_server.ts` (see {@linkcode spawnServer}). `LISTENER_SERVER_ARGS` in the
 * environment adds arguments: `--plain` (plain `Deno.serve`) or `--array-buffer` show what the
 * tests catch without the listener or the body reader.
 */
export function spawnListenerServer(
  args: string[] = [],
  options: { openFiles?: number } = {},
): Promise<ServerProcess> {
  const extra = Deno.env.get("LISTENER_SERVER_ARGS")?.split(" ").filter(Boolean) ?? [];
  const script = new URL("./listener_server.ts", import.meta.url).pathname;
  return spawnServer([script, ...extra, ...args], options);
}

/** The resident memory of a process, in bytes (Linux). */
export function residentBytes(pid: number): number {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  const kb = Number(status.match(/^VmRSS:\s+(\d+)\s+kB/m)?.[1]);
  return kb * 1024;
}

/** Reads from a connection until `marker` has arrived; returns everything read. */
export async function readUntil(conn: Deno.Conn, marker: string): Promise<string> {
  const buf = new Uint8Array(4096);
  let text = "";
  while (!text.includes(marker)) {
    const n = await conn.read(buf);
    if (n === null) throw new Error(`Connection closed before "${marker}": ${text}`);
    text += decoder.decode(buf.subarray(0, n));
  }
  return text;
}
