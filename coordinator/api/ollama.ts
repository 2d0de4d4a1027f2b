/**
 * Ollama's native API, as one server: inference routed by model, fleet-wide lists, and the
 * server-local routes (pull, push, create, blobs, copy, delete) sent to the right agents.
 */
import { type Context, Hono } from "hono";
import { normalizeModelName, ollamaError } from "@oc/shared";
import type { AppContext } from "../context.ts";
import type { Agent } from "../fleet/registry.ts";
import { BodyError, readBody } from "../http/body.ts";
import { type ProxyDeps, proxyInference } from "../proxy/mod.ts";
import { INFERENCE_BODY_LIMIT, routingInfo } from "../proxy/parse.ts";
import { fanOut, forwardTo, refreshModels } from "../proxy/local.ts";
import { errorResponse, type Flavor } from "../http/errors.ts";
import { access, clientTenant } from "../http/access.ts";
import { requestIdOf } from "../http/request_id.ts";

/** The version the coordinator reports when no agent is online. */
export const FALLBACK_OLLAMA_VERSION = "0.12.6";

/** Builds the handler of an inference route (shared by the native and the /v1 API). */
export function inferenceHandler(
  deps: ProxyDeps,
  options: { flavor: Flavor; route: string; streams: boolean; upstreamPath?: string },
) {
  return async (c: Context): Promise<Response> => {
    const req = c.req.raw;
    const requestId = requestIdOf(req);
    let bytes;
    try {
      bytes = await readBody(req, { limit: INFERENCE_BODY_LIMIT });
    } catch (error) {
      if (!(error instanceof BodyError)) throw error;
      return errorResponse(options.flavor, error.status, error.message, requestId);
    }
    const info = routingInfo(bytes, { flavor: options.flavor, streams: options.streams });
    if (typeof info === "string") return errorResponse(options.flavor, 400, info, requestId);
    const pinned = agentHeader(deps, req);
    if (pinned === null) {
      return errorResponse(
        options.flavor,
        404,
        "The agent named in X-Coordinator-Agent is not known",
        requestId,
      );
    }
    const url = new URL(req.url);
    return proxyInference(deps, {
      route: options.route,
      upstreamPath: (options.upstreamPath ?? url.pathname) + url.search,
      method: req.method,
      headers: req.headers,
      body: bytes,
      model: info.model,
      stream: info.stream,
      flavor: options.flavor,
      requestId,
      signal: req.signal,
      affinity: info.affinity,
      agentId: pinned?.id,
      tenant: clientTenant(c),
    });
  };
}

/** The agent named by `X-Coordinator-Agent`: undefined when absent, null when unknown. */
function agentHeader(deps: Pick<AppContext, "registry">, req: Request): Agent | undefined | null {
  const ref = req.headers.get("x-coordinator-agent");
  if (!ref || ref === "all") return undefined;
  return deps.registry.find(ref) ?? null;
}

function online(ctx: AppContext): Agent[] {
  return ctx.registry.all().filter((a) => a.status === "online");
}

/** The lowest Ollama version among online agents: what every client can rely on. */
export function fleetVersion(ctx: AppContext): string {
  const versions = online(ctx).map((a) => a.ollamaVersion).filter((v) => /^\d+\.\d+\.\d+/.test(v));
  if (versions.length === 0) return FALLBACK_OLLAMA_VERSION;
  const key = (v: string) => v.split(/[.-]/).slice(0, 3).map(Number);
  versions.sort((a, b) => {
    const x = key(a), y = key(b);
    return x[0] - y[0] || x[1] - y[1] || x[2] - y[2];
  });
  return versions[0];
}

/** The union of installed models over online agents, deduplicated by name and digest. */
export function fleetModels(ctx: AppContext) {
  const seen = new Map<string, Agent["models"][number]>();
  for (const a of online(ctx)) {
    for (const m of a.models) {
      const key = `${normalizeModelName(m.name)}@${m.digest ?? ""}`;
      if (!seen.has(key)) seen.set(key, m);
    }
  }
  return [...seen.values()].map((m) => ({ model: m.name, ...m }));
}

const JSON_HEADERS = { "content-type": "application/json; charset=utf-8" };

/** The native inference routes (routed by model, in the request log), and whether they stream. */
export const OLLAMA_INFERENCE: Record<string, boolean> = {
  "/api/generate": true,
  "/api/chat": true,
  "/api/embed": false,
  "/api/embeddings": false,
  "/api/show": false,
};

