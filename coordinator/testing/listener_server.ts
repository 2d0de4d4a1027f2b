/**
 * A small server for the listener's and the body reader's process tests: the coordinator's front
 * door (or plain `Deno.serve` with `--plain`, to show what breaks without it) and three routes.
 *
 * - `GET /version`: a tiny JSON answer, the probe;
 * - `POST /echo`: reads the body with {@linkcode readBody} (64 MiB limit), answers its length
 *   (`--array-buffer`: with `Request.arrayBuffer()`, as the coordinator did before);
 * - `GET /stats`: the listener's counters, and `reading`, the bodies being read now.
 *
 * Prints `listening <port>` on standard output once it accepts connections.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { BodyError, readBody } from "../http/body.ts";
import { type HttpListener, serve } from "../http/listener.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    port: { type: "string", default: "0" },
    plain: { type: "boolean", default: false },
    "array-buffer": { type: "boolean", default: false },
    "max-connections": { type: "string" },
    "header-timeout": { type: "string" },
    "idle-timeout": { type: "string" },
    "body-timeout": { type: "string" },
  },
});
const num = (v: string | undefined) => v === undefined ? undefined : Number(v);
const bodyTimeoutMs = num(values["body-timeout"]);

let listener: HttpListener | undefined;
let reading = 0;
async function handler(req: Request): Promise<Response> {
  const path = new URL(req.url).pathname;
  if (path === "/version") return Response.json({ version: "0.0.0" });
  if (path === "/stats") return Response.json({ ...listener?.stats(), reading });
  if (path === "/echo") {
    reading++;
    try {
      const bytes = values["array-buffer"]
        ? await req.arrayBuffer()
        : await readBody(req, { limit: 64 * 1024 * 1024, timeoutMs: bodyTimeoutMs });
      return Response.json({ length: bytes.byteLength });
    } catch (error) {
      if (error instanceof BodyError) {
        return Response.json({ error: error.message }, { status: error.status });
      }
      throw error;
    } finally {
      reading--;
    }
  }
  return Response.json({ error: "404 page not found" }, { status: 404 });
}

// As the coordinator does at start. Deno 2.9.6 sets up its signal handling on the first
// listener, a moment after start if none is registered, and panics when descriptors have run
// out by then (ext/signals/lib.rs: `Signals::new(..).unwrap()`).
Deno.addSignalListener("SIGTERM", () => Deno.exit(0));

const onListen = (addr: Deno.NetAddr) => console.log(`listening ${addr.port}`);
if (values.plain) {
  Deno.serve({ hostname: "127.0.0.1", port: Number(values.port), onListen }, handler);
} else {
  listener = serve({
    hostname: "127.0.0.1",
    port: Number(values.port),
    maxConnections: num(values["max-connections"]),
    headerTimeoutMs: num(values["header-timeout"]),
    idleTimeoutMs: num(values["idle-timeout"]),
    onListen,
  }, handler);
}
