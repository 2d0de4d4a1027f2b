import assert from "node:assert/strict";
import { Hono } from "hono";
import { startSimulator } from "@oc/simulator";
import { access } from "./access.ts";
import { createApp } from "./app.ts";
import type { AppEnv } from "./env.ts";
import { installFastLane, laneHandler, laneRoutes, pathAndQuery, pathOf } from "./fast_lane.ts";
import { HOP_HEADER } from "./loop.ts";
import { hostPolicy } from "./hosts.ts";
import { OLLAMA_INFERENCE } from "../api/ollama.ts";
import { OPENAI_INFERENCE } from "../api/openai.ts";
import { ANTHROPIC_INFERENCE } from "../api/anthropic.ts";
import { registration, testApp } from "../testing/app.ts";

Deno.test("fast lane - pathOf takes the path a router matches, and none it would decode", () => {
  assert.equal(pathOf("http://127.0.0.1:11434/api/chat"), "/api/chat");
  assert.equal(pathOf("http://h/api/chat?x=1&y=/"), "/api/chat");
  assert.equal(pathOf("http://[::1]:8080/v1/chat/completions"), "/v1/chat/completions");
  assert.equal(pathOf("http://h"), "/");
  assert.equal(pathOf("http://h/api/%63hat"), "");
});

Deno.test("fast lane - pathAndQuery keeps the path and query as sent", () => {
  assert.equal(pathAndQuery("http://127.0.0.1:11434/api/chat"), "/api/chat");
  assert.equal(pathAndQuery("http://[::1]:80/api/chat?a=1&b=/x"), "/api/chat?a=1&b=/x");
  assert.equal(pathAndQuery("http://h/api/%63hat"), "/api/%63hat");
  assert.equal(pathAndQuery("http://h"), "/");
});

/** Answers of the lane and of the full path, side by side, for one request. */
async function both(
  apps: { lane: Hono<AppEnv>; full: Hono<AppEnv> },
  path: string,
  init: RequestInit,
) {
  const url = `http://127.0.0.1:11434${path}`;
  const [a, b] = await Promise.all([
    apps.lane.fetch(new Request(url, init)),
    apps.full.fetch(new Request(url, init)),
  ]);
  const shape = async (res: Response) => {
    const id = res.headers.get("x-request-id") ?? "none";
    const headers = [...res.headers].filter(([k]) => k !== "date")
      .map(([k, v]) => [k, v.replaceAll(id, "<id>")]);
    const text = (await res.text()).replaceAll(id, "<id>");
    return { status: res.status, headers, text, hasId: id !== "none" };
  };
  return [await shape(a), await shape(b)];
}

Deno.test("fast lane - every answer, refusals included, is the full path's", async () => {
  // No agent: a request that passes every check is refused with 503 by the scheduler.
  await using t = await testApp({ corsOrigins: ["https://allowed.example"] });
  const apps = { lane: createApp(t.ctx), full: createApp(t.ctx, { fastLane: false }) };
  const chat = JSON.stringify({ model: "nothing-has-this", messages: [] });
  const cases: [number, string, RequestInit][] = [
    [503, "/api/chat", { method: "POST", body: chat }],
    [503, "/api/chat", { method: "POST", body: chat, headers: { "x-client-request-id": "mine" } }],
    [400, "/api/chat", { method: "POST", body: "{not json" }],
    [400, "/api/generate", { method: "POST", body: JSON.stringify({ prompt: "no model" }) }],
    [503, "/v1/chat/completions", { method: "POST", body: chat }],
    [503, "/v1/messages", { method: "POST", body: chat }],
    [403, "/api/chat", { method: "POST", body: chat, headers: { origin: "https://evil.example" } }],
    [503, "/api/chat", {
      method: "POST",
      body: chat,
      headers: { origin: "https://allowed.example" },
    }],
    [403, "/api/chat", { method: "POST", body: chat, headers: { host: "rebound.example.com" } }],
    [508, "/api/chat", {
      method: "POST",
      body: chat,
      headers: { [HOP_HEADER]: t.ctx.instanceId },
    }],
    [404, "/api/chat/", { method: "POST", body: chat }],
    [503, "/api/%63hat", { method: "POST", body: chat }],
    [405, "/api/chat", { method: "GET" }],
    [405, "/api/chat", { method: "PUT", body: chat }],
  ];
  for (const [status, path, init] of cases) {
    const [lane, full] = await both(apps, path, init);
    const what = `${init.method} ${path} ${JSON.stringify(init.headers ?? {})}`;
    assert.deepEqual(lane, full, what);
    assert.equal(lane.status, status, what);
    assert.ok(lane.hasId, `${what} carries a request id`);
  }

  // With client keys on: none, a wrong one, a right one (bearer and x-api-key).
  const key = (await t.ctx.security.createKey("app", "client")).key;
  const keyCases: [number, Record<string, string>][] = [
    [401, {}],
    [401, { authorization: "Bearer oc_wrong" }],
    [503, { authorization: `Bearer ${key}` }],
    [503, { "x-api-key": key }],
  ];
  for (const [status, headers] of keyCases) {
    const [lane, full] = await both(apps, "/api/chat", { method: "POST", body: chat, headers });
    assert.deepEqual(lane, full, JSON.stringify(headers));
    assert.equal(lane.status, status, JSON.stringify(headers));
  }
});

