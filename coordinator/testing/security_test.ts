import assert from "node:assert/strict";
import { TEST_ADMIN_PASSWORD, TEST_AGENT_TOKEN } from "../config.ts";
import { countRows, FakeClock, memoryRegistry, registration, startFleet, testApp } from "./app.ts";
import { startCoordinator } from "../server.ts";
import { testConfig } from "../config.ts";
import { SecurityStore } from "../security/store.ts";
import { clientAddress, inNetworks, parseNetwork } from "../security/networks.ts";

const asAgent = (token: string) => ({ authorization: `Bearer ${token}` });

Deno.test("security - registration fails closed without the agent token", async () => {
  const t = await testApp();
  for (const headers of [{}, asAgent("wrong"), { authorization: "Basic abc" }]) {
    const res = await t.request("/api/agents", { json: registration(), headers });
    assert.equal(res.status, 401);
    assert.match((await res.json()).error, /agent token/);
  }
  assert.equal(await countRows(t.ctx, "agents"), 0);
  const ok = await t.request("/api/agents", {
    json: registration(),
    headers: asAgent(TEST_AGENT_TOKEN),
  });
  assert.equal(ok.status, 201);
  assert.match((await ok.json()).agent_secret, /^ocs_/);
  await t.close();
});

Deno.test("security - one agent's secret cannot heartbeat for another; removal revokes it", async () => {
  const t = await testApp();
  const a = await t.register(registration({ machine_name: "a" }));
  const b = await t.register(registration({ machine_name: "b" }));
  const beat = (id: string, secret?: string) =>
    t.request("/api/health", {
      json: { agent_id: id, cpu_usage: 1, memory_usage: 1, active_requests: 0 },
      headers: secret ? asAgent(secret) : {},
    });
  assert.equal((await beat(a.agent_id, a.agent_secret)).status, 200);
  assert.equal((await beat(b.agent_id, a.agent_secret)).status, 403);
  assert.equal((await beat(a.agent_id)).status, 401);
  assert.equal((await beat(a.agent_id, TEST_AGENT_TOKEN)).status, 401);
  const progress = await t.request(`/api/agents/${b.agent_id}/progress`, {
    json: { command_id: "x", status: "pulling" },
    headers: asAgent(a.agent_secret),
  });
  assert.equal(progress.status, 403);
  // Registering again rotates the secret.
  const again = await t.register(registration({ machine_name: "a" }));
  assert.equal(again.agent_id, a.agent_id);
  assert.equal((await beat(a.agent_id, a.agent_secret)).status, 401);
  assert.equal((await beat(a.agent_id, again.agent_secret)).status, 200);
  assert.equal((await t.admin(`/api/agents/${a.agent_id}`, { method: "DELETE" })).status, 204);
  assert.equal((await beat(a.agent_id, again.agent_secret)).status, 401);
  await t.close();
});

Deno.test("security - admin APIs and pages need a session or an admin key", async () => {
  const t = await testApp();
  for (
    const path of [
      "/api/agents",
      "/api/events",
      "/api/keys",
      "/metrics",
      "/api/requests",
      "/api/stats",
    ]
  ) {
    const res = await t.request(path);
    assert.equal(res.status, 401, path);
    assert.ok((await res.json()).error, path);
  }
  const page = await t.request("/dashboard/agents");
  assert.equal(page.status, 302);
  assert.equal(page.headers.get("location"), "/login?next=%2Fdashboard%2Fagents");
  const clientKey = (await t.ctx.security.createKey("client", "client")).key;
  assert.equal((await t.request("/api/agents", { headers: asAgent(clientKey) })).status, 401);
  assert.equal((await t.admin("/api/agents")).status, 200);
  await t.close();
});

