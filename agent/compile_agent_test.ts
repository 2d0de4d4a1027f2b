import assert from "node:assert/strict";
import {
  compileArgs,
  isDenortDownloadFailure,
  outputName,
  TARGETS,
} from "../scripts/compile_agent.ts";

Deno.test("compile agent - builds the five targets with the agent's permissions", () => {
  assert.equal(TARGETS.length, 5);
  assert.equal(
    outputName("aarch64-apple-darwin"),
    "ollama-coordinator-agent-aarch64-apple-darwin",
  );
  assert.deepEqual(compileArgs("x86_64-pc-windows-msvc", "dist", "agent/main.ts"), [
    "compile",
    "--allow-net",
    "--allow-read",
    "--allow-env",
    "--allow-sys",
    "--allow-run",
    "--target",
    "x86_64-pc-windows-msvc",
    "--output",
    "dist/ollama-coordinator-agent-x86_64-pc-windows-msvc",
    "agent/main.ts",
  ]);
});

Deno.test("compile agent - recognises a denort download failure", () => {
  const stderr = "error: Writing deno compile executable to temporary file 'x'\n\nCaused by:\n" +
    "    0: Setting up base binary.\n" +
    "    1: error sending request for url (https://example.invalid/denort-x86_64-unknown-linux-gnu.zip): " +
    "client error (Connect): dns error: failed to lookup address information\n";
  assert.equal(isDenortDownloadFailure(stderr), true);
  assert.equal(isDenortDownloadFailure('error: Module not found "file:///x.ts"'), false);
});
