import assert from "node:assert/strict";
import { testApp } from "../testing/app.ts";

Deno.test("headers - browser origins: local and OLLAMA_ORIGINS allowed, others refused like Ollama", async () => {
  const t = await testApp({ corsOrigins: ["https://*.corp.example"] });
  const tags = (origin?: string, host = "localhost:8080") =>
    t.request("http://localhost:8080/api/tags", {
      headers: { ...(origin ? { origin } : {}), host },
    });
  const local = await tags("http://localhost:3000");
  assert.equal(local.status, 200);
  assert.equal(local.headers.get("access-control-allow-origin"), "http://localhost:3000");
  const listed = await tags("https://app.corp.example");
  assert.equal(listed.status, 200);
  const evil = await tags("https://evil.example");
  assert.equal(evil.status, 403);
  assert.match((await evil.json()).error, /not allowed/);
  // The dashboard calling its own API from its own host is not cross-origin.
  assert.equal((await tags("http://gpu-box:8080", "gpu-box:8080")).status, 200);
  const preflight = await t.request("http://localhost:8080/v1/chat/completions", {
    method: "OPTIONS",
    headers: {
      origin: "http://127.0.0.1:5173",
      "access-control-request-headers": "authorization, content-type",
    },
  });
  assert.equal(preflight.status, 204);
  assert.match(preflight.headers.get("access-control-allow-headers")!, /authorization/);
  await t.close();
});

Deno.test("headers - the dashboard and login pages carry a content security policy", async () => {
  const t = await testApp();
  const login = await t.request("/login");
  const csp = login.headers.get("content-security-policy")!;
  assert.match(csp, /default-src 'self'/);
  assert.match(csp, /frame-ancestors 'none'/);
  assert.equal(login.headers.get("x-frame-options"), "DENY");
  assert.equal(login.headers.get("x-content-type-options"), "nosniff");
  const api = await t.request("/api/tags");
  assert.equal(api.headers.get("content-security-policy"), null);
  await t.close();
});
