import assert from "node:assert/strict";
import {
  ConfigError,
  configFrom,
  DEFAULT_TIMING,
  helpText,
  loadConfig,
  SETTINGS,
} from "./config.ts";

const hostname = () => "box-from-os";

function run(args: string[], env: Record<string, string> = {}) {
  const loaded = loadConfig(args, { env, hostname });
  assert.equal(loaded.action, "run");
  return (loaded as Extract<typeof loaded, { action: "run" }>).config;
}

Deno.test("config - defaults apply when nothing is set", () => {
  const config = run([]);
  assert.deepEqual(config.coordinatorUrls, ["http://localhost:8080"]);
  assert.equal(config.ollamaPort, 11434);
  assert.equal(config.ollamaBindHost, "0.0.0.0");
  assert.equal(config.machineName, "box-from-os");
  assert.equal(config.pullTimeoutSecs, 0);
  assert.equal(config.registerRetrySecs, 5);
  assert.equal(config.registerMaxRetries, 0);
  assert.equal(config.ollamaBin, "ollama");
  assert.equal(config.heartbeatIntervalSecs, 5);
  assert.equal(config.advertiseAddress, undefined);
  assert.deepEqual(config.defaultModels, []);
  assert.equal(config.agentToken, undefined);
  assert.equal(config.numParallel, undefined);
  assert.equal(config.logFormat, "text");
  assert.equal(config.logLevel, "info");
  assert.deepEqual(config.timing, DEFAULT_TIMING);
});

Deno.test("config - reads every setting from the environment", () => {
  const config = run([], {
    COORDINATOR_URL: "https://coord.example:9000/",
    OLLAMA_PORT: "11500",
    AGENT_OLLAMA_BIND: "127.0.0.1",
    OLLAMA_AGENT_MACHINE_NAME: "gpu-01",
    OLLAMA_PULL_TIMEOUT_SECS: "600",
    COORDINATOR_REGISTER_RETRY_SECS: "0",
    COORDINATOR_REGISTER_MAX_RETRIES: "3",
    OLLAMA_BIN: "/opt/ollama/bin/ollama",
    HEARTBEAT_INTERVAL: "2.5",
    AGENT_ADVERTISE_ADDRESS: "10.0.0.7",
    OLLAMA_DEFAULT_MODELS: " llama3.2, qwen3:0.6b ,,",
    AGENT_TOKEN: "s3cret",
    OLLAMA_NUM_PARALLEL: "4",
    LOG_FORMAT: "JSON",
    LOG_LEVEL: "debug",
  });
  assert.deepEqual(config.coordinatorUrls, ["https://coord.example:9000"]);
  assert.equal(config.ollamaPort, 11500);
  assert.equal(config.ollamaBindHost, "127.0.0.1");
  assert.equal(config.machineName, "gpu-01");
  assert.equal(config.pullTimeoutSecs, 600);
  assert.equal(config.registerRetrySecs, 0);
  assert.equal(config.registerMaxRetries, 3);
  assert.equal(config.ollamaBin, "/opt/ollama/bin/ollama");
  assert.equal(config.heartbeatIntervalSecs, 2.5);
  assert.equal(config.advertiseAddress, "10.0.0.7");
  assert.deepEqual(config.defaultModels, ["llama3.2", "qwen3:0.6b"]);
  assert.equal(config.agentToken, "s3cret");
  assert.equal(config.numParallel, 4);
  assert.equal(config.logFormat, "json");
  assert.equal(config.logLevel, "debug");
});

Deno.test("config - a flag wins over its variable", () => {
  const config = run(
    ["--ollama-port", "12000", "--coordinator-url=http://10.1.1.1:8080", "--log-level", "warn"],
    { OLLAMA_PORT: "11500", COORDINATOR_URL: "http://other:1", LOG_LEVEL: "debug" },
  );
  assert.equal(config.ollamaPort, 12000);
  assert.deepEqual(config.coordinatorUrls, ["http://10.1.1.1:8080"]);
  assert.equal(config.logLevel, "warn");
});

Deno.test("config - COORDINATOR_URL lists several coordinators, in order, once each", () => {
  const config = run([], {
    COORDINATOR_URL: " http://a:8080/, https://b.example ,,http://a:8080",
  });
  assert.deepEqual(config.coordinatorUrls, ["http://a:8080", "https://b.example"]);
});

Deno.test("config - machine name falls back to OLLAMA_MACHINE_NAME, HOSTNAME, then the host", () => {
  assert.equal(
    run([], { OLLAMA_MACHINE_NAME: "legacy", HOSTNAME: "h" }).machineName,
    "legacy",
  );
  assert.equal(run([], { HOSTNAME: "from-env" }).machineName, "from-env");
  assert.equal(run([], {}).machineName, "box-from-os");
  assert.equal(
    run(["--machine-name", "flagged"], { OLLAMA_AGENT_MACHINE_NAME: "env" }).machineName,
    "flagged",
  );
});

Deno.test("config - empty variables count as unset", () => {
  const config = run([], { OLLAMA_PORT: "", AGENT_TOKEN: "  ", OLLAMA_PULL_TIMEOUT_SECS: "" });
  assert.equal(config.ollamaPort, 11434);
  assert.equal(config.agentToken, undefined);
  assert.equal(config.pullTimeoutSecs, 0);
});