Deno.test("security - login sets a strict cookie; changes need the CSRF token; failures are rate limited", async () => {
  const t = await testApp();
  const form = (password: string, headers: Record<string, string> = {}) =>
    t.request("/login", {
      method: "POST",
      body: new URLSearchParams({ password, next: "/dashboard" }),
      headers,
    });
  const cross = await form(TEST_ADMIN_PASSWORD, { origin: "https://evil.example" });
  assert.equal(cross.status, 403);
  const ok = await form(TEST_ADMIN_PASSWORD);
  assert.equal(ok.status, 303);
  const cookie = ok.headers.get("set-cookie")!;
  assert.match(cookie, /oc_session=/);
  assert.match(cookie, /HttpOnly/);
  assert.match(cookie, /SameSite=Strict/);
  const session = cookie.split(";")[0];
  assert.equal((await t.request("/api/agents", { headers: { cookie: session } })).status, 200);
  const { csrf } = await (await t.request("/api/admin/session", { headers: { cookie: session } }))
    .json();
  assert.ok(csrf);
  // A cross-site request carrying the cookie but no CSRF token changes nothing.
  const keysBefore = (await t.ctx.security.listKeys()).length;
  const forged = await t.request("/api/keys", {
    json: { name: "x" },
    headers: { cookie: session },
  });
  assert.equal(forged.status, 403);
  assert.equal((await t.ctx.security.listKeys()).length, keysBefore);
  const made = await t.request("/api/keys", {
    json: { name: "x" },
    headers: { cookie: session, "x-csrf-token": csrf },
  });
  assert.equal(made.status, 201);
  // Logging out ends the session.
  await t.request("/logout", { method: "POST", headers: { cookie: session } });
  assert.equal((await t.request("/api/agents", { headers: { cookie: session } })).status, 401);
  const huge = await t.request("/login", {
    method: "POST",
    body: "password=" + "x".repeat(100_000),
  });
  assert.equal(huge.status, 413);
  // Five wrong passwords, then even the right one waits.
  for (let i = 0; i < 5; i++) assert.equal((await form("wrong-password")).status, 401);
  const limited = await form(TEST_ADMIN_PASSWORD);
  assert.equal(limited.status, 429);
  assert.ok(Number(limited.headers.get("retry-after")) > 0);
  await t.close();
});

Deno.test("security - with client keys on, every Ollama and OpenAI route needs a valid key", async () => {
  await using fleet = await startFleet([{ name: "a", models: ["llama3.2"] }]);
  const chat = (headers: Record<string, string> = {}, path = "/api/chat") =>
    fetch(`${fleet.url}${path}`, {
      method: "POST",
      headers,
      body: JSON.stringify({
        model: "llama3.2",
        messages: [{ role: "user", content: "hi" }],
        stream: false,
      }),
    });
  // Off by default, as in Ollama.
  const open = await chat();
  assert.equal(open.status, 200);
  await open.body?.cancel();
  const created = await fetch(`${fleet.url}/api/keys`, {
    method: "POST",
    headers: fleet.adminHeaders,
    body: JSON.stringify({ name: "laptop" }),
  });
  const { key, id } = await created.json();
  const denied = await chat();
  assert.equal(denied.status, 401);
  assert.match((await denied.json()).error, /API key/);
  const deniedV1 = await chat({}, "/v1/chat/completions");
  assert.equal(deniedV1.status, 401);
  assert.equal((await deniedV1.json()).error.type, "authentication_error");
  assert.equal((await chat({ authorization: "Bearer wrong" })).status, 401);
  const allowed = await chat({ authorization: `Bearer ${key}` });
  assert.equal(allowed.status, 200);
  await allowed.body?.cancel();
  const tags = await fetch(`${fleet.url}/api/tags`);
  assert.equal(tags.status, 401);
  await tags.body?.cancel();
  // The liveness probe stays open.
  assert.equal(await fetch(fleet.url).then(async (r) => (await r.text(), r.status)), 200);
  await fetch(`${fleet.url}/api/keys/${id}`, { method: "DELETE", headers: fleet.adminHeaders });
  assert.equal((await chat({ authorization: `Bearer ${key}` })).status, 401);
  const list = await (await fetch(`${fleet.url}/api/keys`, { headers: fleet.adminHeaders })).json();
  const laptop = list.find((k: { id: string }) => k.id === id);
  assert.equal(laptop.uses, 1);
  assert.ok(laptop.revoked_at);
  assert.ok(!JSON.stringify(list).includes(key));
});

