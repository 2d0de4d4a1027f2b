import assert from "node:assert/strict";
import { createMemoryLogger } from "./log.ts";
import {
  createProgressDisplay,
  deleteModel,
  ensureModels,
  formatProgressBar,
  formatProgressLine,
  pullModel,
  type PullProgress,
  runModelCommand,
} from "./models.ts";

type PullMode = "ok" | "error-line" | "status-404" | "hang" | "truncated";

/** A minimal Ollama for pull/delete/tags, with a chosen pull behaviour. */
function startTinyOllama(installed: string[], mode: PullMode = "ok") {
  const pulls: string[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (req) => {
    const url = new URL(req.url);
    if (url.pathname === "/api/tags") {
      return Response.json({ models: installed.map((name) => ({ name, model: name, size: 1 })) });
    }
    if (url.pathname === "/api/delete" && req.method === "DELETE") {
      const { model } = await req.json();
      const i = installed.indexOf(model);
      if (i === -1) return Response.json({ error: `model '${model}' not found` }, { status: 404 });
      installed.splice(i, 1);
      return new Response(null, { status: 200 });
    }
    if (url.pathname === "/api/pull" && req.method === "POST") {
      const { model } = await req.json();
      pulls.push(model);
      if (mode === "status-404") {
        return Response.json({ error: "pull model manifest: file does not exist" }, {
          status: 404,
        });
      }
      const lines: unknown[] = [
        { status: "pulling manifest" },
        { status: "pulling abc123", digest: "sha256:abc123", total: 1000, completed: 0 },
        { status: "pulling abc123", digest: "sha256:abc123", total: 1000, completed: 500 },
        { status: "pulling abc123", digest: "sha256:abc123", total: 1000, completed: 1000 },
      ];
      if (mode === "error-line") lines.push({ error: "max retries exceeded: EOF" });
      if (mode === "ok") {
        lines.push({ status: "verifying sha256 digest" }, { status: "success" });
        installed.push(model);
      }
      const text = lines.map((l) => JSON.stringify(l) + "\n").join("");
      if (mode === "hang") {
        const body = new ReadableStream<Uint8Array>({
          start(controller) {
            controller.enqueue(new TextEncoder().encode(text));
          },
        });
        return new Response(body, { headers: { "content-type": "application/x-ndjson" } });
      }
      return new Response(text, { headers: { "content-type": "application/x-ndjson" } });
    }
    return new Response("not found", { status: 404 });
  });
  return {
    url: `http://127.0.0.1:${server.addr.port}`,
    pulls,
    installed,
    close: () => server.shutdown(),
  };
}

Deno.test("models - pull streams progress and resolves on success", async () => {
  const ollama = startTinyOllama([]);
  try {
    const seen: PullProgress[] = [];
    await pullModel(ollama.url, "llama3.2", { onProgress: (p) => seen.push(p) });
    assert.deepEqual(seen[0], { status: "pulling manifest" });
    assert.deepEqual(seen[2], {
      status: "pulling abc123",
      digest: "sha256:abc123",
      total: 1000,
      completed: 500,
    });
    assert.equal(seen.at(-1)?.status, "success");
    assert.deepEqual(ollama.pulls, ["llama3.2"]);
  } finally {
    await ollama.close();
  }
});

Deno.test("models - pull fails with Ollama's message from an error line or status", async () => {
  for (
    const [mode, message] of [
      ["error-line", /Cannot pull model "m": max retries exceeded: EOF/],
      ["status-404", /Cannot pull model "m": pull model manifest: file does not exist/],
      ["truncated", /Cannot pull model "m": the stream ended early/],
    ] as const
  ) {
    const ollama = startTinyOllama([], mode);
    try {
      await assert.rejects(pullModel(ollama.url, "m"), message);
    } finally {
      await ollama.close();
    }
  }
});

Deno.test("models - pull honours the timeout", async () => {
  const ollama = startTinyOllama([], "hang");
  try {
    await assert.rejects(
      pullModel(ollama.url, "big", { timeoutMs: 50 }),
      /Cannot pull model "big": timed out after 0.05 s/,
    );
  } finally {
    await ollama.close();
  }
});

Deno.test("models - pull stops when the agent stops", async () => {
  const ollama = startTinyOllama([], "hang");
  try {
    const controller = new AbortController();
    const pull = pullModel(ollama.url, "big", {
      signal: controller.signal,
      onProgress: () => controller.abort(),
    });
    await assert.rejects(pull, /the agent is stopping/);
  } finally {
    await ollama.close();
  }
});