/** The native Ollama routes. */
export function ollamaRoutes(ctx: AppContext, deps: ProxyDeps): Hono {
  const app = new Hono();
  const infer = (route: string, streams: boolean) =>
    inferenceHandler(deps, { flavor: "ollama", route, streams });

  app.on(["GET", "HEAD"], "/", access.public, (c) => c.text("Ollama is running"));
  app.on(
    ["GET", "HEAD"],
    "/api/version",
    access.client,
    (c) => c.json({ version: fleetVersion(ctx) }),
  );
  app.on(["GET", "HEAD"], "/api/tags", access.client, (c) => c.json({ models: fleetModels(ctx) }));
  app.get("/api/ps", access.client, async () => {
    const agents = online(ctx);
    const results = await fanOut(agents, { path: "/api/ps", method: "GET", timeoutMs: 5000 });
    const models = [];
    for (const r of results) {
      if (r.status !== 200) continue;
      try {
        const list = JSON.parse(r.text).models ?? [];
        ctx.registry.setModels(r.agent, r.agent.models, list);
        models.push(...list);
      } catch { /* skip a malformed answer */ }
    }
    return new Response(JSON.stringify({ models }), { headers: JSON_HEADERS });
  });

  for (const [route, streams] of Object.entries(OLLAMA_INFERENCE)) {
    app.post(route, access.client, infer(route, streams));
  }

  app.post("/api/pull", access.modelManagement, (c) => modelTransfer(ctx, c, "/api/pull"));
  app.post("/api/push", access.modelManagement, (c) => modelTransfer(ctx, c, "/api/push"));
  app.post("/api/create", access.modelManagement, (c) => create(ctx, c));
  app.post("/api/blobs/:digest", access.modelManagement, (c) => blob(ctx, c));
  // Hono routes HEAD through GET routes (a HEAD route never matches): `HEAD /api/blobs/…`, which
  // asks whether the agent has a blob, arrives here; a real GET stays unknown, as in Ollama.
  app.get(
    "/api/blobs/:digest",
    access.modelManagement,
    (c) => c.req.method === "HEAD" ? blob(ctx, c) : c.notFound(),
  );
  app.delete("/api/delete", access.modelManagement, (c) => deleteModel(ctx, c));
  app.post("/api/copy", access.modelManagement, (c) => copyModel(ctx, c));
  return app;
}

async function jsonBody(
  c: Context,
  requestId: string,
): Promise<Record<string, unknown> | Response> {
  let bytes;
  try {
    bytes = await readBody(c.req.raw, { limit: 1024 * 1024 });
  } catch (error) {
    if (!(error instanceof BodyError)) throw error;
    return errorResponse("ollama", error.status, error.message, requestId);
  }
  try {
    const v = JSON.parse(new TextDecoder().decode(bytes));
    if (typeof v === "object" && v !== null && !Array.isArray(v)) return v;
  } catch { /* fall through */ }
  return errorResponse("ollama", 400, "invalid JSON in request body", requestId);
}

function modelOf(body: Record<string, unknown>, ...fields: string[]): string | null {
  for (const f of fields) {
    const v = body[f];
    if (typeof v === "string" && v.trim() && v.length <= 512) return v.trim();
  }
  return null;
}

function withModel(agents: Agent[], model: string): Agent[] {
  const key = normalizeModelName(model);
  return agents.filter((a) => a.modelKeys.has(key));
}

/** Pull or push: to the agent named in X-Coordinator-Agent, to all (`all`), or to one we pick. */
async function modelTransfer(ctx: AppContext, c: Context, path: string): Promise<Response> {
  const requestId = requestIdOf(c.req.raw);
  const body = await jsonBody(c, requestId);
  if (body instanceof Response) return body;
  const model = modelOf(body, "model", "name");
  if (!model) return ollamaError(400, "model is required");
  const verb = path === "/api/pull" ? "pull" : "push";
  const ref = c.req.header("x-coordinator-agent");
  const candidates = online(ctx);
  if (candidates.length === 0) {
    return ollamaError(503, "No agent is online to serve requests", { "retry-after": "5" });
  }
  let targets: Agent[];
  if (ref === "all") targets = candidates;
  else if (ref) {
    const agent = ctx.registry.find(ref);
    if (!agent) return ollamaError(404, "The agent named in X-Coordinator-Agent is not known");
    if (agent.status === "offline") return ollamaError(503, `Agent "${ref}" is offline`);
    targets = [agent];
  } else if (path === "/api/push") {
    targets = withModel(candidates, model).slice(0, 1);
    if (!targets.length) return ollamaError(404, `model "${model}" not found`);
  } else {
    targets = [pickPullTarget(candidates, model)];
  }
  for (const a of targets) {
    ctx.registry.recordEvent(
      "model",
      a.id,
      `API ${verb} of "${model}" on "${ctx.registry.label(a)}"`,
    );
  }
  const raw = JSON.stringify(body);
  const refresh = (a: Agent) => () => refreshModels(ctx.registry, a);
  if (targets.length === 1) {
    return forwardTo(ctx.registry, targets[0], {
      path,
      method: "POST",
      headers: JSON_HEADERS,
      body: raw,
      signal: c.req.raw.signal,
      requestId,
    }, refresh(targets[0]));
  }
  return fanOutStream(ctx, targets, path, raw, body.stream !== false, c.req.raw.signal, requestId);
}

