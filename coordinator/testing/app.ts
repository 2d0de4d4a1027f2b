/** Helpers for the coordinator's tests: an in-memory coordinator and registration bodies. */
import type { RegisterRequest } from "@oc/shared";
import { type Config, TEST_AGENT_TOKEN, testConfig } from "../config.ts";
import { createApp } from "../http/app.ts";
import { closeContext, createContext, startCoordinator } from "../server.ts";
import type { AppContext } from "../context.ts";
import type { Bus } from "../telemetry/bus.ts";
import { EventLog } from "../telemetry/event_log.ts";
import { Registry } from "../fleet/registry.ts";
import { openStore } from "../store/open.ts";
import { type SimOptions, type Simulator, startSimulator } from "@oc/simulator";

/** A controllable clock. */
export class FakeClock {
  constructor(public ms = Date.parse("2026-01-01T00:00:00Z")) {}
  now = (): number => this.ms;
  advance(ms: number): void {
    this.ms += ms;
  }
}

/** An in-process coordinator (no network) with an in-memory database. */
export async function testApp(
  overrides: Partial<Config> = {},
  options: { now?: () => number; random?: () => number } = {},
) {
  const ctx: AppContext = await createContext(testConfig(overrides), options);
  const app = createApp(ctx);
  const adminKey = (await ctx.security.createKey("tests", "admin")).key;
  const request = (path: string, init: RequestInit & { json?: unknown } = {}) => {
    const { json, ...rest } = init;
    if (json !== undefined) {
      rest.body = typeof json === "string" ? json : JSON.stringify(json);
      rest.headers = { "content-type": "application/json", ...rest.headers };
      rest.method ??= "POST";
    }
    return app.request(path, rest);
  };
  /** A request with the admin API key. */
  const admin = (path: string, init: RequestInit & { json?: unknown } = {}) =>
    request(path, { ...init, headers: { authorization: `Bearer ${adminKey}`, ...init.headers } });
  /** Registers an agent with the agent token; returns its id and heartbeat secret. */
  const register = async (body: unknown) => {
    const res = await request("/api/agents", {
      json: body,
      headers: { authorization: `Bearer ${TEST_AGENT_TOKEN}` },
    });
    return await res.json() as { agent_id: string; agent_secret: string; status: string };
  };
  const close = () => closeContext(ctx);
  /** A heartbeat signed with the agent's secret. */
  const heartbeat = (secret: string, body: unknown) =>
    request("/api/health", { json: body, headers: { authorization: `Bearer ${secret}` } });
  return {
    ctx,
    app,
    request,
    admin,
    register,
    heartbeat,
    adminKey,
    close,
    [Symbol.asyncDispose]: close,
  };
}

/** A registry on an in-memory store, with its event log, for unit tests. */
export async function memoryRegistry(
  options: { now?: () => number; bus?: Bus; agentTimeoutMs?: number; url?: string } = {},
) {
  const store = await openStore(options.url ?? "sqlite::memory:");
  const snapshot = await store.load();
  const events = new EventLog(store, { bus: options.bus, now: options.now });
  const registry = new Registry(store, {
    agentTimeoutMs: options.agentTimeoutMs ?? 20_000,
    now: options.now,
    bus: options.bus,
    events,
    agents: snapshot.agents,
  });
  const close = async () => {
    await Promise.all([events.close(), registry.flush()]);
    await store.close();
  };
  return { store, events, registry, close, [Symbol.asyncDispose]: close };
}

/** A valid registration body, with overrides. */
export function registration(overrides: Partial<RegisterRequest> = {}): RegisterRequest {
  return {
    machine_name: "gpu-01",
    ip_address: "127.0.0.1",
    ollama_version: "0.12.6",
    ollama_port: 11434,
    parallel: 2,
    models: [{ name: "llama3.2:latest", size: 2_000_000_000 }],
    ...overrides,
  };
}

/** Counts the rows of a table (after writing what the services buffer). */
export async function countRows(
  ctx: AppContext,
  table: "agents" | "events" | "requests",
): Promise<number> {
  await Promise.all([ctx.log.flush(), ctx.events.flush(), ctx.registry.flush()]);
  return (await ctx.store.counts())[table];
}

/** One simulated machine in a test fleet. */
export interface FleetMember extends SimOptions {
  name: string;
  parallel?: number;
}

/**
 * A real coordinator on a loopback port with simulated Ollama servers registered as agents.
 * Close it with `await using` or `close()`.
 */
export async function startFleet(members: FleetMember[], overrides: Partial<Config> = {}) {
  const coordinator = await startCoordinator(
    testConfig({ healthCheckInterval: 3600, ...overrides }),
  );
  const adminKey = (await coordinator.ctx.security.createKey("tests", "admin")).key;
  const adminHeaders = { authorization: `Bearer ${adminKey}`, "content-type": "application/json" };
  const sims: Record<string, Simulator> = {};
  const ids: Record<string, string> = {};
  for (const m of members) {
    // Faults are switched on after registration, which reads the simulator's model lists.
    const sim = await startSimulator({ quiet: true, ...m, fault: { type: "none" } });
    sims[m.name] = sim;
    const res = await fetch(`${coordinator.url}/api/agents`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${TEST_AGENT_TOKEN}` },
      body: JSON.stringify(registration({
        machine_name: m.name,
        ollama_port: sim.port,
        parallel: m.parallel ?? 4,
        models: await (await fetch(`${sim.url}/api/tags`)).json().then((t) => t.models),
        loaded_models: await (await fetch(`${sim.url}/api/ps`)).json().then((t) => t.models),
      })),
    });
    ids[m.name] = (await res.json()).agent_id;
    if (m.fault) await sim.setFault(m.fault);
  }
  const close = async () => {
    await Promise.all(Object.values(sims).map((s) => s.close()));
    await coordinator.stop();
  };
  return {
    coordinator,
    url: coordinator.url,
    sims,
    ids,
    adminKey,
    adminHeaders,
    close,
    [Symbol.asyncDispose]: close,
  };
}