Deno.test("models - delete removes a model and reports a missing one", async () => {
  const ollama = startTinyOllama(["llama3.2:latest"]);
  try {
    await deleteModel(ollama.url, "llama3.2:latest");
    assert.deepEqual(ollama.installed, []);
    await assert.rejects(
      deleteModel(ollama.url, "llama3.2:latest"),
      /Cannot delete model "llama3.2:latest": model 'llama3.2:latest' not found/,
    );
  } finally {
    await ollama.close();
  }
});

Deno.test("models - default models are pulled only when missing", async () => {
  const ollama = startTinyOllama(["llama3.2:latest", "registry.ollama.ai/library/qwen3:0.6b"]);
  const logger = createMemoryLogger();
  try {
    const result = await ensureModels(ollama.url, ["llama3.2", "qwen3:0.6b", "phi4-mini"], {
      logger,
    });
    assert.deepEqual(result, { pulled: ["phi4-mini"], failed: [] });
    assert.deepEqual(ollama.pulls, ["phi4-mini"]);
    assert.ok(logger.lines.some((l) => l.msg.startsWith("Pulling phi4-mini: 0% of 1.0 KB")));
    assert.ok(logger.lines.some((l) => l.msg === "Pulled default model"));
  } finally {
    await ollama.close();
  }
});

Deno.test("models - a failed default pull is logged and the next model is tried", async () => {
  const ollama = startTinyOllama([], "error-line");
  const logger = createMemoryLogger();
  try {
    const result = await ensureModels(ollama.url, ["a", "b"], { logger });
    assert.deepEqual(result, { pulled: [], failed: ["a", "b"] });
    assert.equal(logger.lines.filter((l) => l.level === "error").length, 2);
  } finally {
    await ollama.close();
  }
});

Deno.test("models - progress bar and progress line formats", () => {
  const p = { status: "pulling abc", digest: "sha256:abc", total: 2_000_000_000, completed: 1e9 };
  assert.equal(
    formatProgressBar("llama3.2", p, 10),
    "llama3.2 [#####-----]  50% 1.0 GB/2.0 GB pulling abc",
  );
  assert.equal(formatProgressBar("m", { status: "pulling manifest" }), "m pulling manifest");
  assert.equal(formatProgressLine("llama3.2", p), "Pulling llama3.2: 50% of 2.0 GB (pulling abc)");
  assert.equal(formatProgressLine("m", { status: "success" }), "Pulling m: success");
});

Deno.test("models - without a terminal progress lines are throttled", () => {
  const logger = createMemoryLogger();
  let now = 0;
  const display = createProgressDisplay("m", logger, { intervalMs: 5000, now: () => now });
  const chunk = (completed: number) => ({
    status: "pulling abc",
    digest: "sha256:abc",
    total: 100,
    completed,
  });
  display.update({ status: "pulling manifest" });
  display.update(chunk(1));
  now = 1000;
  display.update(chunk(2));
  now = 4999;
  display.update(chunk(3));
  now = 6000;
  display.update(chunk(60));
  display.update({ status: "success" });
  display.end();
  assert.deepEqual(logger.lines.map((l) => l.msg), [
    "Pulling m: pulling manifest",
    "Pulling m: 1% of 100 B (pulling abc)",
    "Pulling m: 60% of 100 B (pulling abc)",
    "Pulling m: success",
  ]);
});

Deno.test("models - commands end with one success or error report", async () => {
  const ollama = startTinyOllama(["old:latest"]);
  try {
    const updates: string[] = [];
    const pulled = await runModelCommand(ollama.url, { id: "c1", type: "pull", model: "new" }, {
      onProgress: (u) => updates.push(u.status),
    });
    assert.deepEqual(pulled, { status: "success", done: true });
    assert.ok(updates.includes("pulling abc123"));
    assert.ok(!updates.includes("success"));
    assert.deepEqual(
      await runModelCommand(ollama.url, { id: "c2", type: "delete", model: "old:latest" }),
      { status: "success", done: true },
    );
    const failed = await runModelCommand(ollama.url, {
      id: "c3",
      type: "delete",
      model: "nope",
    });
    assert.equal(failed.status, "error");
    assert.equal(failed.done, true);
    assert.match(failed.error!, /model 'nope' not found/);
  } finally {
    await ollama.close();
  }
});