Deno.test("security - agent addresses: metadata refused, allow-list enforced", async () => {
  const t = await testApp({
    allowedNetworks: [parseNetwork("10.0.0.0/8"), parseNetwork("127.0.0.1")],
  });
  for (
    const ip of ["169.254.169.254", "fe80::1", "metadata.google.internal", "::ffff:169.254.169.254"]
  ) {
    const res = await t.request("/api/agents", {
      json: registration({ ip_address: ip }),
      headers: asAgent(TEST_AGENT_TOKEN),
    });
    assert.equal(res.status, 400, ip);
  }
  const outside = await t.request("/api/agents", {
    json: registration({ ip_address: "192.168.1.5" }),
    headers: asAgent(TEST_AGENT_TOKEN),
  });
  assert.equal(outside.status, 403);
  assert.equal(await countRows(t.ctx, "agents"), 0);
  assert.equal(
    (await t.request("/api/agents", {
      json: registration({ ip_address: "10.1.2.3" }),
      headers: asAgent(TEST_AGENT_TOKEN),
    })).status,
    201,
  );
  assert.ok(inNetworks("::ffff:10.0.0.1", [parseNetwork("::ffff:0:0/96")]));
  await t.close();
});

Deno.test("security - agent addresses are checked by value, whatever their spelling", async () => {
  await using t = await testApp({
    allowedNetworks: [parseNetwork("10.0.0.0/8"), parseNetwork("fd00::/64")],
  });
  for (
    const ip of [
      "0:0:0:0:0:ffff:a9fe:a9fe",
      "::ffff:0:a9fe:a9fe",
      "64:ff9b::a9fe:a9fe",
      "fd00:ec2:0::254",
      "100.100.100.200",
      "metadata.tencentyun.com",
    ]
  ) {
    const res = await t.request("/api/agents", {
      json: registration({ ip_address: ip }),
      headers: asAgent(TEST_AGENT_TOKEN),
    });
    assert.equal(res.status, 400, ip);
    assert.match((await res.json()).error, /metadata|link-local/, ip);
  }
  // The allow-list matches every spelling of an address in it.
  assert.ok(inNetworks("0:0:0:0:0:ffff:a00:1", [parseNetwork("10.0.0.0/8")]));
  assert.ok(inNetworks("10.0.0.1", [parseNetwork("::ffff:0:0/96")]));
  assert.ok(inNetworks("FD00:0::0:5", [parseNetwork("fd00:0:0:0::/64")]));
  assert.ok(!inNetworks("fd00:0:0:1::5", [parseNetwork("fd00::/64")]));
  assert.ok(!inNetworks("fe80::1%eth0", [parseNetwork("fe80::/10")]));
  assert.throws(() => parseNetwork("10.1/8"), TypeError);
  const mapped = await t.request("/api/agents", {
    json: registration({ ip_address: "0:0:0:0:0:ffff:a00:5" }),
    headers: asAgent(TEST_AGENT_TOKEN),
  });
  assert.equal(mapped.status, 201);
});

