import assert from "node:assert/strict";
import { clientResponseHeaders, upstreamRequestHeaders } from "./headers.ts";

Deno.test("proxy headers - an agent's cookies, challenges and hop-by-hop headers stay behind", () => {
  const h = new Headers(clientResponseHeaders([
    ["content-type", "application/x-ndjson"],
    ["set-cookie", "session=agent; Path=/"],
    ["set-cookie2", "old=1"],
    ["www-authenticate", "Basic realm=ollama"],
    ["proxy-authenticate", "Basic"],
    ["strict-transport-security", "max-age=31536000"],
    ["alt-svc", 'h3=":443"'],
    ["access-control-allow-origin", "*"],
    ["access-control-allow-credentials", "true"],
    ["connection", "keep-alive, x-agent-secret"],
    ["x-agent-secret", "named by Connection"],
    ["keep-alive", "timeout=5"],
    ["transfer-encoding", "chunked"],
    ["upgrade", "h2c"],
    ["trailer", "x-checksum"],
    ["content-length", "12"],
    ["server", "ollama"],
    ["x-request-id", "the agent's own"],
    ["x-coordinator-agent", "spoofed"],
    ["x-ollama-extra", "kept"],
    ["cache-control", "no-cache"],
  ], { agentName: "gpu-箱", requestId: "req-1" }));
  assert.deepEqual([...h.entries()], [
    ["cache-control", "no-cache"],
    ["content-type", "application/x-ndjson"],
    ["x-coordinator-agent", "gpu-%E7%AE%B1"],
    ["x-ollama-extra", "kept"],
    ["x-request-id", "req-1"],
  ]);
});

Deno.test("proxy headers - upstream gets what Ollama reads and the hop list, never credentials", () => {
  const client = new Headers({
    "content-type": "application/json",
    authorization: "Bearer client-key",
    cookie: "oc_session=1",
    "x-coordinator-hop": "forged",
    "user-agent": "ollama-js",
  });
  assert.deepEqual(upstreamRequestHeaders(client, "a, b"), [
    ["content-type", "application/json"],
    ["user-agent", "ollama-js"],
    ["x-coordinator-hop", "a, b"],
  ]);
});
