import assert from "node:assert/strict";
import { type Access, declaredAccess, undeclaredRoutes } from "./access.ts";
import { registration, testApp } from "../testing/app.ts";
import { TEST_AGENT_TOKEN } from "../config.ts";

/** `METHOD path` → the class each route of the built app declares. */
function declarations(routes: { method: string; path: string; handler: unknown }[]) {
  const table: Record<string, Access> = {};
  for (const r of routes) {
    const access = declaredAccess(r.handler);
    if (access) table[`${r.method} ${r.path}`] ??= access;
  }
  return table;
}

Deno.test("access - every registered route of the app declares its access class", async () => {
  const t = await testApp();
  assert.deepEqual(undeclaredRoutes(t.app), []);
  const table = declarations(t.app.routes);
  const expected: Record<string, Access> = {
    "GET /": "public",
    "GET /login": "public",
    "POST /login": "public",
    "POST /logout": "public",
    "GET /static/dashboard.css": "public",
    "GET /favicon.ico": "public",
    "POST /api/agents": "agent_register",
    "POST /api/health": "agent",
    "POST /api/agents/:id/progress": "agent",
    "GET /api/agents": "admin",
    "DELETE /api/agents/:id": "admin",
    "GET /api/keys": "admin",
    "GET /api/admin/session": "admin",
    "PUT /api/admin/pins": "admin",
    "GET /api/stream": "admin",
    "GET /api/requests": "admin",
    "POST /api/models/pull": "admin",
    "GET /dashboard": "admin",
    "GET /dashboard/*": "admin",
    "GET /metrics": "metrics",
    "GET /api/version": "client",
    "POST /api/chat": "client",
    "POST /v1/chat/completions": "client",
    "GET /v1/models/:model{.+}": "client",
    "POST /api/pull": "model_management",
    "DELETE /api/delete": "model_management",
    "POST /api/blobs/:digest": "model_management",
  };
  for (const [route, access] of Object.entries(expected)) {
    assert.equal(table[route], access, route);
  }
  await t.close();
});

Deno.test("access - a route added without a declaration is found by the walk and never runs", async () => {
  const t = await testApp();
  let ran = false;
  t.app.get("/api/forgotten", (c) => (ran = true, c.text("open")));
  t.app.post("/api/version", (c) => (ran = true, c.text("open")));
  assert.deepEqual(undeclaredRoutes(t.app), ["GET /api/forgotten", "POST /api/version"]);
  const forgotten = await t.request("/api/forgotten");
  assert.equal(forgotten.status, 404);
  assert.equal(await forgotten.text(), "404 page not found");
  // Beside a declared route, an undeclared one is as closed as an unknown one.
  assert.equal((await t.request("/api/version", { method: "POST" })).status, 404);
  assert.equal((await t.request("/api/version")).status, 200);
  assert.equal(ran, false);
  await t.close();
});

Deno.test("access - a request that reaches no route is 404 before any check, even with client keys on", async () => {
  const t = await testApp({ apiKeys: ["a-client-key"] });
  for (const path of ["/api/unknown", "/api/tags/", "/API/tags", "/api/agents/", "/nothing"]) {
    const res = await t.request(path);
    assert.equal(res.status, 404, path);
    // Ollama's own answer: plain text, not JSON.
    assert.equal(res.headers.get("content-type"), "text/plain", path);
    assert.equal(await res.text(), "404 page not found", path);
  }
  const v1 = await t.request("/v1/unknown");
  assert.equal(v1.status, 404);
  assert.match((await v1.json()).error.message, /Unknown path/);
  // A declared route still asks for the key.
  assert.equal((await t.request("/api/tags")).status, 401);
  await t.close();
});

Deno.test("access - percent-encoded spellings get the class of the route they reach", async () => {
  const t = await testApp();
  const agents = await t.request("/api/%61gents");
  assert.equal(agents.status, 401);
  assert.equal(agents.headers.get("www-authenticate"), "Bearer");
  assert.equal((await t.admin("/api/%61gents")).status, 200);
  const register = await t.request("/api/%61gents", { json: registration() });
  assert.equal(register.status, 401);
  assert.match((await register.json()).error, /agent token/);
  const page = await t.request("/dashboard/%61gents");
  assert.equal(page.status, 302);
  assert.match(page.headers.get("location")!, /^\/login\?next=/);
  // "/dashboard/" reaches the dashboard's catch-all: admins only, then a redirect to /dashboard.
  assert.equal((await t.request("/dashboard/")).status, 302);
  const slash = await t.admin("/dashboard/");
  assert.equal(slash.status, 308);
  assert.equal(slash.headers.get("location"), "/dashboard");
  await t.close();
});

Deno.test("access - a known path with another method is 405 with Allow, in the API's shape", async () => {
  const t = await testApp({ apiKeys: ["a-client-key"] });
  const cases: [string, string, string][] = [
    ["POST", "/api/tags", "GET, HEAD"],
    ["GET", "/api/chat", "POST"],
    ["HEAD", "/api/chat", "POST"],
    ["PUT", "/api/delete", "DELETE"],
    ["GET", "/v1/chat/completions", "POST"],
    ["PUT", "/api/agents", "GET, HEAD, POST"],
  ];
  for (const [method, path, allow] of cases) {
    const res = await t.request(path, { method });
    assert.equal(res.status, 405, `${method} ${path}`);
    assert.equal(res.headers.get("allow"), allow, `${method} ${path}`);
    if (method === "HEAD") continue;
    const body = await res.json();
    const message = path.startsWith("/v1/") ? body.error.message : body.error;
    assert.equal(message, `Method ${method} is not allowed on ${path}`);
  }
  await t.close();
});

Deno.test("access - HEAD on a blob reaches the agent; agent routes keep their checks", async () => {
  const seen: string[] = [];
  const agentOllama = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (req) => {
    seen.push(`${req.method} ${new URL(req.url).pathname}`);
    return new Response(null, { status: 200 });
  });
  const t = await testApp();
  try {
    const res = await t.request("/api/agents", {
      json: registration({ ollama_port: agentOllama.addr.port }),
      headers: { authorization: `Bearer ${TEST_AGENT_TOKEN}` },
    });
    assert.equal(res.status, 201);
    const digest = `sha256:${"a".repeat(64)}`;
    const head = await t.request(`/api/blobs/${digest}`, { method: "HEAD" });
    assert.equal(head.status, 200);
    // (Registration first asks a loopback address whether it is this coordinator.)
    assert.deepEqual(seen.filter((r) => r.includes("/api/blobs/")), [`HEAD /api/blobs/${digest}`]);
    assert.equal((await t.request(`/api/blobs/${digest}`)).status, 404);
  } finally {
    await t.close();
    await agentOllama.shutdown();
  }
});