Deno.test("security - secrets are generated once, stored hashed", async () => {
  await using t = await memoryRegistry();
  const store = new SecurityStore(t.store, await t.store.load());
  const token = (await store.ensureAgentToken("")).generated!;
  const password = (await store.ensureAdminPassword("")).generated!;
  assert.ok(token.length > 20 && password.length >= 20);
  assert.deepEqual(await store.ensureAgentToken(""), {});
  assert.deepEqual(await store.ensureAdminPassword(""), {});
  assert.ok(store.checkAgentToken(token, ""));
  assert.ok(!store.checkAgentToken(token + "x", ""));
  assert.ok(await store.checkAdminPassword(password));
  const dump = JSON.stringify((await t.store.load()).settings);
  assert.ok(!dump.includes(token) && !dump.includes(password));
  assert.match(dump, /scrypt\$/);
  // A configured password replaces the generated one and ends the old sessions.
  const session = await store.createSession();
  await store.ensureAdminPassword("a much better one");
  assert.equal(store.session(session.id), undefined);
  assert.deepEqual((await t.store.load()).sessions, []);
  assert.ok(await store.checkAdminPassword("a much better one"));
  assert.ok(!await store.checkAdminPassword(password));
});

Deno.test("security - the event loop keeps turning while a password is checked", async () => {
  await using t = await memoryRegistry();
  const store = new SecurityStore(t.store, await t.store.load());
  await store.ensureAdminPassword("a long enough password");
  let turns = 0;
  let checking = true;
  const spin = (async () => {
    while (checking) {
      await new Promise((r) => setTimeout(r, 0));
      turns++;
    }
  })();
  // A check done on the JavaScript thread would finish before any timer could fire.
  assert.equal(await store.checkAdminPassword("a wrong password"), false);
  checking = false;
  await spin;
  assert.ok(turns > 1, `the event loop turned ${turns} times during the check`);
});

Deno.test("security - a verified agent secret is remembered until it is rotated or revoked", async () => {
  await using t = await memoryRegistry();
  const store = new SecurityStore(t.store, await t.store.load());
  const registered = async (name: string) => {
    const { secret, hash } = store.newAgentSecret();
    const { agent } = await t.registry.register(registration({ machine_name: name }), {
      secretHash: hash,
    });
    store.rememberAgentSecret(agent.id, hash);
    return { agent, secret };
  };
  const { agent: a, secret: secretA } = await registered("a");
  const { agent: b, secret: secretB } = await registered("b");
  // The second check of each is answered from the cache of verified secrets.
  for (let i = 0; i < 2; i++) {
    assert.equal(store.agentForSecret(secretA), a.id);
    assert.equal(store.agentForSecret(secretB), b.id);
  }
  // Same lookup characters, different secret: refused, and the real one still works.
  const lookAlike = secretA.slice(0, -1) + (secretA.endsWith("A") ? "B" : "A");
  assert.equal(store.agentForSecret(lookAlike), undefined);
  assert.equal(store.agentForSecret(secretA.slice(0, 20)), undefined);
  assert.equal(store.agentForSecret(secretA), a.id);
  // Registering again rotates the secret: the cached old one is refused at once.
  const { secret: rotated } = await registered("a");
  assert.equal(store.agentForSecret(secretA), undefined);
  assert.equal(store.agentForSecret(rotated), a.id);
  assert.equal(store.agentForSecret(rotated), a.id);
  // Removal revokes it.
  store.revokeAgentSecret(a.id);
  assert.equal(store.agentForSecret(rotated), undefined);
  assert.equal(store.agentForSecret(secretB), b.id);
  // After a restart only the stored hash is known; the secret is checked against it again.
  await t.registry.remove(a.id);
  const restarted = new SecurityStore(t.store, await t.store.load());
  assert.equal(restarted.agentForSecret(secretB), b.id);
  assert.equal(restarted.agentForSecret(secretB), b.id);
  assert.equal(restarted.agentForSecret(secretA), undefined);
  assert.equal(restarted.agentForSecret(rotated), undefined);
});

