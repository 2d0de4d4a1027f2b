import assert from "node:assert/strict";
import { parseWrk } from "./wrk.ts";

const REPORT = `Running 1s test @ http://127.0.0.1:18801/api/chat
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   786.59us    2.13ms  22.56ms   92.56%
    Req/Sec     9.02k     4.64k   15.27k    70.00%
  Latency Distribution
     50%   56.00us
     75%  350.00us
     90%    2.24ms
     99%    1.10s
  8944 requests in 1.00s, 3.84MB read
  Socket errors: connect 0, read 2, write 0, timeout 3
  Non-2xx or 3xx responses: 4
Requests/sec:   8908.49
Transfer/sec:      3.82MB
`;

Deno.test("bench wrk - reads req/s, p50 and p99 in ms, and errors from wrk's report", () => {
  assert.deepEqual(parseWrk(REPORT), {
    rps: 8908.49,
    requests: 8944,
    p50: 0.056,
    p99: 1100,
    errors: 9,
  });
});

Deno.test("bench wrk - a report without figures reads as NaN, not as zero", () => {
  const r = parseWrk("unable to connect to 127.0.0.1:1 Connection refused");
  assert.ok(Number.isNaN(r.rps) && Number.isNaN(r.p50) && Number.isNaN(r.p99));
  assert.ok(Number.isNaN(r.requests));
  assert.equal(r.errors, 0);
});
