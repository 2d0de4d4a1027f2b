import assert from "node:assert/strict";
import { createLogger, createMemoryLogger, formatJsonLine, formatTextLine } from "./log.ts";

const time = new Date("2025-01-02T03:04:05.000Z");

Deno.test("log - text lines carry time, level, message and quoted fields", () => {
  assert.equal(
    formatTextLine(time, "info", "Registered", { id: "a1", url: "http://x", note: "two words" }),
    '2025-01-02T03:04:05.000Z INFO  Registered id=a1 url=http://x note="two words"',
  );
  assert.equal(
    formatTextLine(time, "warn", "Failed", { error: new Error("boom"), n: 3, skip: undefined }),
    '2025-01-02T03:04:05.000Z WARN  Failed error="boom" n=3',
  );
});

Deno.test("log - json lines are one object per line", () => {
  const line = formatJsonLine(time, "error", "Failed", { error: new Error("boom"), n: 3 });
  assert.deepEqual(JSON.parse(line), {
    time: "2025-01-02T03:04:05.000Z",
    level: "error",
    msg: "Failed",
    error: "boom",
    n: 3,
  });
});

Deno.test("log - lines below the level are dropped", () => {
  const lines: string[] = [];
  const logger = createLogger({ level: "warn", sink: (l) => lines.push(l), now: () => time });
  logger.debug("d");
  logger.info("i");
  logger.warn("w");
  logger.error("e");
  assert.deepEqual(lines.map((l) => l.split(" ").at(-1)), ["w", "e"]);
});

Deno.test("log - the status line is only offered on a terminal", () => {
  const plain = createLogger({ sink: () => {} });
  assert.equal(plain.status("50%"), false);
  const tty = createLogger({ sink: () => {}, terminal: true });
  assert.equal(tty.status("50%"), true);
  const json = createLogger({ sink: () => {}, terminal: true, format: "json" });
  assert.equal(json.status("50%"), false);
});

Deno.test("log - memory logger resolves waits on past and future lines", async () => {
  const logger = createMemoryLogger();
  logger.info("first");
  assert.equal((await logger.waitFor((l) => l.msg === "first")).level, "info");
  const later = logger.waitFor((l) => l.msg.startsWith("ollama:"));
  logger.warn("ollama: hello");
  assert.equal((await later).msg, "ollama: hello");
});