/** For a pull: an agent that lacks the model, least busy, with the most free memory. */
function pickPullTarget(agents: Agent[], model: string): Agent {
  const key = normalizeModelName(model);
  const free = (a: Agent) => (a.metrics?.memory_total ?? 0) - (a.metrics?.memory_used ?? 0);
  return [...agents].sort((a, b) =>
    Number(a.modelKeys.has(key)) - Number(b.modelKeys.has(key)) ||
    a.inFlight - b.inFlight || free(b) - free(a)
  )[0];
}

/**
 * The same pull or push on several agents, their progress lines interleaved as NDJSON, then
 * one `{"status":"success"}` when every agent succeeded, or an error line naming those that failed.
 */
function fanOutStream(
  ctx: AppContext,
  agents: Agent[],
  path: string,
  body: string,
  stream: boolean,
  signal: AbortSignal,
  requestId: string,
): Response {
  const encoder = new TextEncoder();
  const failures: string[] = [];
  const readable = new ReadableStream<Uint8Array>({
    async start(controller) {
      await Promise.all(agents.map(async (agent) => {
        const name = ctx.registry.label(agent);
        try {
          const res = await fetch(agent.baseUrl + path, {
            method: "POST",
            headers: JSON_HEADERS,
            body,
            signal,
          });
          let ok = res.ok;
          let buffered = "";
          const decoder = new TextDecoder();
          for await (const chunk of res.body ?? []) {
            buffered += decoder.decode(chunk, { stream: true });
            let nl;
            while ((nl = buffered.indexOf("\n")) !== -1) {
              const line = buffered.slice(0, nl).trim();
              buffered = buffered.slice(nl + 1);
              if (!line) continue;
              let msg: Record<string, unknown>;
              try {
                msg = JSON.parse(line);
              } catch {
                continue;
              }
              if (typeof msg.error === "string") {
                ok = false;
                failures.push(`${name}: ${msg.error}`);
              } else if (msg.status !== "success" && stream) {
                controller.enqueue(encoder.encode(JSON.stringify({ ...msg, agent: name }) + "\n"));
              }
            }
          }
          if (!ok && !failures.some((f) => f.startsWith(`${name}:`))) {
            failures.push(`${name}: HTTP ${res.status}`);
          }
        } catch {
          if (!signal.aborted) failures.push(`${name}: unreachable or stopped answering`);
        } finally {
          await refreshModels(ctx.registry, agent);
        }
      }));
      if (signal.aborted) return controller.close();
      const last = failures.length ? { error: failures.join("; ") } : { status: "success" };
      controller.enqueue(encoder.encode(JSON.stringify(last) + "\n"));
      controller.close();
    },
  });
  return new Response(readable, {
    headers: {
      "content-type": "application/x-ndjson",
      "x-request-id": requestId,
      "x-coordinator-agent": "all",
    },
  });
}

const blobHomes = new Map<string, string>();

/** Blob uploads: the create that uses them must reach the same agent, so remember where they went. */
function blob(ctx: AppContext, c: Context): Response | Promise<Response> {
  const digest = c.req.param("digest") ?? "";
  const requestId = requestIdOf(c.req.raw);
  if (!/^sha256[:-][0-9a-f]{64}$/.test(digest)) {
    return ollamaError(400, `invalid digest "${digest.slice(0, 80)}"`);
  }
  const ref = c.req.header("x-coordinator-agent");
  let agent = ref ? ctx.registry.find(ref) : ctx.registry.get(blobHomes.get(digest) ?? "");
  if (agent?.status !== "online") agent = undefined;
  if (!agent) {
    const agents = online(ctx);
    if (!agents.length) {
      return ollamaError(503, "No agent is online to serve requests", { "retry-after": "5" });
    }
    agent = [...agents].sort((a, b) => a.inFlight - b.inFlight)[0];
  }
  if (c.req.method === "POST") {
    blobHomes.set(digest, agent.id);
    if (blobHomes.size > 10_000) blobHomes.delete(blobHomes.keys().next().value!);
  }
  return forwardTo(ctx.registry, agent, {
    path: `/api/blobs/${digest}`,
    method: c.req.method,
    headers: { "content-type": c.req.header("content-type") ?? "application/octet-stream" },
    body: c.req.method === "POST" ? c.req.raw.body : null,
    signal: c.req.raw.signal,
    requestId,
  });
}

