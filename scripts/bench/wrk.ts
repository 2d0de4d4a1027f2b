/**
 * wrk as the load generator of `deno task bench`: a C client with one thread, so the client is
 * never what is measured (a fetch loop in Deno costs as much per request as the servers it
 * measures).
 *
 * @module
 */

/** Where a command is on PATH (or in /usr/sbin, /sbin), or null. */
export function which(cmd: string): string | null {
  for (const dir of (Deno.env.get("PATH") ?? "").split(":").concat(["/usr/sbin", "/sbin"])) {
    try {
      if (Deno.statSync(`${dir}/${cmd}`).isFile) return `${dir}/${cmd}`;
    } catch { /* not here */ }
  }
  return null;
}

/**
 * The small non-streaming chat the benchmarks post with wrk: the bench upstream answers it with 8
 * tokens at once, so what is measured is the proxy, not the generation.
 */
export const SMALL_CHAT = JSON.stringify({
  model: "llama3.2",
  messages: [{ role: "user", content: "hi" }],
  stream: false,
  options: { num_predict: 8 },
});

/** What one wrk run reports; latencies in ms. */
export interface WrkResult {
  rps: number;
  /** Requests completed in the run. */
  requests: number;
  p50: number;
  p99: number;
  /** Socket errors (connect, read, write, timeout) plus non-2xx/3xx answers. */
  errors: number;
}

/** Reads wrk's `--latency` report. */
export function parseWrk(text: string): WrkResult {
  const ms = (label: string) => {
    const m = new RegExp(`\\s${label}%\\s+([\\d.]+)(us|ms|s)\\b`).exec(text);
    if (!m) return NaN;
    const v = Number(m[1]);
    return m[2] === "us" ? v / 1000 : m[2] === "s" ? v * 1000 : v;
  };
  const rps = /Requests\/sec:\s+([\d.]+)/.exec(text);
  const requests = /(\d+) requests in /.exec(text);
  const socket = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(text);
  const non2xx = /Non-2xx or 3xx responses: (\d+)/.exec(text);
  const errors = (socket ? socket.slice(1).reduce((n, x) => n + Number(x), 0) : 0) +
    (non2xx ? Number(non2xx[1]) : 0);
  return {
    rps: rps ? Number(rps[1]) : NaN,
    requests: requests ? Number(requests[1]) : NaN,
    p50: ms("50"),
    p99: ms("99"),
    errors,
  };
}

/**
 * Runs `wrk -t1 -cN -dS --latency`, POSTing `body` as JSON to `url`; NaN figures when wrk is
 * missing.
 */
export async function wrk(
  url: string,
  options: { connections: number; seconds: number; body: string },
): Promise<WrkResult> {
  const bin = which("wrk");
  if (!bin) return { rps: NaN, requests: NaN, p50: NaN, p99: NaN, errors: 0 };
  const script = await Deno.makeTempFile({ suffix: ".lua" });
  await Deno.writeTextFile(
    script,
    `wrk.method = "POST"\nwrk.body = ${JSON.stringify(options.body)}\n` +
      `wrk.headers["Content-Type"] = "application/json"\n`,
  );
  try {
    const out = await new Deno.Command(bin, {
      args: [
        "-t1",
        `-c${options.connections}`,
        `-d${options.seconds}s`,
        "--latency",
        "-s",
        script,
        url,
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    return parseWrk(new TextDecoder().decode(out.stdout));
  } finally {
    await Deno.remove(script);
  }
}