Deno.test("security - model management can be kept to admins; client uses are recorded", async () => {
  await using open = await startFleet([{ name: "a", models: ["llama3.2"] }]);
  const copy = await fetch(`${open.url}/api/copy`, {
    method: "POST",
    body: JSON.stringify({ source: "llama3.2", destination: "mine" }),
  });
  assert.equal(copy.status, 200);
  await copy.body?.cancel();
  assert.ok(
    (await open.coordinator.ctx.registry.events()).some((e) =>
      /API copy of "llama3.2"/.test(e.message)
    ),
  );

  await using closed = await startFleet([{ name: "a", models: ["llama3.2"] }], {
    clientModelManagement: false,
  });
  for (
    const [method, path] of [["DELETE", "/api/delete"], ["POST", "/api/pull"], [
      "POST",
      "/api/copy",
    ]]
  ) {
    const res = await fetch(`${closed.url}${path}`, {
      method,
      body: JSON.stringify({ model: "llama3.2", source: "llama3.2", destination: "x" }),
    });
    assert.equal(res.status, 401, path);
    await res.body?.cancel();
  }
  const asAdmin = await fetch(`${closed.url}/api/copy`, {
    method: "POST",
    headers: closed.adminHeaders,
    body: JSON.stringify({ source: "llama3.2", destination: "x" }),
  });
  assert.equal(asAdmin.status, 200);
  await asAdmin.body?.cancel();
  const chat = await fetch(`${closed.url}/api/generate`, {
    method: "POST",
    body: JSON.stringify({ model: "llama3.2", prompt: "hi", stream: false }),
  });
  assert.equal(chat.status, 200);
  await chat.body?.cancel();
});

Deno.test("security - clientAddress believes X-Forwarded-For only from trusted proxies", () => {
  const trusted = [parseNetwork("10.0.0.0/8"), parseNetwork("::1")];
  // No trusted proxies, or a peer that is not one: the peer is the client.
  assert.equal(clientAddress("203.0.113.9", "1.2.3.4", []), "203.0.113.9");
  assert.equal(clientAddress("203.0.113.9", "1.2.3.4", trusted), "203.0.113.9");
  // Through trusted proxies: the rightmost address that is not a proxy.
  assert.equal(clientAddress("10.0.0.1", "1.2.3.4", trusted), "1.2.3.4");
  assert.equal(clientAddress("10.0.0.1", "1.2.3.4, 10.9.9.9", trusted), "1.2.3.4");
  assert.equal(clientAddress("::1", "6.6.6.6, 1.2.3.4", trusted), "1.2.3.4");
  assert.equal(clientAddress("::ffff:10.0.0.1", "1.2.3.4", trusted), "1.2.3.4");
  // A forged or malformed entry stops the walk at the last good address.
  assert.equal(clientAddress("10.0.0.1", "1.2.3.4, not-an-ip", trusted), "10.0.0.1");
  assert.equal(clientAddress("10.0.0.1", "junk, 10.0.0.7", trusted), "10.0.0.7");
  assert.equal(clientAddress("10.0.0.1", null, trusted), "10.0.0.1");
});

Deno.test("security - behind a trusted proxy, failed sign-ins are limited per forwarded client", async () => {
  const t = await testApp({ trustedProxies: [parseNetwork("127.0.0.1")] });
  const signIn = (peer: string, forwardedFor: string, password = "wrong-password") =>
    t.app.request("/login", {
      method: "POST",
      body: new URLSearchParams({ password }),
      headers: { "x-forwarded-for": forwardedFor },
    }, { remoteAddr: { hostname: peer } });
  for (let i = 0; i < 5; i++) assert.equal((await signIn("127.0.0.1", "203.0.113.5")).status, 401);
  assert.equal((await signIn("127.0.0.1", "203.0.113.5")).status, 429);
  // Another client behind the same proxy is not locked out.
  assert.equal((await signIn("127.0.0.1", "198.51.100.7", TEST_ADMIN_PASSWORD)).status, 303);
  // A peer that is not a trusted proxy cannot dodge the limit with a made-up header.
  for (let i = 0; i < 5; i++) {
    assert.equal((await signIn("192.0.2.50", `100.64.0.${i}`)).status, 401);
  }
  assert.equal((await signIn("192.0.2.50", "100.64.0.99")).status, 429);
  await t.close();
});

