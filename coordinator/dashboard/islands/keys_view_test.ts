import assert from "node:assert/strict";
import { NO_LIMITS } from "../../store/mod.ts";
import type { KeyUsage } from "../wire.ts";
import { draftOf, limitsOf, limitsText, usageSeries, usageTotals } from "./keys_view.tsx";

const usage: KeyUsage = {
  range: "1h",
  bucket_ms: 60_000,
  buckets: 3,
  since: 1_000_000_020_000 - 20_000,
  rows: [
    { key_id: "a", t: 1_000_000_000_000, requests: 2, tokens_in: 1, tokens_out: 9, limited: 0 },
    { key_id: "b", t: 1_000_000_060_000, requests: 1, tokens_in: 0, tokens_out: 0, limited: 1 },
    { key_id: "a", t: 1_000_000_120_000, requests: 3, tokens_in: 3, tokens_out: 3, limited: 2 },
  ],
};

Deno.test("keys view - totals and chart columns per key from the usage rows", () => {
  assert.deepEqual(Object.fromEntries(usageTotals(usage)), {
    a: { requests: 5, tokens: 16, limited: 2 },
    b: { requests: 1, tokens: 0, limited: 1 },
  });
  const s = usageSeries(usage, ["a", "b"]);
  assert.deepEqual(s.t, [1_000_000_000_000, 1_000_000_060_000, 1_000_000_120_000]);
  assert.deepEqual(s.requests, [[2, 0, 3], [0, 1, 0]]);
  assert.deepEqual(s.tokens, [[10, 0, 6], [0, 0, 0]]);
  assert.deepEqual(s.limited, [[0, 0, 2], [0, 1, 0]]);
});

Deno.test("keys view - limits read from the form: empty is no limit, bad values are named", () => {
  const limits = { requests_per_minute: 60, tokens_per_minute: null, concurrent: 2, weight: 1.5 };
  assert.equal(limitsText(limits), "60 req/min · 2 at once");
  assert.equal(limitsText(NO_LIMITS), "no limits");
  assert.deepEqual(limitsOf(draftOf(limits)), limits);
  assert.deepEqual(
    limitsOf({ requests_per_minute: " ", tokens_per_minute: "", concurrent: "", weight: "" }),
    NO_LIMITS,
  );
  assert.match(String(limitsOf({ ...draftOf(limits), concurrent: "0" })), /Requests at once/);
  assert.match(String(limitsOf({ ...draftOf(limits), tokens_per_minute: "2.5" })), /Tokens/);
  assert.match(String(limitsOf({ ...draftOf(limits), weight: "0" })), /Weight/);
});
