/**
 * The coordinator's entry point: configuration → database → app → serve.
 * `deno task coordinator --help` lists the settings.
 */
import { ConfigError, helpText, loadConfig } from "./config.ts";
import { hostname } from "node:os";
import { startCoordinator } from "./server.ts";

/** Shows the secrets generated at the first start, once, with the command that starts an agent. */
function printFirstStart(first: { agentToken?: string; adminPassword?: string }, port: number) {
  if (!first.agentToken && !first.adminPassword) return;
  const lines = ["", "First start: these secrets are shown once and stored only as hashes."];
  if (first.agentToken) {
    lines.push(
      `  Agent token: ${first.agentToken}`,
      "  Start an agent on each Ollama machine with:",
      `    COORDINATOR_URL=http://${hostname()}:${port} AGENT_TOKEN=${first.agentToken} deno task agent`,
    );
  }
  if (first.adminPassword) {
    lines.push(
      `  Admin password: ${first.adminPassword}`,
      `  Sign in to the dashboard at http://${hostname()}:${port}/dashboard`,
    );
  }
  lines.push("  Set AGENT_TOKEN / ADMIN_PASSWORD to choose your own instead.", "");
  console.log(lines.join("\n"));
}

if (import.meta.main) {
  let config;
  try {
    config = loadConfig();
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e;
    console.error(e.message);
    Deno.exit(2);
  }
  if (config === "help") {
    console.log(helpText());
    Deno.exit(0);
  }
  const coordinator = await startCoordinator(config);
  const { registry } = coordinator.ctx;
  console.log(
    `Ollama Coordinator listening on http://${config.host}:${coordinator.port} ` +
      `(database ${config.databaseUrl}, ${registry.all().length} agents known)`,
  );
  console.log(
    `Point Ollama clients at ${coordinator.url} and OpenAI clients at ${coordinator.url}/v1`,
  );
  printFirstStart(coordinator.firstStart, config.port === 0 ? coordinator.port : config.port);
  const stop = async (signal: string) => {
    console.log(`${signal} received: finishing in-flight requests, then stopping`);
    await coordinator.stop();
    Deno.exit(0);
  };
  Deno.addSignalListener("SIGINT", () => stop("SIGINT"));
  if (Deno.build.os !== "windows") Deno.addSignalListener("SIGTERM", () => stop("SIGTERM"));
}