/** A sign-in form post as if from `client`, through a trusted proxy at the peer address. */
function signInAs(
  t: Awaited<ReturnType<typeof testApp>>,
  client: string,
  password: string,
  next = "/dashboard",
) {
  return t.app.request("/login", {
    method: "POST",
    body: new URLSearchParams({ password, next }),
    headers: { "x-forwarded-for": client },
  }, { remoteAddr: { hostname: "127.0.0.1" } });
}

Deno.test("security - sign-in failures from one IPv6 /64 count as one client", async () => {
  const t = await testApp({ trustedProxies: [parseNetwork("127.0.0.1")] });
  for (let i = 1; i <= 5; i++) {
    assert.equal((await signInAs(t, `2001:db8:7:1::${i}`, "wrong-password")).status, 401);
  }
  // Another address in the same /64 is the same client.
  assert.equal((await signInAs(t, "2001:db8:7:1::abcd", TEST_ADMIN_PASSWORD)).status, 429);
  assert.equal((await signInAs(t, "2001:db8:7:2::1", TEST_ADMIN_PASSWORD)).status, 303);
  await t.close();
});

Deno.test("security - sign-in failures from many addresses meet a global budget; then everyone waits", async () => {
  const clock = new FakeClock();
  const t = await testApp({ trustedProxies: [parseNetwork("127.0.0.1")] }, { now: clock.now });
  for (let i = 1; i <= 10; i++) {
    assert.equal((await signInAs(t, `198.51.100.${i}`, "wrong-password")).status, 401);
  }
  const waiting = await signInAs(t, "203.0.113.77", TEST_ADMIN_PASSWORD);
  assert.equal(waiting.status, 429);
  assert.equal(waiting.headers.get("retry-after"), "60");
  clock.advance(60_000);
  assert.equal((await signInAs(t, "203.0.113.77", TEST_ADMIN_PASSWORD)).status, 303);
  await t.close();
});

/**
 * The sign-in flood of issue 12, from a worker thread so that neither the attackers nor the probe
 * run on the coordinator's event loop: `clients` forwarded addresses post `each` wrong passwords,
 * all addresses at once, while a probe asks for /api/version every 10 ms. Resolves to each
 * sign-in's status and Retry-After, and each probe's latency in milliseconds.
 */
async function floodSignIns(url: string, options: { clients: number; each: number }) {
  const code = `
    const url = ${JSON.stringify(url)};
    const get = async () => {
      const started = performance.now();
      const res = await fetch(url + "/api/version");
      await res.body?.cancel();
      if (res.status !== 200) throw new Error("Probe answered " + res.status);
      return performance.now() - started;
    };
    const signIn = async (client) => {
      const res = await fetch(url + "/login", {
        method: "POST",
        body: new URLSearchParams({ password: "wrong-password", next: "/dashboard" }),
        headers: { "x-forwarded-for": client },
        redirect: "manual",
      });
      await res.body?.cancel();
      return [res.status, res.headers.get("retry-after")];
    };
    await get(); // the worker's own first request sets up its client
    let flooding = true;
    const latencies = [];
    const probes = (async () => {
      while (flooding) {
        latencies.push(await get());
        await new Promise((r) => setTimeout(r, 10));
      }
    })();
    const answers = await Promise.all(Array.from({ length: ${options.clients} }, async (_, c) => {
      const mine = [];
      for (let i = 0; i < ${options.each}; i++) mine.push(await signIn("203.0.113." + (c + 1)));
      return mine;
    }));
    flooding = false;
    await probes;
    self.postMessage({ answers: answers.flat(), latencies });`;
  const source = URL.createObjectURL(new Blob([code], { type: "text/javascript" }));
  const worker = new Worker(source, { type: "module" });
  try {
    return await new Promise<{ answers: [number, string | null][]; latencies: number[] }>(
      (resolve, reject) => {
        worker.onmessage = (e) => resolve(e.data);
        worker.onerror = (e) => {
          e.preventDefault();
          reject(e.error ?? new Error(e.message));
        };
      },
    );
  } finally {
    worker.terminate();
    URL.revokeObjectURL(source);
  }
}

