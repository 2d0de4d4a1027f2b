/**
 * The coordinator's entry point: configuration → database → app → serve.
 * `deno task coordinator --help` lists the settings.
 */
import { ConfigError, helpText, loadConfig } from "./config.ts";
import { startCoordinator } from "./server.ts";

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
  const stop = async (signal: string) => {
    console.log(`${signal} received: finishing in-flight requests, then stopping`);
    await coordinator.stop();
    Deno.exit(0);
  };
  Deno.addSignalListener("SIGINT", () => stop("SIGINT"));
  if (Deno.build.os !== "windows") Deno.addSignalListener("SIGTERM", () => stop("SIGTERM"));
}
