import assert from "node:assert/strict";
import { type Json, until } from "./testing.ts";
import { cliOptions, parseOllamaHost } from "./cli.ts";
import { parseFault } from "./faults.ts";

Deno.test("simulator - parses OLLAMA_HOST, flags and faults like the CLI", () => {
  assert.deepEqual(parseOllamaHost(undefined), { hostname: "127.0.0.1", port: 11434 });
  assert.deepEqual(parseOllamaHost("0.0.0.0:8080"), { hostname: "0.0.0.0", port: 8080 });
  assert.deepEqual(parseOllamaHost("10.0.0.5"), { hostname: "10.0.0.5", port: 11434 });
  assert.deepEqual(parseOllamaHost(":9000"), { hostname: "0.0.0.0", port: 9000 });
  assert.deepEqual(parseOllamaHost("http://127.0.0.1:7000"), { hostname: "127.0.0.1", port: 7000 });
  assert.deepEqual(parseOllamaHost("[::1]:7001"), { hostname: "::1", port: 7001 });
  assert.deepEqual(parseFault("die_after:3"), { type: "die_after", chunks: 3 });
  assert.deepEqual(parseFault("busy"), { type: "busy" });
  assert.throws(() => parseFault("explode"), TypeError);

  const env: Record<string, string> = {
    OLLAMA_HOST: "127.0.0.1:5000",
    SIM_TPS: "100",
    SIM_FAULT: "busy",
    SIM_MODELS: "a,b",
    OLLAMA_NUM_PARALLEL: "2",
  };
  const opts = cliOptions(
    ["serve", "--fault", "die_after:2", "--load", "30", "--quiet"],
    (n) => env[n],
  );
  assert.equal(opts.hostname, "127.0.0.1");
  assert.equal(opts.port, 5000);
  assert.equal(opts.tokensPerSecond, 100);
  assert.deepEqual(opts.fault, { type: "die_after", chunks: 2 });
  assert.deepEqual(opts.models, ["a", "b"]);
  assert.equal(opts.loadMs, 30);
  assert.equal(opts.parallel, 2);
  assert.equal(opts.quiet, true);
  assert.equal(cliOptions(["--port", "1"], (n) => env[n]).port, 1);
  assert.equal(cliOptions(["--pull", "5000"], () => undefined).pullMs, 5000);
  assert.equal(cliOptions([], (n) => ({ SIM_PULL_MS: "250" })[n]).pullMs, 250);
  assert.equal(cliOptions(["-v"], () => undefined).printVersion, true);
  assert.throws(() => cliOptions(["run", "llama3.2"], () => undefined), TypeError);
  assert.throws(() => cliOptions(["--tps", "fast"], () => undefined), RangeError);
});

Deno.test("simulator - runs as a fake ollama binary", async () => {
  const bin = new URL("../scripts/fake-ollama", import.meta.url).pathname;
  const version = await new Deno.Command(bin, { args: ["--version"] }).output();
  assert.equal(new TextDecoder().decode(version.stdout).trim(), "ollama version is 0.12.6");

  const free = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (free.addr as Deno.NetAddr).port;
  free.close();
  const child = new Deno.Command(bin, {
    args: ["serve", "--quiet"],
    env: { OLLAMA_HOST: `127.0.0.1:${port}`, SIM_MODELS: "tiny:1b" },
    stdout: "null",
    stderr: "null",
  }).spawn();
  try {
    await until(async () => {
      try {
        const res = await fetch(`http://127.0.0.1:${port}/`, { method: "HEAD" });
        await res.body?.cancel();
        return res.ok;
      } catch {
        return false;
      }
    }, "the fake ollama to answer HEAD /");
    const tags = await (await fetch(`http://127.0.0.1:${port}/api/tags`)).json();
    assert.deepEqual(tags.models.map((m: Json) => m.name), ["tiny:1b"]);
  } finally {
    child.kill("SIGTERM");
  }
  const status = await child.status;
  assert.equal(status.code, 0);
});