Deno.test("security - a flood of wrong sign-ins from many addresses leaves the coordinator responsive", async () => {
  const clock = new FakeClock();
  const coordinator = await startCoordinator(
    testConfig({ trustedProxies: [parseNetwork("127.0.0.1")], healthCheckInterval: 3600 }),
    { now: clock.now },
  );
  const { url } = coordinator;
  const signIn = async (client: string, password: string, path = "/login") => {
    const res = await fetch(`${url}${path}`, {
      method: path === "/login" ? "POST" : "GET",
      body: path === "/login" ? new URLSearchParams({ password, next: "/dashboard" }) : undefined,
      headers: { "x-forwarded-for": client },
      redirect: "manual",
    });
    await res.body?.cancel();
    return res.status;
  };
  try {
    // The first request of each kind compiles its code path: not what is measured here.
    assert.equal(await signIn("192.0.2.1", "", "/login?next=/dashboard"), 200);
    assert.equal(await signIn("192.0.2.1", "wrong-password"), 401);
    // 20 addresses send 5 wrong passwords each, all at once: the attack that froze the
    // coordinator for 27 s. A probe measures /api/version meanwhile.
    const { answers, latencies } = await floodSignIns(url, { clients: 20, each: 5 });
    assert.equal(answers.length, 100);
    assert.ok(latencies.length > 0);
    const slowest = Math.max(...latencies);
    assert.ok(slowest < 200, `a probe took ${slowest.toFixed(0)} ms during the flood`);
    // Few passwords were hashed; every other attempt was turned away with a time to wait.
    assert.ok(answers.filter(([status]) => status === 401).length <= 10);
    for (const [status, retryAfter] of answers.filter(([status]) => status !== 401)) {
      assert.equal(status, 429);
      assert.ok(Number(retryAfter) > 0);
    }
    // Once the window has passed, the right password works again, even from a flooding address.
    clock.advance(15 * 60_000);
    assert.equal(await signIn("203.0.113.1", TEST_ADMIN_PASSWORD), 303);
  } finally {
    await coordinator.stop();
  }
});

Deno.test("security - wrong agent tokens are rate limited per client (IPv6 per /64) and in all", async () => {
  const clock = new FakeClock();
  const t = await testApp({ trustedProxies: [parseNetwork("127.0.0.1")] }, { now: clock.now });
  const register = (client: string, token: string) =>
    t.app.request("/api/agents", {
      method: "POST",
      body: JSON.stringify(registration()),
      headers: {
        "content-type": "application/json",
        authorization: `Bearer ${token}`,
        "x-forwarded-for": client,
      },
    }, { remoteAddr: { hostname: "127.0.0.1" } });
  for (let i = 1; i <= 10; i++) {
    assert.equal((await register(`2001:db8:5:0::${i}`, "wrong-token-0123456789")).status, 401);
  }
  const limited = await register("2001:db8:5:0::99", TEST_AGENT_TOKEN);
  assert.equal(limited.status, 429);
  assert.ok(Number(limited.headers.get("retry-after")) > 0);
  assert.match((await limited.json()).error, /too many wrong agent tokens/);
  assert.equal((await register("2001:db8:5:1::1", TEST_AGENT_TOKEN)).status, 201);
  // A crowd of addresses meets the global budget: then every registration waits a while.
  for (let i = 1; i <= 50; i++) {
    assert.equal((await register(`198.51.100.${i}`, "wrong-token-0123456789")).status, 401);
  }
  assert.equal((await register("203.0.113.9", TEST_AGENT_TOKEN)).status, 429);
  clock.advance(60_000);
  assert.equal((await register("203.0.113.9", TEST_AGENT_TOKEN)).status, 200);
  assert.equal(await countRows(t.ctx, "agents"), 1);
  await t.close();
});
