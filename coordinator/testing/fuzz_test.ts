/**
 * The bad-input suite: over a thousand generated malformed requests across every API. Each answer
 * must be a 4xx with a clear error, the coordinator must keep serving, and the stored state must
 * not change.
 */
import assert from "node:assert/strict";
import { TEST_AGENT_TOKEN } from "../config.ts";
import { registration, startFleet } from "./app.ts";

/** A small seeded PRNG (mulberry32), so a failure can be replayed. */
function rng(seed: number) {
  return () => {
    seed |= 0;
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const WEIRD_STRINGS = [
  "",
  " ",
  "\u0000",
  "\ud800",
  "\u202e\u202d",
  "😀".repeat(1000),
  "x".repeat(300_000),
  "../../etc/passwd",
  "<script>alert(1)</script>",
  "' OR 1=1 --",
  "\r\n\r\nHTTP/1.1 200 OK",
  "%00%ff",
];
const WEIRD_VALUES: unknown[] = [
  null,
  true,
  -1,
  1e308,
  -1e308,
  2 ** 64,
  0.5,
  [],
  {},
  [1, 2, 3],
  { nested: { deeper: [null] } },
  ...WEIRD_STRINGS,
];

function brokenJson(r: () => number): string {
  const options = [
    "{",
    "}",
    "[",
    '{"model":',
    '{"model":"llama3.2"',
    "{'model':'x'}",
    '{"a":1,}',
    "nul",
    "\u0000\u0001",
    '{"model":"llama3.2"}}',
    "\ufeff{",
    '{"model": NaN}',
  ];
  return options[Math.floor(r() * options.length)];
}

Deno.test("fuzz - 1,000+ malformed requests get a 4xx with an error and change nothing", async () => {
  await using fleet = await startFleet([{ name: "a", models: ["llama3.2", "nomic-embed-text"] }]);
  const r = rng(20261125);
  const pick = <T>(xs: T[]) => xs[Math.floor(r() * xs.length)];
  const { ctx } = fleet.coordinator;
  const snapshot = async () => {
    await ctx.registry.flush();
    const stored = await ctx.store.load();
    return JSON.stringify([
      stored.agents.sort((a, b) => a.id.localeCompare(b.id)),
      // Key use counts are accounting, not state: the admin key is used by the fuzzer itself.
      (await ctx.store.listKeys()).map(({ id, name, hash, scope, revoked_at }) => ({
        id,
        name,
        hash,
        scope,
        revoked_at,
      })).sort((a, b) => a.id.localeCompare(b.id)),
      stored.settings,
      stored.sessions.sort((a, b) => a.id_hash.localeCompare(b.id_hash)),
    ]);
  };
  const agentId = fleet.ids.a;
  // Heartbeats need the agent's own secret: register a second agent for the fuzzing.
  const reg = await (await fetch(`${fleet.url}/api/agents`, {
    method: "POST",
    headers: { authorization: `Bearer ${TEST_AGENT_TOKEN}` },
    body: JSON.stringify(registration({ machine_name: "fuzz-target", ollama_port: 9 })),
  })).json();
  const before = await snapshot();
  const agentAuth = { authorization: `Bearer ${TEST_AGENT_TOKEN}` };
  const secretAuth = { authorization: `Bearer ${reg.agent_secret}` };
  const admin = { authorization: fleet.adminHeaders.authorization };

  type Case = { method: string; path: string; body?: BodyInit; headers?: Record<string, string> };
  const HUGE = "x".repeat(300_000);
  const TEXT = [null, 1, [], {}, true, "", HUGE];
  const INT = [null, "1", -1, 1e308, 2 ** 64, 0.5, [], {}, true];
  const PERCENT = [null, "1", -1, 101, 1e308, [], {}, true];
  const LIST = [null, "x", 5, {}, [1, 2, 3], [{}], true];
  /** Replaces one field with a value that is invalid for it, or drops a required field. */
  const mutate = (
    base: Record<string, unknown>,
    invalid: Record<string, unknown[]>,
    required: string[],
  ) => {
    const copy: Record<string, unknown> = { ...base };
    if (r() < 0.2) delete copy[pick(required)];
    else {
      const field = pick(Object.keys(invalid));
      copy[field] = pick(invalid[field]);
    }
    return JSON.stringify(copy);
  };
  const generators: (() => Case)[] = [
    // Inference routes: broken bodies or a model that is not a usable name.
    () => ({
      method: "POST",
      path: pick([
        "/api/chat",
        "/api/generate",
        "/api/embed",
        "/api/embeddings",
        "/api/show",
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/embeddings",
      ]),
      body: r() < 0.5 ? brokenJson(r) : JSON.stringify({
        model: pick([null, 1, [], {}, "", " ", true, "x".repeat(600)]),
        stream: pick([true, "yes", 1]),
      }),
    }),
    () => ({
      method: "POST",
      path: "/api/chat",
      body: JSON.stringify({ model: "llama3.2", stream: pick(["false", 0, [], {}]) }),
    }),
    // Server-local routes.
    () => ({
      method: "POST",
      path: pick(["/api/pull", "/api/push", "/api/create"]),
      body: r() < 0.5 ? brokenJson(r) : JSON.stringify({ model: pick([null, 3, [], ""]) }),
    }),
    () => ({
      method: "DELETE",
      path: "/api/delete",
      body: r() < 0.5
        ? brokenJson(r)
        : JSON.stringify({ model: pick(WEIRD_VALUES.filter((v) => typeof v !== "string")) }),
    }),
    () => ({
      method: "POST",
      path: "/api/copy",
      body: JSON.stringify({ source: pick([null, 1, ""]), destination: pick(WEIRD_VALUES) }),
    }),
    () => ({
      method: pick(["POST", "HEAD"]),
      path: `/api/blobs/${
        encodeURIComponent(pick(WEIRD_STRINGS).toWellFormed().slice(0, 200) || "sha256:zz")
      }`,
    }),
    // Wrong methods on known paths.
    () => ({
      method: pick(["GET", "PUT", "PATCH"]),
      path: pick([
        "/api/chat",
        "/api/generate",
        "/api/pull",
        "/api/delete",
        "/v1/chat/completions",
      ]),
    }),
    // Registration and heartbeats.
    () => ({
      method: "POST",
      path: "/api/agents",
      headers: agentAuth,
      body: r() < 0.3
        ? brokenJson(r)
        : mutate(registration() as unknown as Record<string, unknown>, {
          machine_name: TEXT,
          ip_address: [...TEXT, "<script>", "../x", "\u0000", "http://a/", "169.254.169.254", "::"],
          ollama_version: TEXT,
          ollama_port: [...INT, 0, 70000],
          models: LIST,
          gpus: LIST,
          parallel: [...INT, 0],
        }, ["machine_name", "ip_address", "ollama_version", "ollama_port"]),
    }),
    () => ({
      method: "POST",
      path: "/api/health",
      headers: secretAuth,
      body: r() < 0.3
        ? brokenJson(r)
        : mutate({ agent_id: reg.agent_id, cpu_usage: 1, memory_usage: 1, active_requests: 0 }, {
          agent_id: [...TEXT, "not-a-uuid"],
          cpu_usage: PERCENT,
          memory_usage: PERCENT,
          active_requests: INT,
          gpus: LIST,
          models: LIST,
        }, ["agent_id", "cpu_usage", "memory_usage", "active_requests"]),
    }),
    () => ({
      method: "POST",
      path: `/api/agents/${reg.agent_id}/progress`,
      headers: secretAuth,
      body: mutate({ command_id: "c", status: "x" }, {
        command_id: [null, 1, "", "x".repeat(100)],
        status: [null, 1, "x".repeat(300)],
        total: INT,
        completed: INT,
      }, ["command_id", "status"]),
    }),
    // Admin APIs.
    () => ({
      method: "PATCH",
      path: `/api/agents/${agentId}`,
      headers: admin,
      body: r() < 0.3 ? brokenJson(r) : mutate({ weight: 1 }, {
        display_name: [1, [], {}, true, "x".repeat(200)],
        labels: ["a", [1], ["bad label!"], Array(40).fill("a"), [""]],
        weight: [-1, 101, "1", null, []],
        drain: ["true", 1, null],
        status: WEIRD_VALUES,
        id: WEIRD_VALUES,
      }, ["weight"]),
    }),
    () => ({
      method: pick(["GET", "PATCH", "DELETE"]),
      path: `/api/agents/${encodeURIComponent(pick(WEIRD_STRINGS).toWellFormed().slice(0, 100))}x`,
      headers: admin,
      body: undefined,
    }),
    () => ({
      method: "GET",
      path: `/api/events?limit=${
        encodeURIComponent(String(pick(WEIRD_VALUES)).toWellFormed().slice(0, 50))
      }&before=${pick(["-1", "x", "1e99"])}`,
      headers: admin,
    }),
    () => ({
      method: "POST",
      path: "/api/keys",
      headers: admin,
      body: r() < 0.3 ? brokenJson(r) : mutate({ name: "k" }, {
        name: [null, 1, "", "x".repeat(100), []],
        scope: ["root", 1, null],
        extra: WEIRD_VALUES,
      }, ["name"]),
    }),
    () => ({
      method: "DELETE",
      path: `/api/keys/${encodeURIComponent(pick(WEIRD_STRINGS).toWellFormed().slice(0, 100))}nope`,
      headers: admin,
    }),
    // Oversized bodies.
    () => ({
      ...pick([{ path: "/api/agents", headers: agentAuth }, {
        path: "/api/health",
        headers: secretAuth,
      }]),
      method: "POST",
      body: "x".repeat(1_100_000 + Math.floor(r() * 1000)),
    }),
    () => ({
      method: "POST",
      path: "/api/chat",
      body: `{"model":"llama3.2","pad":"${"y".repeat(65 * 1024 * 1024)}"}`,
    }),
  ];

  let total = 0;
  const failures: string[] = [];
  const byStatus = new Map<number, number>();
  const N = 1100;
  for (let i = 0; i < N; i++) {
    const gen = i === N - 1 ? generators[generators.length - 1] : pick(generators.slice(0, -1));
    const c = gen();
    const res = await fetch(`${fleet.url}${c.path}`, {
      method: c.method,
      body: c.method === "HEAD" || c.method === "GET" ? undefined : c.body,
      headers: c.headers,
    });
    const text = c.method === "HEAD" ? "" : await res.text();
    total++;
    byStatus.set(res.status, (byStatus.get(res.status) ?? 0) + 1);
    const ok4xx = res.status >= 400 && res.status < 500;
    let clear = c.method === "HEAD";
    try {
      const body = JSON.parse(text);
      const msg = typeof body.error === "string" ? body.error : body.error?.message;
      clear ||= typeof msg === "string" && msg.length > 0;
    } catch { /* not JSON */ }
    if (!ok4xx || !clear) {
      failures.push(
        `${c.method} ${c.path.slice(0, 80)} ${String(c.body).slice(0, 80)} → ${res.status} ${
          text.slice(0, 120)
        }`,
      );
    }
  }
  console.log(`fuzz: ${total} requests, statuses ${JSON.stringify(Object.fromEntries(byStatus))}`);
  assert.deepEqual(failures.slice(0, 10), []);
  assert.ok(total >= 1000);
  // Still serving, state unchanged.
  const res = await fetch(`${fleet.url}/api/generate`, {
    method: "POST",
    body: JSON.stringify({ model: "llama3.2", prompt: "still there?", stream: false }),
  });
  assert.equal(res.status, 200);
  await res.body?.cancel();
  assert.equal(await snapshot(), before);
});
