import assert from "node:assert/strict";
import { memoryRegistry, registration } from "../testing/app.ts";
import { agentHeaderValue, agentRefs, pinOf } from "./agent_header.ts";

Deno.test("agent header - any name becomes a valid header value, plain names unchanged", () => {
  for (const name of ["gpu-01", "rack 3 (left)", "gpu-箱", "a – b", "🦙", "100%", "tab\there"]) {
    const value = agentHeaderValue(name);
    assert.doesNotThrow(() => new Headers({ "x-coordinator-agent": value }), name);
    assert.ok(agentRefs(value).includes(name), name);
  }
  assert.equal(agentHeaderValue("gpu-01"), "gpu-01");
  assert.equal(agentHeaderValue("a – b"), "a %E2%80%93 b");
  assert.equal(agentHeaderValue("100%"), "100%25");
  assert.deepEqual(agentRefs("50%zz"), ["50%zz"]); // not our encoding: taken as it is
});

Deno.test("agent header - a request names agents by id, display name or machine name", async () => {
  await using t = await memoryRegistry();
  const { registry } = t;
  const box = (await registry.register(registration({ machine_name: "gpu-箱" }))).agent;
  const other = (await registry.register(registration({ machine_name: "other", ollama_port: 2 })))
    .agent;
  const headers = (v?: string) => new Headers(v === undefined ? {} : { "x-coordinator-agent": v });
  assert.equal(pinOf(registry, headers()), undefined);
  assert.equal(pinOf(registry, headers("all")), "all");
  assert.deepEqual(pinOf(registry, headers("gpu-%E7%AE%B1")), [box]);
  assert.deepEqual(pinOf(registry, headers(other.id)), [other]);
  const utf8 = String.fromCharCode(...new TextEncoder().encode("gpu-箱"));
  assert.deepEqual(pinOf(registry, headers(utf8)), [box]);
  assert.deepEqual(pinOf(registry, headers("nobody")), []);
});
