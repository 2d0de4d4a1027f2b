import assert from "node:assert/strict";
import { parseAccessLine } from "./nginx.ts";

Deno.test("nginx - an access line names every upstream tried and its status", () => {
  assert.deepEqual(parseAccessLine("17 200 127.0.0.1:4001, 127.0.0.1:4002 502, 200"), {
    id: "17",
    status: 200,
    upstreams: ["127.0.0.1:4001", "127.0.0.1:4002"],
    upstreamStatuses: ["502", "200"],
  });
  assert.deepEqual(parseAccessLine("- 502 127.0.0.1:4001 502"), {
    id: "-",
    status: 502,
    upstreams: ["127.0.0.1:4001"],
    upstreamStatuses: ["502"],
  });
  assert.deepEqual(parseAccessLine("3 499 - -").upstreams, []);
});