Deno.test("config - a bad value stops with one line naming the setting and value", () => {
  const cases: [string[], Record<string, string>, string][] = [
    [[], { OLLAMA_PORT: "abc" }, 'Invalid OLLAMA_PORT "abc": expected an integer from 1 to 65535'],
    [[], { OLLAMA_PORT: "70000" }, 'Invalid OLLAMA_PORT "70000"'],
    [["--ollama-port", "0"], {}, 'Invalid --ollama-port "0"'],
    [
      [],
      { COORDINATOR_URL: "ftp://x" },
      'Invalid COORDINATOR_URL "ftp://x": expected an http:// or https:// URL',
    ],
    [
      [],
      { COORDINATOR_URL: "http://a:8080, ftp://b" },
      'Invalid COORDINATOR_URL entry "ftp://b": expected an http:// or https:// URL',
    ],
    [
      ["--coordinator-url", "http://a:8080,b:8080"],
      {},
      'Invalid --coordinator-url entry "b:8080": expected an http:// or https:// URL',
    ],
    [
      [],
      { COORDINATOR_URL: " , " },
      'Invalid COORDINATOR_URL " , ": expected one or more comma-separated http:// or https:// URLs',
    ],
    [[], { COORDINATOR_URL: "not a url" }, 'Invalid COORDINATOR_URL "not a url"'],
    [[], { HEARTBEAT_INTERVAL: "-1" }, 'Invalid HEARTBEAT_INTERVAL "-1"'],
    [[], { LOG_FORMAT: "xml" }, 'Invalid LOG_FORMAT "xml": expected text or json'],
    [[], { LOG_LEVEL: "loud" }, 'Invalid LOG_LEVEL "loud"'],
    [[], { OLLAMA_NUM_PARALLEL: "0" }, 'Invalid OLLAMA_NUM_PARALLEL "0"'],
    [[], { COORDINATOR_REGISTER_MAX_RETRIES: "1.5" }, "Invalid COORDINATOR_REGISTER_MAX_RETRIES"],
    [
      [],
      { OLLAMA_DEFAULT_MODELS: "llama3.2,bad name" },
      'Invalid OLLAMA_DEFAULT_MODELS entry "bad name": expected a model name',
    ],
    [[], { AGENT_ADVERTISE_ADDRESS: "http://x/" }, "Invalid AGENT_ADVERTISE_ADDRESS"],
  ];
  for (const [args, env, expected] of cases) {
    assert.throws(
      () => loadConfig(args, { env, hostname }),
      (error: unknown) => {
        assert.ok(error instanceof ConfigError, `${expected}: ${error}`);
        assert.ok(error.message.startsWith(expected), `${error.message} !~ ${expected}`);
        assert.ok(!error.message.includes("\n"));
        return true;
      },
    );
  }
});

Deno.test("config - an unknown flag is one clear error", () => {
  assert.throws(() => loadConfig(["--bogus"], { env: {}, hostname }), (error: unknown) => {
    assert.ok(error instanceof ConfigError);
    assert.match(error.message, /Unknown option '--bogus'/);
    return true;
  });
});

Deno.test("config - --help lists every setting with its variable and flag", () => {
  assert.deepEqual(loadConfig(["--help"], { env: { OLLAMA_PORT: "bad" }, hostname }), {
    action: "help",
  });
  const help = helpText();
  for (const s of SETTINGS) {
    assert.ok(help.includes(s.env), `help lacks ${s.env}`);
    assert.ok(help.includes(`--${s.flag}`), `help lacks --${s.flag}`);
  }
  assert.deepEqual(loadConfig(["--version"], { env: {}, hostname }), { action: "version" });
  // A setting without a default says nothing about one, rather than "(default: )".
  assert.doesNotMatch(help, /default:?\s*\)/);
  assert.match(help, /--agent-token +AGENT_TOKEN +Token sent when registering/);
});

Deno.test("config - configFrom fills defaults and merges timing", () => {
  const config = configFrom({ ollamaPort: 1234, timing: { stopGraceMs: 5 } });
  assert.equal(config.ollamaPort, 1234);
  assert.deepEqual(config.coordinatorUrls, ["http://localhost:8080"]);
  assert.equal(config.timing.stopGraceMs, 5);
  assert.equal(config.timing.restartBackoffMaxMs, DEFAULT_TIMING.restartBackoffMaxMs);
});

Deno.test("config - the README's agent table has a row per setting, with its flag", async () => {
  const readme = await Deno.readTextFile(new URL("../README.md", import.meta.url));
  const section = readme.split("### Agent settings")[1]?.split("\n### ")[0] ?? "";
  const rows = section.split("\n").filter((l) => l.startsWith("| `"));
  const table = rows.map((l) => l.split("|").slice(1, 3).map((c) => c.trim()));
  assert.deepEqual(
    table.map(([env, flag]) => `${env} ${flag}`).sort(),
    SETTINGS.map((s) => `\`${s.env}\` \`--${s.flag}\``).sort(),
  );
});
