import assert from "node:assert/strict";
import { Bus } from "./bus.ts";
import { logBus, Logger, routeConsole } from "./logger.ts";

Deno.test("log - text lines for terminals, JSON lines when asked, filtered by level", () => {
  const lines: string[] = [];
  const text = new Logger({ level: "info", write: (l) => lines.push(l) });
  text.debug("hidden");
  text.info("shown", { agent: "gpu 01", status: 200, empty: null });
  assert.equal(lines.length, 1);
  assert.match(lines[0], /INFO {2}shown agent="gpu 01" status=200$/);
  const json = new Logger({ level: "warn", format: "json", write: (l) => lines.push(l) });
  json.info("hidden");
  json.error("boom", { code: 1 });
  const entry = JSON.parse(lines[1]);
  assert.equal(entry.level, "error");
  assert.equal(entry.msg, "boom");
  assert.equal(entry.code, 1);
});

Deno.test("log - one line per request and event from the bus, without prompt text", () => {
  const lines: string[] = [];
  const bus = new Bus();
  const stop = logBus(bus, new Logger({ format: "json", write: (l) => lines.push(l) }));
  bus.publish({
    type: "request",
    request: {
      id: "r1",
      route: "/api/chat",
      model: "llama3.2",
      agent_name: "a",
      status: 200,
      latency_ms: 12.34,
      ttft_ms: 3,
      tokens_in: 5,
      tokens_out: 9,
      tokens_per_second: 100,
      attempts: 1,
      error: null,
    },
  });
  bus.publish({
    type: "event",
    event: { id: 1, at: "", kind: "failure", agent_id: "x", message: "Agent failed" },
  });
  stop();
  bus.publish({
    type: "event",
    event: { id: 2, at: "", kind: "status", agent_id: "x", message: "ignored" },
  });
  assert.equal(lines.length, 2);
  const req = JSON.parse(lines[0]);
  assert.equal(req.route, "/api/chat");
  assert.equal(req.ms, 12.3);
  assert.equal(JSON.parse(lines[1]).level, "warn");
});

Deno.test("log - routeConsole turns other modules' console output into log lines", () => {
  const out: string[] = [];
  const err: string[] = [];
  const original = console.error;
  const restore = routeConsole(
    new Logger({ level: "debug", format: "json", write: (l) => out.push(l) }),
    new Logger({ level: "debug", format: "json", write: (l) => err.push(l) }),
  );
  try {
    console.log("Registered the local Ollama at %s", "http://127.0.0.1:11434");
    console.debug("detail");
    console.warn("careful");
    console.error("Health check failed:", new Error("line one\nline two"));
  } finally {
    restore();
  }
  assert.equal(console.error, original);
  assert.deepEqual(out.map((l) => [JSON.parse(l).level, JSON.parse(l).msg]), [
    ["info", "Registered the local Ollama at http://127.0.0.1:11434"],
    ["debug", "detail"],
  ]);
  assert.equal(err.length, 2);
  assert.equal(JSON.parse(err[0]).level, "warn");
  // A multi-line error (with its stack) is still one line, one JSON object.
  const failure = JSON.parse(err[1]);
  assert.equal(failure.level, "error");
  assert.match(failure.msg, /^Health check failed: Error: line one\nline two\n {4}at /);
});
