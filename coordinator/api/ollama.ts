/**
 * Ollama's native API, as one server: inference routed by model, fleet-wide lists, and the
 * server-local routes (pull, push, create, blobs, copy, delete) sent to the agents the scheduler's
 * placement picks. Handlers parse, call and shape; the decisions are made elsewhere.
 */
import { type Context, Hono } from "hono";
import { normalizeModelName } from "@oc/shared";
import type { AppContext } from "../context.ts";
import type { AppEnv } from "../http/env.ts";
import type { Agent } from "../fleet/registry.ts";
import { BodyError, readBody } from "../http/body.ts";
import { type ProxyDeps, proxyInference } from "../proxy/mod.ts";
import { INFERENCE_BODY_LIMIT, routingInfo } from "../proxy/parse.ts";
import { fanOut, forwardTo, refreshModels } from "../proxy/local.ts";
import { readLines } from "../proxy/lines.ts";
import { errorResponse, type Flavor } from "../http/errors.ts";
import { access } from "../http/access.ts";
import { laneHandler, pathAndQuery } from "../http/fast_lane.ts";
import { AGENT_HEADER, agentHeaderValue, pinOf } from "../http/agent_header.ts";
import { HOP_HEADER, nextHops } from "../http/loop.ts";
import { MESSAGES } from "../http/messages.ts";
import { clientRequestId } from "../http/request_id.ts";
import { NoAgentError } from "../scheduler/mod.ts";
import { type ModelAliases, withListedAliases } from "../aliases/mod.ts";
import { ModelEcho, replaceMember } from "../aliases/rewrite.ts";

/** The version the coordinator reports when no agent is online. */
export const FALLBACK_OLLAMA_VERSION = "0.12.6";

/** Largest body of a server-local request (pull, push, create, copy, delete). */
const LOCAL_BODY_LIMIT = 1024 * 1024;

/**
 * A request body read whole up to `limit`, or the error response in the route's shape: 413 when
 * it is larger, 408 when it is too slow, 400 when it cannot be read (a malformed chunked upload).
 */
async function bodyOf(
  req: Request,
  options: { limit: number; flavor: Flavor; requestId: string },
): Promise<Uint8Array<ArrayBuffer> | Response> {
  try {
    return await readBody(req, { limit: options.limit });
  } catch (error) {
    if (!(error instanceof BodyError)) throw error;
    return errorResponse(options.flavor, error.status, error.message, options.requestId);
  }
}

/**
 * Builds the handler of an inference route (shared by the native, OpenAI and Anthropic APIs). A
 * model that is an alias is rewritten to its model in the body sent on (that member only), and
 * the answer's `model` names the alias again.
 */
