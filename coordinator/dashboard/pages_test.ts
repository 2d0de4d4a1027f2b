import assert from "node:assert/strict";
import { registration, testApp } from "../testing/app.ts";
import { islandNames, islandsHash } from "./components/island_bundle.ts";
import type { RequestRecord } from "../telemetry/request_log.ts";
import { requestRecord } from "../testing/records.ts";

async function html(
  t: Awaited<ReturnType<typeof testApp>>,
  path: string,
  status = 200,
): Promise<string> {
  const res = await t.admin(path);
  assert.equal(res.status, status, path);
  assert.match(res.headers.get("content-type")!, /^text\/html/);
  return await res.text();
}

Deno.test("dashboard - every page renders on the server with its data and islands", async () => {
  const t = await testApp();
  const { agent_id } = await t.register(registration({ machine_name: "gpu-01" }));
  await t.register(registration({ machine_name: "mac-mini", ip_address: "127.0.0.2", models: [] }));
  t.ctx.log.add({
    id: "req-1",
    at: new Date().toISOString(),
    route: "/api/chat",
    model: "llama3.2",
    agent_id,
    agent_name: "gpu-01",
    status: 200,
    latency_ms: 321,
    ttft_ms: 12,
    queued_ms: 0,
    tokens_in: 3,
    tokens_out: 30,
    tokens_per_second: 90,
    attempts: 1,
    error: null,
  });
  await t.ctx.aliases.set("gpt-4o-mini", "llama3.2:3b", { listed: true });
  const key = await t.ctx.security.createKey("open-webui", "client", {
    limits: { requests_per_minute: 60, tokens_per_minute: null, concurrent: 4, weight: 2 },
  });
  t.ctx.log.add(requestRecord("req-2", {
    model: "llama3.2",
    status: 429,
    attempts: 0,
    error: "Rate limit reached",
    key_id: key.view.id,
  }));
  const pages: [string, string[]][] = [
    ["/dashboard", ["<title>Overview", 'data-island="overview"', "Requests per second"]],
    ["/dashboard/agents", ["gpu-01", "mac-mini", 'data-island="agents_table"', "2 of 2 agents"]],
    [`/dashboard/agents/${agent_id}`, ["gpu-01", "llama3.2:latest", 'data-island="agent_detail"']],
    ["/dashboard/models", [
      "llama3.2:latest",
      'data-island="models_view"',
      "Pull a model",
      'data-island="aliases_panel"',
      'data-alias="gpt-4o-mini"',
      '<option value="llama3.2:latest">',
    ]],
    ["/dashboard/requests", ["req-1", "321 ms", 'data-island="request_log"']],
    ["/dashboard/events", ["Agent &quot;gpu-01&quot; registered", 'data-island="event_log"']],
    ["/dashboard/keys", [
      "open-webui",
      key.view.prefix,
      "60 req/min · 4 at once",
      'data-island="keys_view"',
      'data-limited="true">1<',
    ]],
  ];
  for (const [path, needles] of pages) {
    const page = await html(t, path);
    assert.ok(page.startsWith("<!doctype html>"), path);
    for (const n of needles) assert.ok(page.includes(n), `${path} shows ${n}`);
    assert.ok(page.includes(`/static/islands/${islandsHash()}/live_badge.js`), path);
    assert.match(page, /href="\/static\/dashboard\.css\?v=\w+"/);
  }
  await t.close();
});

Deno.test("dashboard - sorting and filtering work without JavaScript", async () => {
  const t = await testApp();
  await t.register(registration({ machine_name: "alpha" }));
  await t.register(registration({ machine_name: "beta", ip_address: "127.0.0.2" }));
  const desc = await html(t, "/dashboard/agents?sort=name&dir=desc");
  assert.ok(desc.indexOf(">beta<") < desc.indexOf(">alpha<"));
  const asc = await html(t, "/dashboard/agents");
  assert.ok(asc.indexOf(">alpha<") < asc.indexOf(">beta<"));
  const filtered = await html(t, "/dashboard/agents?q=bet");
  assert.ok(filtered.includes(">beta<") && !filtered.includes(">alpha<"));
  // An unknown sort falls back to the name; a bad request filter shows its error.
  await html(t, "/dashboard/agents?sort=nonsense");
  const bad = await html(t, "/dashboard/requests?status=maybe");
  assert.ok(bad.includes('role="alert"'));
  // The route filter offers every route the log records, /v1/responses included.
  for (const route of ["/api/chat", "/api/show", "/v1/embeddings", "/v1/responses"]) {
    assert.ok(bad.includes(route), route);
  }
  await t.close();
});

Deno.test("dashboard - unknown pages and agents get an HTML 404; / stays Ollama's", async () => {
  const t = await testApp();
  assert.ok((await html(t, "/dashboard/nope", 404)).includes("Not found"));
  assert.ok((await html(t, "/dashboard/agents/nobody", 404)).includes("No agent has this id"));
  const slash = await t.admin("/dashboard/");
  assert.equal(slash.status, 308);
  assert.equal(slash.headers.get("location"), "/dashboard");
  assert.equal(await (await t.admin("/")).text(), "Ollama is running");
  await t.close();
});