/** Create: to the agent holding the uploaded blobs, else one with the base model, else any. */
async function create(ctx: AppContext, c: Context): Promise<Response> {
  const requestId = requestIdOf(c.req.raw);
  const body = await jsonBody(c, requestId);
  if (body instanceof Response) return body;
  const model = modelOf(body, "model", "name");
  if (!model) return ollamaError(400, "model is required");
  const agents = online(ctx);
  if (!agents.length) {
    return ollamaError(503, "No agent is online to serve requests", { "retry-after": "5" });
  }
  const files = body.files && typeof body.files === "object" ? Object.values(body.files) : [];
  const ref = c.req.header("x-coordinator-agent");
  let agent = ref ? ctx.registry.find(ref) : undefined;
  for (const d of files) {
    if (agent) break;
    const id = typeof d === "string" ? blobHomes.get(d) : undefined;
    agent = agents.find((a) => a.id === id);
  }
  const from = modelOf(body, "from");
  if (!agent && from) agent = withModel(agents, from)[0];
  agent ??= [...agents].sort((a, b) => a.inFlight - b.inFlight)[0];
  return forwardTo(ctx.registry, agent, {
    path: "/api/create",
    method: "POST",
    headers: JSON_HEADERS,
    body: JSON.stringify(body),
    signal: c.req.raw.signal,
    requestId,
  }, () => refreshModels(ctx.registry, agent));
}

/** Delete on every agent that has the model; 404 only when none had it. */
async function deleteModel(ctx: AppContext, c: Context): Promise<Response> {
  const requestId = requestIdOf(c.req.raw);
  const body = await jsonBody(c, requestId);
  if (body instanceof Response) return body;
  const model = modelOf(body, "model", "name");
  if (!model) return ollamaError(400, "model is required");
  return onEveryHolder(ctx, c, model, "/api/delete", "DELETE", JSON.stringify(body));
}

/** Copy on every agent that has the source model. */
async function copyModel(ctx: AppContext, c: Context): Promise<Response> {
  const requestId = requestIdOf(c.req.raw);
  const body = await jsonBody(c, requestId);
  if (body instanceof Response) return body;
  const source = modelOf(body, "source");
  if (!source) return ollamaError(400, "source is required");
  if (!modelOf(body, "destination")) return ollamaError(400, "destination is required");
  return onEveryHolder(ctx, c, source, "/api/copy", "POST", JSON.stringify(body));
}

async function onEveryHolder(
  ctx: AppContext,
  c: Context,
  model: string,
  path: string,
  method: string,
  body: string,
): Promise<Response> {
  const ref = c.req.header("x-coordinator-agent");
  let agents = withModel(online(ctx), model);
  if (ref && ref !== "all") {
    agents = agents.filter((a) =>
      a.id === ref || ctx.registry.label(a) === ref || a.machineName === ref
    );
  }
  if (!agents.length) return ollamaError(404, `model "${model}" not found`);
  const verb = path === "/api/delete" ? "delete" : "copy";
  for (const a of agents) {
    ctx.registry.recordEvent(
      "model",
      a.id,
      `API ${verb} of "${model}" on "${ctx.registry.label(a)}"`,
    );
  }
  const results = await fanOut(agents, { path, method, body, timeoutMs: 30_000 });
  await Promise.all(agents.map((a) => refreshModels(ctx.registry, a)));
  const ok = results.filter((r) => r.status === 200);
  const names = ok.map((r) => ctx.registry.label(r.agent)).join(",");
  if (ok.length) {
    return new Response(null, { status: 200, headers: { "x-coordinator-agent": names } });
  }
  if (results.every((r) => r.status === 404)) return ollamaError(404, `model "${model}" not found`);
  const failed = results.find((r) => r.status !== 404)!;
  return ollamaError(
    502,
    `agent "${ctx.registry.label(failed.agent)}" failed: ${failed.text.slice(0, 200)}`,
  );
}