export function inferenceHandler(
  deps: ProxyDeps,
  options: {
    flavor: Flavor;
    route: string;
    streams: boolean;
    aliases?: ModelAliases;
  },
) {
  const { flavor } = options;
  return laneHandler(async (req, { requestId, tenant }) => {
    const bytes = await bodyOf(req, { limit: INFERENCE_BODY_LIMIT, flavor, requestId });
    if (bytes instanceof Response) return bytes;
    const info = routingInfo(bytes, { flavor, streams: options.streams });
    if (typeof info === "string") return errorResponse(flavor, 400, info, requestId);
    const pin = pinOf(deps.registry, req.headers);
    const pinned = pin === "all" ? undefined : pin?.[0];
    if (pin !== undefined && pin !== "all" && !pinned) {
      return errorResponse(flavor, 404, MESSAGES.unknownAgent, requestId);
    }
    const alias = options.aliases?.resolve(info.model);
    return proxyInference(deps, {
      route: options.route,
      upstreamPath: pathAndQuery(req.url),
      method: req.method,
      headers: req.headers,
      body: alias ? replaceMember(bytes, info.field, alias.model) : bytes,
      model: alias ? alias.model : info.model,
      echo: alias ? new ModelEcho(alias.model, info.model) : undefined,
      stream: info.stream,
      flavor,
      requestId,
      clientRequestId: clientRequestId(req),
      signal: req.signal,
      affinity: info.affinity,
      agentId: pinned?.id,
      tenant,
    });
  });
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
    inferenceHandler(deps, { flavor: "ollama", route, streams, aliases: ctx.aliases });

  app.on(["GET", "HEAD"], "/", access.public, (c) => c.text("Ollama is running"));
  app.on(
    ["GET", "HEAD"],
    "/api/version",
    access.client,
    (c) => c.json({ version: fleetVersion(ctx) }),
  );
  app.on(
    ["GET", "HEAD"],
    "/api/tags",
    access.client,
    (c) => c.json({ models: withListedAliases(fleetModels(ctx), ctx.aliases) }),
  );
  app.get("/api/ps", access.client, async (c) => {
    const results = await fanOut(ctx, online(ctx), {
      path: "/api/ps",
      method: "GET",
      timeoutMs: 5000,
      incoming: c.req.raw.headers,
    });
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

  app.post("/api/pull", access.modelManagement, (c) => modelTransfer(ctx, c, "pull"));
  app.post("/api/push", access.modelManagement, (c) => modelTransfer(ctx, c, "push"));
  app.post("/api/create", access.modelManagement, (c) => create(ctx, c));
  app.post("/api/blobs/:digest", access.modelManagement, (c) => blob(ctx, c));
  // Hono routes HEAD through GET routes (a HEAD route never matches): `HEAD /api/blobs/…`, which
  // asks whether the agent has a blob, arrives here; a real GET stays unknown, as in Ollama.
  app.get(
    "/api/blobs/:digest",
    access.modelManagement,
    (c) => c.req.method === "HEAD" ? blob(ctx, c) : c.notFound(),
  );
  app.delete("/api/delete", access.modelManagement, (c) => onEveryHolder(ctx, c, "delete"));
  app.post("/api/copy", access.modelManagement, (c) => onEveryHolder(ctx, c, "copy"));
  return app;
}

/** A server-local request's JSON object body, or the error response. */
async function jsonBody(
  c: Context<AppEnv>,
  requestId: string,
): Promise<Record<string, unknown> | Response> {
  const bytes = await bodyOf(c.req.raw, {
    limit: LOCAL_BODY_LIMIT,
    flavor: "ollama",
    requestId,
  });
  if (bytes instanceof Response) return bytes;
  try {
    const v = JSON.parse(new TextDecoder().decode(bytes));
    if (typeof v === "object" && v !== null && !Array.isArray(v)) return v;
  } catch { /* fall through */ }
  return errorResponse("ollama", 400, MESSAGES.invalidJson, requestId);
}

function modelOf(body: Record<string, unknown>, ...fields: string[]): string | null {
  for (const f of fields) {
    const v = body[f];
    if (typeof v === "string" && v.trim() && v.length <= 512) return v.trim();
  }
  return null;
}

/** The answer for a placement that found nowhere to go. */
function noAgent(e: unknown, requestId: string): Response {
  if (!(e instanceof NoAgentError)) throw e;
  const headers: Record<string, string> = e.retryAfter
    ? { "retry-after": String(e.retryAfter) }
    : {};
  return errorResponse("ollama", e.status, e.message, requestId, headers);
}

/** Pull or push: to the agent named in X-Coordinator-Agent, to all (`all`), or to one picked. */
async function modelTransfer(
  ctx: AppContext,
  c: Context<AppEnv>,
  verb: "pull" | "push",
): Promise<Response> {
  const requestId = c.get("requestId");
  const body = await jsonBody(c, requestId);
  if (body instanceof Response) return body;
  const model = modelOf(body, "model", "name");
  if (!model) return errorResponse("ollama", 400, MESSAGES.modelRequired, requestId);
  let targets: Agent[];
  try {
    const pin = pinOf(ctx.registry, c.req.raw.headers);
    targets = ctx.scheduler.placement.transferTargets(model, { verb, pin });
  } catch (e) {
    return noAgent(e, requestId);
  }
  for (const a of targets) {
    ctx.registry.recordEvent(
      "model",
      a.id,
      `API ${verb} of "${model}" on "${ctx.registry.label(a)}"`,
    );
  }
  const path = `/api/${verb}`;
  const raw = JSON.stringify(body);
  if (targets.length > 1) {
    return fanOutStream(ctx, targets, {
      path,
      body: raw,
      stream: body.stream !== false,
      request: c.req.raw,
      requestId,
    });
  }
  const [agent] = targets;
  return forwardTo(ctx, agent, {
    path,
    method: "POST",
    headers: JSON_HEADERS,
    body: raw,
    signal: c.req.raw.signal,
    incoming: c.req.raw.headers,
    requestId,
    onEnd: () => refreshModels(ctx, agent),
  });
}

/**
 * The same pull or push on several agents, their progress lines interleaved as NDJSON, then
 * one `{"status":"success"}` when every agent succeeded, or an error line naming those that failed.
 */
function fanOutStream(
  ctx: AppContext,
  agents: Agent[],
  options: { path: string; body: string; stream: boolean; request: Request; requestId: string },
): Response {
  const { signal } = options.request;
  const headers = {
    ...JSON_HEADERS,
    [HOP_HEADER]: nextHops(ctx.instanceId, options.request.headers),
  };
  const encoder = new TextEncoder();
  const failures: string[] = [];
  const readable = new ReadableStream<Uint8Array>({
    async start(controller) {
      await Promise.all(agents.map(async (agent) => {
        const name = ctx.registry.label(agent);
        try {
          const res = await fetch(agent.baseUrl + options.path, {
            method: "POST",
            headers,
            body: options.body,
            signal,
          });
          let ok = res.ok;
          for await (const raw of readLines(res.body ?? [])) {
            const line = raw.trim();
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
            } else if (msg.status !== "success" && options.stream) {
              controller.enqueue(encoder.encode(JSON.stringify({ ...msg, agent: name }) + "\n"));
            }
          }
          if (!ok && !failures.some((f) => f.startsWith(`${name}:`))) {
            failures.push(`${name}: HTTP ${res.status}`);
          }
        } catch {
          if (!signal.aborted) failures.push(`${name}: unreachable or stopped answering`);
        } finally {
          await refreshModels(ctx, agent);
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
      "x-request-id": options.requestId,
      [AGENT_HEADER]: "all",
    },
  });
}

/** Blob uploads: the create that uses them must reach the same agent (see `Placement`). */
function blob(ctx: AppContext, c: Context<AppEnv>): Response | Promise<Response> {
  const digest = c.req.param("digest") ?? "";
  const requestId = c.get("requestId");
  if (!/^sha256[:-][0-9a-f]{64}$/.test(digest)) {
    return errorResponse("ollama", 400, MESSAGES.invalidDigest(digest), requestId);
  }
  const upload = c.req.method === "POST";
  let agent: Agent;
  try {
    const pin = pinOf(ctx.registry, c.req.raw.headers);
    agent = ctx.scheduler.placement.blobTarget(digest, { pin, upload });
  } catch (e) {
    return noAgent(e, requestId);
  }
  return forwardTo(ctx, agent, {
    path: `/api/blobs/${digest}`,
    method: c.req.method,
    headers: { "content-type": c.req.header("content-type") ?? "application/octet-stream" },
    body: upload ? c.req.raw.body : null,
    signal: c.req.raw.signal,
    incoming: c.req.raw.headers,
    requestId,
  });
}

/** Create: to the agent holding the uploaded blobs, else one with the base model, else any. */
async function create(ctx: AppContext, c: Context<AppEnv>): Promise<Response> {
  const requestId = c.get("requestId");
  const body = await jsonBody(c, requestId);
  if (body instanceof Response) return body;
  if (!modelOf(body, "model", "name")) {
    return errorResponse("ollama", 400, MESSAGES.modelRequired, requestId);
  }
  let agent: Agent;
  try {
    agent = ctx.scheduler.placement.createTarget({
      files: body.files && typeof body.files === "object" ? Object.values(body.files) : [],
      from: modelOf(body, "from"),
      pin: pinOf(ctx.registry, c.req.raw.headers),
    });
  } catch (e) {
    return noAgent(e, requestId);
  }
  return forwardTo(ctx, agent, {
    path: "/api/create",
    method: "POST",
    headers: JSON_HEADERS,
    body: JSON.stringify(body),
    signal: c.req.raw.signal,
    incoming: c.req.raw.headers,
    requestId,
    onEnd: () => refreshModels(ctx, agent),
  });
}

/** Copy or delete on every agent that has the model; 404 only when none had it. */
async function onEveryHolder(
  ctx: AppContext,
  c: Context<AppEnv>,
  verb: "copy" | "delete",
): Promise<Response> {
  const requestId = c.get("requestId");
  const body = await jsonBody(c, requestId);
  if (body instanceof Response) return body;
  const model = verb === "copy" ? modelOf(body, "source") : modelOf(body, "model", "name");
  if (!model) {
    const message = verb === "copy" ? MESSAGES.fieldRequired("source") : MESSAGES.modelRequired;
    return errorResponse("ollama", 400, message, requestId);
  }
  if (verb === "copy" && !modelOf(body, "destination")) {
    return errorResponse("ollama", 400, MESSAGES.fieldRequired("destination"), requestId);
  }
  let agents: Agent[];
  try {
    agents = ctx.scheduler.placement.holders(model, {
      pin: pinOf(ctx.registry, c.req.raw.headers),
    });
  } catch (e) {
    return noAgent(e, requestId);
  }
  for (const a of agents) {
    ctx.registry.recordEvent(
      "model",
      a.id,
      `API ${verb} of "${model}" on "${ctx.registry.label(a)}"`,
    );
  }
  const results = await fanOut(ctx, agents, {
    path: verb === "copy" ? "/api/copy" : "/api/delete",
    method: verb === "copy" ? "POST" : "DELETE",
    body: JSON.stringify(body),
    timeoutMs: 30_000,
    incoming: c.req.raw.headers,
  });
  await Promise.all(agents.map((a) => refreshModels(ctx, a)));
  const ok = results.filter((r) => r.status === 200);
  if (ok.length) {
    const names = ok.map((r) => agentHeaderValue(ctx.registry.label(r.agent))).join(",");
    return new Response(null, { status: 200, headers: { [AGENT_HEADER]: names } });
  }
  if (results.every((r) => r.status === 404)) {
    return errorResponse("ollama", 404, MESSAGES.modelNotInstalled(model), requestId);
  }
  const failed = results.find((r) => r.status !== 404)!;
  return errorResponse(
    "ollama",
    502,
    MESSAGES.agentFailed(ctx.registry.label(failed.agent), failed.text.slice(0, 200)),
    requestId,
  );
}