Deno.test("dashboard - page props are escaped: no markup injection from agent names", async () => {
  const t = await testApp();
  await t.register(registration({ machine_name: "</script><img src=x onerror=alert(1)>" }));
  const page = await html(t, "/dashboard/agents");
  assert.ok(!page.includes("<img src=x"));
  await t.close();
});

Deno.test("dashboard - static files: the stylesheet, and island bundles built on demand", async () => {
  const t = await testApp();
  const css = await t.admin("/static/dashboard.css");
  assert.equal(css.status, 200);
  assert.match(css.headers.get("content-type")!, /^text\/css/);
  assert.ok((await css.text()).includes("prefers-color-scheme: dark"));
  assert.equal((await t.request("/static/login.css")).status, 200);
  for (const path of ["/static/other.css", "/static/..%2Fdeno.json", "/static/dashboard.tsx"]) {
    const res = await t.request(path);
    assert.equal(res.status, 404, path);
    await res.body?.cancel();
  }
  const hash = islandsHash();
  for (const name of islandNames()) {
    const js = await t.admin(`/static/islands/${hash}/${name}.js`);
    assert.equal(js.status, 200, name);
    assert.match(js.headers.get("content-type")!, /javascript/);
    assert.match(js.headers.get("cache-control")!, /immutable/);
    assert.ok((await js.text()).length > 50);
  }
  assert.equal((await t.admin(`/static/islands/${hash}/../../x.js`)).status, 404);
  assert.equal((await t.admin(`/static/islands/0000/overview.js`)).status, 404);
  const missing = await t.admin(`/static/islands/${hash}/nothing.js`);
  assert.equal(missing.status, 404);
  await missing.body?.cancel();
  await t.close();
});

function failed(agent_id: string | null, id = "req-bad"): RequestRecord {
  return requestRecord(id, {
    model: "mistral:7b",
    agent_id,
    status: 404,
    error: 'model "mistral:7b" not found, try pulling it first',
  });
}

Deno.test("dashboard - the overview's headline and cards say what they cover", async () => {
  const t = await testApp();
  await t.register(registration({ machine_name: "gpu-01" }));
  const { agent_id } = await t.register(
    registration({ machine_name: "mac-mini", ip_address: "127.0.0.2" }),
  );
  t.ctx.registry.setOllamaUp(t.ctx.registry.get(agent_id)!, false);
  const page = await html(t, "/dashboard");
  // Rendered by the overview island, which keeps it current from the live stream.
  assert.match(
    page,
    /data-island="overview"[^]*data-headline="true">1 of 2 agents online · 1 offline</,
  );
  for (const window of ["10 s", "1 min", "one point per 5 s"]) {
    assert.ok(page.includes(window), window);
  }
  await t.close();
  const empty = await testApp();
  assert.ok((await html(empty, "/dashboard")).includes("No agent has registered yet."));
  await empty.close();
});

Deno.test("dashboard - the error-rate card leads to the failed requests and their errors", async () => {
  const t = await testApp();
  const { agent_id } = await t.register(registration());
  t.ctx.log.add(failed(null));
  t.ctx.log.add({ ...failed(agent_id, "req-ok"), status: 200, error: null });
  const overview = await html(t, "/dashboard");
  assert.match(overview, /<a class="card[ a-z]*" href="\/dashboard\/requests\?status=error">/);
  const page = await html(t, "/dashboard/requests?status=error");
  assert.ok(!page.includes('data-request-id="req-ok"'));
  // The error has a line of its own under its request (a column would be cut off on a phone).
  assert.match(
    page,
    /data-error-for="req-bad"[^]*model &quot;mistral:7b&quot; not found, try pulling it first/,
  );
  assert.ok(page.includes("No online agent has this model"));
  await t.close();
});

Deno.test("dashboard - an agent's page names it in the breadcrumb", async () => {
  const t = await testApp();
  const { agent_id } = await t.register(registration({ machine_name: "gpu-01" }));
  const page = await html(t, `/dashboard/agents/${agent_id}`);
  assert.match(
    page,
    /<nav class="crumbs"[^>]*><a href="\/dashboard\/agents">Agents<\/a> \/ <span aria-current="page">gpu-01<\/span>/,
  );
  await t.close();
});

Deno.test("dashboard - /favicon.ico is served to anyone, and pages link it", async () => {
  const t = await testApp();
  const res = await t.request("/favicon.ico");
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("content-type"), "image/x-icon");
  const bytes = new Uint8Array(await res.arrayBuffer());
  assert.deepEqual([...bytes.slice(0, 4)], [0, 0, 1, 0]); // an ICO header
  for (const path of ["/dashboard", "/login"]) {
    const page = await (await t.admin(path)).text();
    assert.ok(page.includes('<link rel="icon" href="/favicon.ico"'), path);
  }
  // The pages' policy lets them load it.
  const csp = (await t.admin("/dashboard")).headers.get("content-security-policy")!;
  assert.match(csp, /img-src 'self'/);
  await t.close();
});
