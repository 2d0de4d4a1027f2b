/**
 * Test helpers: a fake coordinator that speaks the agent API on a loopback port and records
 * what the agent sends. Used by the agent's tests; not part of the agent program.
 */
import {
  type AgentCommand,
  CommandProgress,
  HealthRequest,
  RegisterRequest,
  type RegisterResponse,
} from "@oc/shared";

/** A request the fake coordinator received. */
export interface Recorded<T> {
  body: T;
  /** The `Authorization` header, if any. */
  auth: string | null;
}

/** Options of {@linkcode startFakeCoordinator}. */
export interface FakeCoordinatorOptions {
  /** Registration must carry `Bearer <token>`, else 401. */
  token?: string;
  /** Handed out as `agent_secret`; heartbeats must then carry it, else 401. */
  secret?: string;
  /** Sent as `heartbeat_interval` in the registration reply. */
  heartbeatInterval?: number;
  port?: number;
  /**
   * Known agents (machine name, address and port → agent id), as in the coordinators' database.
   * Fake coordinators given the same map act as coordinators sharing one database: an agent that
   * registers with another keeps its id, and a restart forgets nobody.
   */
  agents?: Map<string, string>;
}

/** A running fake coordinator. */
export interface FakeCoordinator {
  readonly url: string;
  readonly port: number;
  readonly registrations: Recorded<RegisterRequest>[];
  readonly heartbeats: Recorded<HealthRequest>[];
  readonly progress: (Recorded<CommandProgress> & { agentId: string })[];
  /** Bodies that failed the shared schemas (the agent must send none). */
  readonly invalid: { path: string; body: unknown }[];
  /** Forgets every agent: the next heartbeat gets 404. */
  forget(): void;
  /** Answers every request with this status from now on (a 5xx: a coordinator in trouble). */
  failWith(status: number | undefined): void;
  /** Changes the secret handed out and required from now on (old secrets get 401). */
  setSecret(secret: string): void;
  /** Hands `command` out on the next heartbeat. */
  queueCommand(command: AgentCommand): void;
  /** Resolves once `check()` is true, checked now and after every request. */
  waitFor(check: () => boolean): Promise<void>;
  /** Stops listening (the agent sees connection errors). */
  stop(): Promise<void>;
  /**
   * Listens again on the same port; known agents are forgotten as after a real restart, unless
   * they are kept in a shared `agents` map.
   */
  restart(): Promise<void>;
  close(): Promise<void>;
}

/** Starts a {@linkcode FakeCoordinator} on 127.0.0.1 (port 0 = any free port). */
export function startFakeCoordinator(
  options: FakeCoordinatorOptions = {},
): Promise<FakeCoordinator> {
  const registrations: Recorded<RegisterRequest>[] = [];
  const heartbeats: Recorded<HealthRequest>[] = [];
  const progress: (Recorded<CommandProgress> & { agentId: string })[] = [];
  const invalid: { path: string; body: unknown }[] = [];
  const known = options.agents ?? new Map<string, string>();
  let failure: number | undefined;
  let pending: AgentCommand[] = [];
  let secret = options.secret;
  const waiters = new Set<{ check: () => boolean; resolve: () => void }>();

  function notify(): void {
    for (const w of waiters) {
      if (w.check()) {
        waiters.delete(w);
        w.resolve();
      }
    }
  }

  const json = (status: number, body: unknown) => Response.json(body, { status });

  async function handle(req: Request): Promise<Response> {
    const url = new URL(req.url);
    const auth = req.headers.get("authorization");
    let raw: unknown;
    try {
      raw = await req.json();
    } catch {
      return json(400, { error: "Invalid JSON" });
    }
    try {
      if (failure !== undefined) return json(failure, { error: `Failing with ${failure}` });
      if (req.method === "POST" && url.pathname === "/api/agents") {
        if (options.token && auth !== `Bearer ${options.token}`) {
          return json(401, { error: "Invalid agent token" });
        }
        const parsed = RegisterRequest.safeParse(raw);
        if (!parsed.success) {
          invalid.push({ path: url.pathname, body: raw });
          return json(400, { error: parsed.error.message });
        }
        registrations.push({ body: parsed.data, auth });
        const { machine_name, ip_address, ollama_port } = parsed.data;
        const key = `${machine_name} ${ip_address}:${ollama_port}`;
        const existing = known.get(key);
        const agentId = existing ?? crypto.randomUUID();
        known.set(key, agentId);
        const reply: RegisterResponse = {
          agent_id: agentId,
          status: existing ? "updated" : "registered",
        };
        if (secret) reply.agent_secret = secret;
        if (options.heartbeatInterval) reply.heartbeat_interval = options.heartbeatInterval;
        return json(200, reply);
      }
      if (req.method === "POST" && url.pathname === "/api/health") {
        const parsed = HealthRequest.safeParse(raw);
        if (!parsed.success) {
          invalid.push({ path: url.pathname, body: raw });
          return json(400, { error: parsed.error.message });
        }
        if (![...known.values()].includes(parsed.data.agent_id)) {
          return json(404, { error: "Unknown agent" });
        }
        if (secret && auth !== `Bearer ${secret}`) {
          return json(401, { error: "Invalid agent secret" });
        }
        heartbeats.push({ body: parsed.data, auth });
        const commands = pending;
        pending = [];
        return json(200, commands.length ? { ok: true, commands } : { ok: true });
      }
      const match = url.pathname.match(/^\/api\/agents\/([^/]+)\/progress$/);
      if (req.method === "POST" && match) {
        const parsed = CommandProgress.safeParse(raw);
        if (!parsed.success) {
          invalid.push({ path: url.pathname, body: raw });
          return json(400, { error: parsed.error.message });
        }
        progress.push({ body: parsed.data, auth, agentId: decodeURIComponent(match[1]) });
        return json(200, { ok: true });
      }
      return json(404, { error: "Not found" });
    } finally {
      notify();
    }
  }

  function serve(port: number): Deno.HttpServer<Deno.NetAddr> {
    return Deno.serve({ hostname: "127.0.0.1", port, onListen: () => {} }, handle);
  }

  let server: Deno.HttpServer<Deno.NetAddr> | undefined = serve(options.port ?? 0);
  const port = server.addr.port;
  const url = `http://127.0.0.1:${port}`;

  async function stop(): Promise<void> {
    const s = server;
    server = undefined;
    await s?.shutdown();
  }

  return Promise.resolve({
    url,
    port,
    registrations,
    heartbeats,
    progress,
    invalid,
    forget: () => known.clear(),
    failWith: (status) => failure = status,
    setSecret: (s) => secret = s,
    queueCommand: (command) => pending.push(command),
    waitFor(check) {
      if (check()) return Promise.resolve();
      return new Promise((resolve) => waiters.add({ check, resolve }));
    },
    stop,
    async restart() {
      await stop();
      if (!options.agents) known.clear();
      server = serve(port);
    },
    close: stop,
  });
}