Deno.test("fast lane - a proxied answer and its request-log row are the full path's", async () => {
  await using t = await testApp();
  await using sim = await startSimulator({ quiet: true, models: ["llama3.2"] });
  const tags = await (await fetch(`${sim.url}/api/tags`)).json();
  await t.register(registration({ ollama_port: sim.port, models: tags.models }));
  const apps = { lane: createApp(t.ctx), full: createApp(t.ctx, { fastLane: false }) };
  const body = JSON.stringify({
    model: "llama3.2",
    messages: [{ role: "user", content: "hi" }],
    stream: false,
  });
  const headers = { "x-client-request-id": "run-7" };
  const answers = [];
  for (const app of [apps.lane, apps.full]) {
    const res = await app.fetch(
      new Request("http://127.0.0.1:11434/api/chat", { method: "POST", body, headers }),
    );
    const reply = await res.json();
    answers.push({
      status: res.status,
      headers: [...res.headers.keys()].filter((k) => k !== "date").sort(),
      clientId: res.headers.get("x-client-request-id"),
      id: res.headers.get("x-request-id"),
      done: reply.done,
      role: reply.message?.role,
    });
  }
  const [lane, full] = answers;
  assert.equal(lane.status, 200);
  assert.equal(lane.clientId, "run-7");
  assert.deepEqual({ ...lane, id: null }, { ...full, id: null });
  const rows = await t.ctx.log.query();
  const laneRow = rows.find((r) => r.id === lane.id);
  const fullRow = rows.find((r) => r.id === full.id);
  assert.ok(laneRow && fullRow);
  assert.equal(laneRow.client_request_id, "run-7");
  assert.equal(laneRow.agent_name, fullRow.agent_name);
  assert.equal(laneRow.tokens_out, fullRow.tokens_out);
  assert.equal(laneRow.status, 200);
});

Deno.test("fast lane - takes only POST routes made for it and declared client", async () => {
  const taken: string[] = [];
  const call = (name: string) =>
    laneHandler((_req, vars) => {
      taken.push(`${name} ${vars.tenant ?? "-"}`);
      return Promise.resolve(new Response("lane"));
    });
  const app = new Hono<AppEnv>();
  app.use(async (c, next) => {
    c.set("requestId", "full-path");
    await next();
    c.res.headers.set("x-path", "full");
  });
  app.post("/client", access.client, call("client"));
  app.post("/admin", access.admin, call("admin"));
  app.post("/param/:id", access.client, call("param"));
  app.post("/plain", access.client, () => new Response("plain"));
  installFastLane(app, {
    hosts: hostPolicy({ host: "127.0.0.1", allowedHosts: [] }),
    tenantOf: () => "key-1",
    onError: () => new Response("failed", { status: 500 }),
  });
  for (const path of ["/client", "/admin", "/param/1", "/plain"]) {
    const res = await app.fetch(new Request(`http://127.0.0.1${path}`, { method: "POST" }));
    await res.body?.cancel();
    const lane = res.headers.get("x-path") !== "full";
    assert.equal(lane, path === "/client", path);
  }
  assert.deepEqual(taken, ["client key-1", "admin -", "param -"]);
});

Deno.test("fast lane - holds the inference routes of all three APIs, and nothing else", async () => {
  await using t = await testApp();
  const inference = [
    ...Object.keys(OLLAMA_INFERENCE),
    ...Object.keys(OPENAI_INFERENCE),
    ...Object.keys(ANTHROPIC_INFERENCE),
  ];
  assert.deepEqual([...laneRoutes(createApp(t.ctx)).keys()].sort(), inference.sort());
});
