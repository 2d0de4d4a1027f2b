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

Deno.test("log - control characters from clients cannot forge lines or drive a terminal", () => {
  const lines: string[] = [];
  const text = new Logger({ write: (l) => lines.push(l) });
  const forged = "llama3.2\n2026-01-01T00:00:00.000Z INFO  request id=fake status=200";
  const hostile = ["\x1b[2J\x1b[31mred", "a\rb", "tab\there", "del\x7f", "csi\x9b31m", "ls\u2028x"];
  text.info(`Agent "${forged}" registered`, { model: forged, agent: "gpu\x1b]0;title\x07" });
  text.warn("plain", Object.fromEntries(hostile.map((h, i) => [`f${i}`, h])));
  text.info("bare\x1bvalue", { id: "no-space\x1b[0m", n: 3 });
  assert.equal(lines.length, 3);
  // deno-lint-ignore no-control-regex
  const unsafe = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/;
  for (const line of lines) assert.ok(!unsafe.test(line), JSON.stringify(line));
  assert.match(lines[0], /registered model="llama3\.2\\n2026/);
  assert.match(lines[0], /agent="gpu\\u001b\]0;title\\u0007"$/);
  assert.match(lines[2], /bare\\u001bvalue id="no-space\\u001b\[0m" n=3$/);

  const json = new Logger({ format: "json", write: (l) => lines.push(l) });
  json.info(forged, { model: hostile.join("") });
  const last = lines.at(-1)!;
  assert.ok(!unsafe.test(last), last);
  assert.equal(JSON.parse(last).msg, forged);
  assert.equal(JSON.parse(last).model, hostile.join(""));
});

Deno.test("log - a request line carries the client's own request id beside ours", () => {
  const lines: string[] = [];
  const bus = new Bus();
  const stop = logBus(bus, new Logger({ write: (l) => lines.push(l) }));
  bus.publish({
    type: "request",
    request: {
      id: "ours",
      client_request_id: "theirs",
      route: "/api/chat",
      model: "evil\nmodel",
      status: 200,
      latency_ms: 1,
      attempts: 1,
    },
  });
  stop();
  assert.equal(lines.length, 1);
  assert.match(lines[0], /request id=ours client_id=theirs route=\/api\/chat model="evil\\nmodel"/);
});
