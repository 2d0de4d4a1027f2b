import assert from "node:assert/strict";
import { type Config, ConfigError, helpText, loadConfig } from "./config.ts";

Deno.test("config - defaults detect a dead agent within 30 s", () => {
  const c = loadConfig([], {}) as Config;
  assert.equal(c.host, "0.0.0.0");
  assert.equal(c.port, 8080);
  assert.equal(c.databaseUrl, "sqlite://coordinator.db");
  assert.ok(c.agentTimeout + c.healthCheckInterval <= 30);
});

Deno.test("config - flags win over environment variables", () => {
  const c = loadConfig(["--port", "9000"], {
    COORDINATOR_PORT: "7000",
    AGENT_TIMEOUT: "12",
  }) as Config;
  assert.equal(c.port, 9000);
  assert.equal(c.agentTimeout, 12);
});

Deno.test("config - a bad value names the setting and the value", () => {
  assert.throws(() => loadConfig([], { COORDINATOR_PORT: "70000" }), (e: Error) => {
    assert.ok(e instanceof ConfigError);
    assert.match(e.message, /COORDINATOR_PORT="70000"/);
    return true;
  });
  assert.throws(
    () => loadConfig(["--database-url", "mysql://x"], {}),
    /--database-url="mysql:\/\/x"/,
  );
  assert.throws(() => loadConfig(["--nope"], {}), ConfigError);
  assert.throws(() => loadConfig([], { HEALTH_CHECK_INTERVAL: "-1" }), /HEALTH_CHECK_INTERVAL/);
  // Placement rounds plan every rule over every agent: at most one a second.
  assert.throws(() => loadConfig([], { PLACEMENT_INTERVAL: "0.01" }), /PLACEMENT_INTERVAL/);
  assert.equal((loadConfig([], { PLACEMENT_INTERVAL: "1" }) as Config).placementInterval, 1);
});

Deno.test("config - --help lists every setting", () => {
  assert.equal(loadConfig(["--help"], {}), "help");
  const help = helpText();
  for (
    const name of [
      "COORDINATOR_HOST",
      "COORDINATOR_PORT",
      "DATABASE_URL",
      "HEALTH_CHECK_INTERVAL",
      "AGENT_TIMEOUT",
    ]
  ) {
    assert.match(help, new RegExp(name));
  }
  // An empty default says nothing rather than "(default: )".
  assert.doesNotMatch(help, /\(default: \)/);
  assert.match(help, /DATABASE_URL .*\(default: sqlite:\/\/coordinator\.db\)/);
});

Deno.test("config - the client connection cap is auto (from the descriptor limit) or a number", () => {
  assert.equal((loadConfig([], {}) as Config).clientMaxConnections, undefined);
  const c = loadConfig(["--client-max-connections", "500"], { CLIENT_IDLE_TIMEOUT: "5" }) as Config;
  assert.equal(c.clientMaxConnections, 500);
  assert.equal(c.clientIdleTimeout, 5);
  assert.throws(() => loadConfig([], { CLIENT_MAX_CONNECTIONS: "0" }), /CLIENT_MAX_CONNECTIONS/);
});

Deno.test("config - a weak AGENT_TOKEN stops start-up with one line that does not show it", () => {
  for (
    const weak of ["abc", "short-token-15c", "aaaaaaaaaaaaaaaaaaaaaaaa", "abababababababababab"]
  ) {
    assert.throws(() => loadConfig([], { AGENT_TOKEN: weak }), (e: Error) => {
      assert.ok(e instanceof ConfigError);
      assert.match(e.message, /^Invalid setting AGENT_TOKEN \(value not shown\): .*16 characters/);
      assert.ok(!e.message.includes(weak), e.message);
      assert.ok(!e.message.includes("\n"));
      return true;
    });
  }
  assert.throws(
    () => loadConfig(["--agent-token", "abc"], {}),
    /--agent-token \(value not shown\)/,
  );
  assert.throws(() => loadConfig([], { ADMIN_PASSWORD: "pw" }), (e: Error) => {
    assert.ok(!e.message.includes('"pw"'), e.message);
    return true;
  });
  assert.equal(
    (loadConfig([], { AGENT_TOKEN: "test-agent-token" }) as Config).agentToken,
    "test-agent-token",
  );
  assert.equal((loadConfig([], {}) as Config).agentToken, "");
});

Deno.test("config - COORDINATOR_ALLOWED_HOSTS is a comma-separated list", () => {
  const c = loadConfig(["--allowed-hosts", "ollama.example.com, *.corp.example"], {}) as Config;
  assert.deepEqual(c.allowedHosts, ["ollama.example.com", "*.corp.example"]);
  assert.deepEqual((loadConfig([], {}) as Config).allowedHosts, []);
  assert.match(helpText(), /COORDINATOR_ALLOWED_HOSTS/);
});
