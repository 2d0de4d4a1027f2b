/** The coordinator as a library: build it, start it, stop it (used by main.ts, tests, benchmarks). */
export { type Config, loadConfig, testConfig } from "./config.ts";
export { createApp } from "./http/app.ts";
export { type Coordinator, createContext, startCoordinator } from "./server.ts";
