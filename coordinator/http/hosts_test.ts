import assert from "node:assert/strict";
import { hostAllowed, hostOf, hostPolicy, ownOrigin } from "./hosts.ts";
import { testApp } from "../testing/app.ts";
import { startCoordinator } from "../server.ts";
import { testConfig } from "../config.ts";

const policy = (allowedHosts: string[] = [], host = "0.0.0.0") =>
  hostPolicy({ host, allowedHosts }, { hostname: "GPU-Box.corp.example" });

Deno.test("hosts - this machine's names, IP addresses and local names pass; other names do not", () => {
  const p = policy();
  for (
    const host of [
      undefined,
      "localhost:8080",
      "LOCALHOST.",
      "127.0.0.1:8080",
      "[::1]:8080",
      "192.168.1.20:8080",
      "[fd00::7]",
      "203.0.113.5:8080", // an address reached through NAT or a container's port mapping
      "gpu-box:8080", // names without a dot: no public DNS has them
      "gpu-box.corp.example:8080", // the machine's own name
      "app.localhost",
      "gpu-box.local:8080",
      "gpu.internal",
      "nas.home.arpa",
    ]
  ) {
    assert.ok(hostAllowed(host, p), String(host));
  }
  for (
    const host of [
      "evil.example",
      "evil.example:8080",
      "gpu-box.corp.example.evil.example",
      "127.0.0.1.evil.example",
      "localhost.evil.example",
      "0x7f.1",
    ]
  ) {
    assert.ok(!hostAllowed(host, p), host);
  }
  assert.equal(hostOf("[::1]:8080"), "::1");
  assert.equal(hostOf("Example.COM.:80"), "example.com");
});

Deno.test("hosts - COORDINATOR_ALLOWED_HOSTS and a listen name extend the list; * allows any", () => {
  const p = policy(["ollama.example.com", "*.corp.example"], "coordinator.example.net");
  assert.ok(hostAllowed("ollama.example.com", p));
  assert.ok(hostAllowed("Ollama.Example.com:443", p));
  assert.ok(hostAllowed("a.b.corp.example", p));
  assert.ok(hostAllowed("coordinator.example.net:8080", p));
  assert.ok(!hostAllowed("example.com", p));
  assert.ok(hostAllowed("anything.example", policy(["*"])));
});

Deno.test("hosts - an origin is this server's own only when it names an allowed host and the same port", () => {
  const p = policy();
  assert.ok(ownOrigin("http://gpu-box:8080", "gpu-box:8080", p));
  assert.ok(ownOrigin("https://gpu-box.local", "gpu-box.local:443", p));
  // A rebound name: Origin and Host agree, but the name is the attacker's.
  assert.ok(!ownOrigin("http://evil.example:8080", "evil.example:8080", p));
  assert.ok(!ownOrigin("http://gpu-box:8081", "gpu-box:8080", p));
  assert.ok(!ownOrigin("not a url", "gpu-box:8080", p));
});

Deno.test("hosts - a request addressed to a foreign name is refused with 403 in the route's shape", async () => {
  const t = await testApp({ allowedHosts: ["ollama.example.com"] });
  const get = (path: string, host: string) => t.request(`http://x${path}`, { headers: { host } });
  const tags = await get("/api/tags", "evil.example:8080");
  assert.equal(tags.status, 403);
  assert.match(
    (await tags.json()).error,
    /Host "evil.example" is not allowed.*COORDINATOR_ALLOWED_HOSTS/,
  );
  const v1 = await get("/v1/models", "evil.example");
  assert.equal(v1.status, 403);
  assert.match((await v1.json()).error.message, /is not allowed/); // OpenAI's shape under /v1
  for (const host of ["gpu-box:8080", "192.168.1.20:8080", "ollama.example.com", "localhost"]) {
    assert.equal((await get("/api/tags", host)).status, 200, host);
  }
  // The rebinding attack: a page on evil.example, rebound to the coordinator's address, calls
  // the API from its own origin. Same origin as far as the browser knows, refused here.
  const rebound = await t.request("http://x/api/pull", {
    method: "POST",
    body: JSON.stringify({ model: "x" }),
    headers: { host: "evil.example:8080", origin: "http://evil.example:8080" },
  });
  assert.equal(rebound.status, 403);
  await t.close();
});

Deno.test("hosts - over the wire, the Host header decides", async () => {
  const coordinator = await startCoordinator(testConfig({ healthCheckInterval: 3600 }));
  // fetch() cannot set Host, so speak HTTP by hand.
  const ask = async (host: string) => {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: coordinator.port });
    await conn.write(new TextEncoder().encode(
      `GET /api/version HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`,
    ));
    const text = new TextDecoder().decode(await new Response(conn.readable).arrayBuffer());
    return Number(text.split(" ")[1]);
  };
  try {
    assert.equal(await ask("rebind.evil.example"), 403);
    assert.equal(await ask(`127.0.0.1:${coordinator.port}`), 200);
    assert.equal(await ask(`gpu-box:${coordinator.port}`), 200);
  } finally {
    await coordinator.stop();
  }
});
