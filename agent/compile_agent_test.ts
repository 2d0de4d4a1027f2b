import assert from "node:assert/strict";
import {
  agentTaskCommand,
  bundleArgs,
  compileArgs,
  isDenortDownloadFailure,
  outputName,
  TARGETS,
} from "../scripts/compile_agent.ts";
import { AGENT_VERSION } from "./config.ts";

const ROOT = new URL("../", import.meta.url);

Deno.test("compile agent - builds the five targets with the agent's permissions", () => {
  assert.equal(TARGETS.length, 5);
  assert.equal(
    outputName("aarch64-apple-darwin"),
    "ollama-coordinator-agent-aarch64-apple-darwin",
  );
  assert.deepEqual(compileArgs("x86_64-pc-windows-msvc", "dist", "dist/agent.js"), [
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
    "dist/agent.js",
  ]);
});

Deno.test("compile agent - deno task agent runs the bundle the executables embed", async () => {
  const config = JSON.parse(await Deno.readTextFile(new URL("deno.json", ROOT)));
  assert.equal(config.tasks.agent, agentTaskCommand());
  assert.deepEqual(bundleArgs("dist"), [
    "bundle",
    "--lock=agent/run.lock",
    "--frozen",
    "--quiet",
    "--platform",
    "deno",
    "--output",
    "dist/agent.js",
    "agent/main.ts",
  ]);
});

Deno.test("compile agent - the bundled agent runs and validates its settings", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const run = (args: string[], env: Record<string, string> = {}) =>
      new Deno.Command(Deno.execPath(), { args, cwd: ROOT, env, stdin: "null" }).output();
    const bundled = await run(bundleArgs(dir));
    assert.equal(bundled.code, 0, new TextDecoder().decode(bundled.stderr));
    // The shared schemas are zod/mini: zod's classic API or all its locales would cost the idle
    // agent megabytes of resident memory (deno task bench:agent).
    const code = await Deno.readTextFile(`${dir}/agent.js`);
    assert.ok(code.includes('"ZodMiniType"'));
    assert.ok(!code.includes('"ZodType"'), "the agent bundles zod's classic API");
    assert.ok(!code.includes("/locales/de.js"), "the agent bundles every zod locale");
    const version = await run(["run", "--allow-all", `${dir}/agent.js`, "--version"]);
    assert.equal(new TextDecoder().decode(version.stdout).trim(), AGENT_VERSION);
    const bad = await run(["run", "--allow-all", `${dir}/agent.js`], { OLLAMA_PORT: "70000" });
    assert.equal(bad.code, 2);
    assert.equal(
      new TextDecoder().decode(bad.stderr).trim(),
      'Invalid OLLAMA_PORT "70000": expected an integer from 1 to 65535',
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("compile agent - recognises a denort download failure", () => {
  const stderr = "error: Writing deno compile executable to temporary file 'x'\n\nCaused by:\n" +
    "    0: Setting up base binary.\n" +
    "    1: error sending request for url (https://example.invalid/denort-x86_64-unknown-linux-gnu.zip): " +
    "client error (Connect): dns error: failed to lookup address information\n";
  assert.equal(isDenortDownloadFailure(stderr), true);
  assert.equal(isDenortDownloadFailure('error: Module not found "file:///x.ts"'), false);
});
