/**
 * Several coordinators as real processes on one real PostgreSQL, on loopback: one SIGKILLed
 * behind nginx under load, PostgreSQL restarted and crashed under load, the leader SIGKILLed,
 * an agent failing over. Counts and classes of failures are asserted; the waits for what must
 * happen are bounded, so every test ends by itself.
 */
import assert from "node:assert/strict";
import { TEST_AGENT_TOKEN } from "../config.ts";
import { openPostgresStore } from "../store/postgres/store.ts";
import { postgresTestsEnabled, startPostgres, type TestPostgres } from "../testing/postgres.ts";
import { type AccessLine, nginxTestsEnabled, startNginx } from "../testing/nginx.ts";
import {
  adminCookie,
  pool,
  registerSim,
  spawnAgent,
  spawnCoordinator,
  type Spawned,
  spawnSimulator,
} from "../testing/process.ts";

const postgresOk = postgresTestsEnabled();
const nginxOk = nginxTestsEnabled();
const postgres = postgresOk ? await startPostgres() : undefined;
let databases = 0;

/** Bound of every single request of these tests. */
const REQUEST_TIMEOUT_MS = 30_000;

/** Polls `check` until it holds; returns how long that took, or throws after `ms`. */
async function within(ms: number, what: string, check: () => boolean | Promise<boolean>) {
  const t0 = performance.now();
  while (!(await check())) {
    if (performance.now() - t0 > ms) throw new Error(`${what}: not seen within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return performance.now() - t0;
}

function chat(content: string, options: { stream?: boolean; tokens?: number } = {}): string {
  return JSON.stringify({
    model: "llama3.2",
    messages: [{ role: "user", content }],
    stream: options.stream ?? false,
    options: { num_predict: options.tokens ?? 16 },
  });
}

/** A coordinator process on `databaseUrl`, printing what it logs into `output()`. */
function coordinator(databaseUrl: string, env: Record<string, string> = {}): Promise<Spawned> {
  return spawnCoordinator(
    {
      DATABASE_URL: databaseUrl,
      AGENT_TIMEOUT: "120",
      HEALTH_CHECK_INTERVAL: "1",
      LOG_LEVEL: "warn",
      ...env,
    },
    undefined,
    { capture: true },
  );
}

interface AgentView {
  id: string;
  machine_name: string;
  status: string;
  status_reason: string | null;
  last_seen: string;
}

async function agentsOn(url: string, cookie: string): Promise<AgentView[]> {
  const res = await fetch(`${url}/api/agents`, {
    headers: { cookie },
    signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
  });
  if (!res.ok) throw new Error(`Cannot list agents at ${url}: HTTP ${res.status}`);
  return await res.json();
}

async function stopAll(children: (Spawned | undefined)[]): Promise<void> {
  await Promise.all(children.map((c) => c?.stop()));
}

/** What a client saw of one request. */
interface Outcome {
  id: string;
  ok: boolean;
  start: number;
  end: number;
  status?: number;
  contentType?: string;
  body?: string;
  error?: string;
}

/** What a client saw of a stream. */
interface StreamOutcome {
  id: string;
  /** The coordinator nginx sent it to. */
  upstream: string;
  status: number;
  contentType: string;
  lines: number;
  done: boolean;
  error?: string;
}

/**
 * Opens a streaming chat through nginx; `started` resolves with the coordinator serving it once
 * its first bytes came, `result` at its end.
 */
function openStream(url: string, id: string) {
  let started!: (upstream: string) => void;
  const first = new Promise<string>((r) => started = r);
  const result = (async (): Promise<StreamOutcome> => {
    const res = await fetch(`${url}/api/chat`, {
      method: "POST",
      headers: { "x-test-id": id },
      body: chat(id, { stream: true, tokens: 4000 }),
      signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
    });
    const out: StreamOutcome = {
      id,
      upstream: res.headers.get("x-upstream") ?? "",
      status: res.status,
      contentType: res.headers.get("content-type") ?? "",
      lines: 0,
      done: false,
    };
    let text = "";
    try {
      for await (const chunk of res.body!.pipeThrough(new TextDecoderStream())) {
        started(out.upstream);
        text += chunk;
        const lines = text.split("\n");
        text = lines.pop()!;
        for (const line of lines.filter(Boolean)) {
          out.lines++;
          if (JSON.parse(line).done === true) out.done = true;
        }
      }
    } catch (e) {
      out.error = (e as Error).message;
    }
    started(out.upstream);
    return out;
  })();
  return { started: first, result };
}

/**
 * 1,000 non-streaming chats at concurrency 16 through nginx in front of two coordinators on one
 * PostgreSQL with two simulated agents; coordinator A is SIGKILLed half-way, with four streams
 * open. Returns what the clients saw and what nginx logged.
 */
async function killOneBehindNginx(nextUpstream: string) {
  const url = await postgres!.createDatabase(`processes_${++databases}`);
  const sims = await Promise.all(
    [0, 1].map(() => spawnSimulator(["--tps", "2000", "--models", "llama3.2", "--parallel", "16"])),
  );
  const [a, b] = await Promise.all([coordinator(url), coordinator(url)]);
  const KEEPALIVE = 16;
  const nginx = (await startNginx([a.port, b.port], {
    nextUpstream,
    keepalive: KEEPALIVE,
    accessLog: true,
    jsonErrors: true,
    // Keep sending A its share after it died: each such request must be re-sent to B. (The
    // README's example leaves A alone for 10 s after a failure instead: fewer re-sends.)
    maxFails: 0,
  }))!;
  try {
    for (const [i, sim] of sims.entries()) await registerSim(a.url, `sim-${i}`, sim, 16);
    const cookie = await adminCookie(b.url);
    await within(
      5000,
      "both agents online on B",
      async () => (await agentsOn(b.url, cookie)).filter((x) => x.status === "online").length === 2,
    );

    const t0 = performance.now();
    let done = 0;
    let killAt = Infinity;
    const streams: ReturnType<typeof openStream>[] = [];
    let killed: Promise<void> | undefined;
    const killHalfway = async () => {
      // Streams in full flow when A dies: two on A at least, and those nginx sent to B.
      let onA = 0;
      while (onA < 2 && streams.length < 20) {
        const s = openStream(nginx.url, `stream-${streams.length}`);
        streams.push(s);
        if (await s.started === `127.0.0.1:${a.port}`) onA++;
      }
      killAt = performance.now();
      a.kill("SIGKILL");
      // Its sockets are closed once its parent sees it exit: what nginx sends A from then on
      // can only fail on a connection nginx had kept open to it.
      await a.process.status;
    };
    const outcomes = await pool(1000, 16, async (i): Promise<Outcome> => {
      const id = String(i);
      const start = performance.now();
      try {
        const res = await fetch(`${nginx.url}/api/chat`, {
          method: "POST",
          headers: { "x-test-id": id, "content-type": "application/json" },
          body: chat(`q${i}`),
          signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
        });
        const body = await res.text();
        let ok = false;
        try {
          ok = res.status === 200 && JSON.parse(body).done === true;
        } catch { /* not JSON */ }
        return {
          id,
          ok,
          start,
          end: performance.now(),
          status: res.status,
          contentType: res.headers.get("content-type") ?? "",
          body: body.slice(0, 200),
        };
      } catch (e) {
        return { id, ok: false, start, end: performance.now(), error: (e as Error).message };
      } finally {
        if (++done === 500) killed = killHalfway();
      }
    });
    const seconds = (performance.now() - t0) / 1000;
    await killed;
    const streamed = await Promise.all(streams.map((s) => s.result));
    const log = new Map<string, AccessLine>();
    await within(5000, "every request in nginx's access log", async () => {
      for (const line of await nginx.accessLog()) log.set(line.id, line);
      return outcomes.every((o) => log.has(o.id)) && streamed.every((s) => log.has(s.id));
    });
    return {
      outcomes,
      streamed,
      log,
      killAt,
      seconds,
      errors: await nginx.errorLog(),
      killed: `127.0.0.1:${a.port}`,
      keepalive: KEEPALIVE,
    };
  } finally {
    await nginx.stop();
    await stopAll([a, b, ...sims]);
  }
}

Deno.test({
  name: "processes - a coordinator SIGKILLed behind nginx loses only the POSTs it had taken",
  ignore: !postgresOk || !nginxOk,
  async fn() {
    const run = await killOneBehindNginx("error timeout http_502 http_503");
    const { outcomes, log, killed } = run;
    const failed = outcomes.filter((o) => !o.ok);
    const resent = outcomes.filter((o) => log.get(o.id)!.upstreams.length > 1);
    // Every request nginx could send elsewhere (it had not reached a coordinator) succeeded.
    assert.deepEqual(resent.filter((o) => !o.ok), []);
    assert.ok(resent.length > 0, "nginx re-sent none");
    // The others failed only because the killed coordinator had taken them: nginx sent them to
    // A alone and does not re-send a POST that reached an upstream.
    for (const o of failed) {
      const line = log.get(o.id)!;
      assert.deepEqual(line.upstreams, [killed], `request ${o.id} failed elsewhere`);
      assert.ok(o.end > run.killAt, `request ${o.id} failed before the kill`);
    }
    // Sent before the kill: A had taken them (16 clients, so at most 16). Sent after: nginx
    // reused a connection it kept to A before it noticed A had closed it (at most one failure
    // per kept connection, since nginx closes it then).
    const inFlight = failed.filter((o) => o.start < run.killAt);
    const races = failed.filter((o) => o.start >= run.killAt);
    assert.ok(inFlight.length <= 16, `${inFlight.length} in flight on A`);
    assert.ok(races.length <= run.keepalive, `${races.length} keepalive races`);
    // What those clients saw: nginx's 502 in the API's shape (the README's error_page).
    const kinds = new Map<string, number>();
    for (const o of failed) {
      const kind = o.error
        ? `no answer (${o.error})`
        : `HTTP ${o.status} ${o.contentType} ${o.body}`;
      kinds.set(kind, (kinds.get(kind) ?? 0) + 1);
    }
    assert.deepEqual(
      [...kinds.keys()].filter((k) =>
        k !== 'HTTP 502 application/json {"error":"No coordinator answered; try again"}'
      ),
      [],
    );
    // How nginx saw A go (one line per failed attempt).
    const seen = new Map<string, number>();
    for (const m of run.errors.matchAll(/\[error\] [^*]*\*\d+ (.*?) while ([a-z ]+)/g)) {
      const what = `${m[1]} while ${m[2]}`;
      seen.set(what, (seen.get(what) ?? 0) + 1);
    }

    // Streams: those on B end normally; those on A end early without their final line, with
    // an error reading the body (nginx cannot end the chunked body it began).
    const streamsOnA = run.streamed.filter((s) => s.upstream === killed);
    assert.ok(streamsOnA.length >= 2, `${streamsOnA.length} streams on A`);
    for (const s of run.streamed) {
      if (streamsOnA.includes(s)) {
        assert.equal(s.status, 200);
        assert.equal(s.done, false);
        assert.ok(s.error, `stream ${s.id} on A ended cleanly`);
      } else {
        assert.equal(s.done, true, `stream ${s.id} on B: ${s.error}`);
      }
    }
    console.log(
      `processes: 1000 chats at c=16 via nginx (proxy_next_upstream error timeout http_502 ` +
        `http_503) over 2 coordinators, one SIGKILLed after 500, in ${run.seconds.toFixed(1)} s: ` +
        `${1000 - failed.length} ok ` +
        `(${resent.length} re-sent by nginx to the other), ${failed.length} failed ` +
        `(${inFlight.length} had reached the killed one before it was gone, ${races.length} keepalive races): ` +
        [...kinds].map(([k, n]) => `${n}× ${k}`).join("; "),
    );
    console.log(
      `processes: nginx's error log: ${[...seen].map(([k, n]) => `${n}× ${k}`).join("; ")}`,
    );
    console.log(
      `processes: ${streamsOnA.length} of ${run.streamed.length} streams were on the killed ` +
        `coordinator: ` +
        streamsOnA.map((s) =>
          `HTTP ${s.status} ${s.contentType}, ${s.lines} lines, no done line, then ${
            s.error ? `a body error (${s.error})` : "a clean end of body"
          }`
        ).join("; "),
    );
  },
});

Deno.test({
  name: "processes - with non_idempotent, nginx re-sends what a killed coordinator had taken",
  ignore: !postgresOk || !nginxOk,
  async fn() {
    const run = await killOneBehindNginx("error timeout http_502 http_503 non_idempotent");
    const failed = run.outcomes.filter((o) => !o.ok);
    const resent = run.outcomes.filter((o) => run.log.get(o.id)!.upstreams.length > 1);
    assert.ok(resent.length > 0, "nginx re-sent none");
    // Nothing can re-send an answer nginx had begun to relay: a chat killed between its head and
    // its body (a Deno server sends them apart once they pass ~512 bytes) ends in a body error.
    // Those are the only failures allowed: on the killed coordinator, in flight at the kill.
    for (const o of failed) {
      assert.match(o.error ?? "", /body/, `request ${o.id} failed otherwise: ${JSON.stringify(o)}`);
      assert.deepEqual(run.log.get(o.id)!.upstreams, [run.killed], `request ${o.id} elsewhere`);
      assert.ok(o.start < run.killAt && o.end > run.killAt, `request ${o.id} not in flight`);
    }
    assert.ok(failed.length <= 16, `${failed.length} answers cut`);
    console.log(
      `processes: with non_idempotent, ${1000 - failed.length} of 1000 chats ok in ${
        run.seconds.toFixed(1)
      } s, ${resent.length} re-sent by nginx after the kill, ${failed.length} cut mid-answer`,
    );
  },
});

/** Chats at a fixed concurrency until stopped. */
function steadyLoad(url: string, concurrency: number) {
  let running = true;
  let completed = 0;
  let ok = 0;
  const failures: string[] = [];
  const workers = Array.from({ length: concurrency }, async (_, w) => {
    for (let i = 0; running; i++) {
      try {
        const res = await fetch(`${url}/api/chat`, {
          method: "POST",
          body: chat(`w${w}-${i}`),
          signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
        });
        const text = await res.text();
        if (res.status === 200 && JSON.parse(text).done === true) ok++;
        else failures.push(`HTTP ${res.status}: ${text.slice(0, 200)}`);
      } catch (e) {
        failures.push((e as Error).message);
      }
      completed++;
    }
  });
  return {
    get completed() {
      return completed;
    },
    /** Waits for `n` more requests to complete. */
    more(n: number) {
      const target = completed + n;
      return within(REQUEST_TIMEOUT_MS, `${n} more requests`, () => completed >= target);
    },
    async stop() {
      running = false;
      await Promise.all(workers);
      return { ok, failures };
    },
  };
}

async function register(url: string, name: string, ollamaPort: number) {
  return await fetch(`${url}/api/agents`, {
    method: "POST",
    headers: { authorization: `Bearer ${TEST_AGENT_TOKEN}` },
    body: JSON.stringify({
      machine_name: name,
      ip_address: "127.0.0.1",
      ollama_port: ollamaPort,
      ollama_version: "0.12.6",
    }),
    signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
  });
}

Deno.test({
  name:
    "processes - PostgreSQL restarted and crashed under load: no failed chat, no lost log row, no crash",
  ignore: !postgresOk,
  async fn() {
    // A server of its own: this test takes it down.
    const pg: TestPostgres = await startPostgres();
    const sim = await spawnSimulator(["--tps", "2000", "--models", "llama3.2", "--parallel", "8"]);
    let c: Spawned | undefined;
    try {
      const url = await pg.createDatabase("restarts");
      // The harness turns synchronous commit off for speed; a crash would then lose the last
      // commits, which a real server (on by default) keeps.
      await pg.psql("ALTER DATABASE restarts SET synchronous_commit = on");
      c = await coordinator(url);
      await registerSim(c.url, "sim", sim, 8);
      const load = steadyLoad(c.url, 8);
      await load.more(100);

      await pg.restart();
      await load.more(200);

      await pg.kill();
      const refused = await register(c.url, "while-down", sim.port);
      const refusal = await refused.json();
      await load.more(100); // served with the database away
      await pg.start();
      await load.more(200);
      const { ok, failures } = await load.stop();

      assert.deepEqual(failures, []);
      assert.equal(refused.status, 503);
      assert.ok(Number(refused.headers.get("retry-after")) > 0, "Retry-After");
      assert.match(refusal.error, /database is unavailable/);
      // Back by itself: registrations are stored again.
      await within(10_000, "a registration stored", async () => {
        const res = await register(c!.url, "after", sim.port);
        await res.body?.cancel();
        return res.status === 201;
      });
      // Every chat is in the request log once the buffer is flushed.
      const store = await openPostgresStore(url);
      let rows = 0;
      try {
        await within(15_000, `${ok} chats in the request log`, async () => {
          rows = (await store.requests({ route: "/api/chat", limit: 10_000 })).length;
          return rows >= ok;
        });
      } finally {
        await store.close();
      }
      assert.equal(rows, ok);
      assert.equal(c.exited(), false);
      const out = c.output();
      assert.match(out, /Cannot write the request log, keeping it to retry/);
      assert.match(out, /The request log is written again/);
      assert.doesNotMatch(out, /Unhandled|Uncaught/);
      console.log(
        `processes: ${ok} chats at c=8 through a PostgreSQL restart and crash: 0 failed, ` +
          `${rows} rows in the request log; registration while down: HTTP ${refused.status}, ` +
          `Retry-After ${refused.headers.get("retry-after")}`,
      );
    } catch (e) {
      console.error(`coordinator output:\n${c?.output()}`);
      throw e;
    } finally {
      await stopAll([c, sim]);
      await pg.stop();
    }
  },
});

/** Heartbeats as agent `id` to `url` every 500 ms until stopped or refused. */
function heartbeating(url: string, reg: { agent_id: string; agent_secret: string }) {
  let running = true;
  let last = 0;
  const loop = (async () => {
    while (running) {
      try {
        const res = await fetch(`${url}/api/health`, {
          method: "POST",
          headers: { authorization: `Bearer ${reg.agent_secret}` },
          body: JSON.stringify({
            agent_id: reg.agent_id,
            cpu_usage: 1,
            memory_usage: 1,
            active_requests: 0,
          }),
          signal: AbortSignal.timeout(2000),
        });
        await res.body?.cancel();
        if (!res.ok) break;
        last = performance.now();
      } catch {
        break;
      }
      await new Promise((r) => setTimeout(r, 500));
    }
  })();
  return {
    /** When the last heartbeat was accepted (performance.now()). */
    get last() {
      return last;
    },
    async stop() {
      running = false;
      await loop;
    },
  };
}

Deno.test({
  name:
    "processes - the leader SIGKILLed: another marks a silent agent offline within AGENT_TIMEOUT",
  ignore: !postgresOk,
  async fn() {
    const AGENT_TIMEOUT = 4;
    const url = await postgres!.createDatabase(`processes_${++databases}`);
    const sim = await spawnSimulator(["--models", "llama3.2"]);
    const env = { AGENT_TIMEOUT: String(AGENT_TIMEOUT), HEALTH_CHECK_INTERVAL: "1" };
    const LEADS = /leads the fleet-wide chores/;
    // A starts alone, so it leads.
    const a = await coordinator(url, env);
    let b: Spawned | undefined;
    const beats: ReturnType<typeof heartbeating>[] = [];
    try {
      await within(10_000, "A leading", () => LEADS.test(a.output()));
      b = await coordinator(url, env);
      const regX = await (await register(a.url, "silent", sim.port)).json();
      const regY = await (await register(b.url, "alive", sim.port)).json();
      // X heartbeats to A only, Y to B only.
      beats.push(heartbeating(a.url, regX), heartbeating(b.url, regY));
      const cookie = await adminCookie(b.url);
      const status = async (id: string) =>
        (await agentsOn(b!.url, cookie)).find((x) => x.id === id)?.status;
      await within(
        5000,
        "both online on B",
        async () =>
          (await status(regX.agent_id)) === "online" && (await status(regY.agent_id)) === "online",
      );
      await new Promise((r) => setTimeout(r, 1500)); // a few heartbeats each
      assert.doesNotMatch(b.output(), LEADS);

      const killAt = performance.now();
      a.kill("SIGKILL");
      await a.stop();
      let ledAfter = NaN;
      // The new leader needs a moment to take the lock (it asks every second) and its monitor
      // checks every second: AGENT_TIMEOUT after the silence began, give or take those.
      await within((AGENT_TIMEOUT + 3) * 1000, "X offline on B", async () => {
        if (Number.isNaN(ledAfter) && LEADS.test(b!.output())) {
          ledAfter = performance.now() - killAt;
        }
        const agents = await agentsOn(b!.url, cookie);
        // The agent that heartbeats to B never goes offline meanwhile.
        assert.equal(agents.find((x) => x.id === regY.agent_id)?.status, "online");
        return agents.find((x) => x.id === regX.agent_id)?.status === "offline";
      });
      const sinceKill = (performance.now() - killAt) / 1000;
      const silentFor = (performance.now() - beats[0].last) / 1000;
      assert.match(b.output(), LEADS);
      // Offline for the right reason, not sooner: silent for AGENT_TIMEOUT, less the heartbeats
      // A took in its last second (it writes them every second; SIGKILL lost them).
      assert.ok(silentFor > AGENT_TIMEOUT - 1.5, `offline after ${silentFor} s of silence`);
      const x = (await agentsOn(b.url, cookie)).find((v) => v.id === regX.agent_id)!;
      assert.match(x.status_reason ?? "", /No heartbeat/);
      console.log(
        `processes: leader SIGKILLed; the other led after ${
          (ledAfter / 1000).toFixed(1)
        } s and marked the silent agent offline ${sinceKill.toFixed(1)} s after the kill ` +
          `(AGENT_TIMEOUT ${AGENT_TIMEOUT} s, health checks every 1 s)`,
      );
    } finally {
      await Promise.all(beats.map((h) => h.stop()));
      await stopAll([a, b, sim]);
    }
  },
});

Deno.test({
  name: "processes - an agent given COORDINATOR_URL=A,B heartbeats through B when A dies",
  ignore: !postgresOk,
  async fn() {
    const url = await postgres!.createDatabase(`processes_${++databases}`);
    // Heartbeats every second (the coordinators tell the agent so when it registers).
    const env = { AGENT_HEARTBEAT_INTERVAL: "1" };
    const a = await coordinator(url, env);
    const b = await coordinator(url, env);
    const agent = spawnAgent(`${a.url},${b.url}`, "failover");
    try {
      const cookie = await adminCookie(b.url);
      const mine = async () =>
        (await agentsOn(b.url, cookie)).filter((x) => x.machine_name === "failover");
      await within(
        20_000,
        "the agent online on B",
        async () => (await mine()).some((x) => x.status === "online"),
      );
      const [before] = await mine();
      const killedAt = Date.now();
      a.kill("SIGKILL");
      await a.stop();
      // Heartbeats after the kill can only have come to B.
      await within(15_000, "a heartbeat to B", async () => {
        const [x] = await mine();
        return Date.parse(x.last_seen) > killedAt;
      });
      const [first] = await mine();
      await within(15_000, "another heartbeat to B", async () => {
        const [x] = await mine();
        return Date.parse(x.last_seen) > Date.parse(first.last_seen);
      });
      const after = await mine();
      assert.equal(after.length, 1);
      assert.equal(after[0].id, before.id);
      assert.equal(after[0].status, "online");
      console.log(
        `processes: agent moved to B ${
          ((Date.parse(first.last_seen) - killedAt) / 1000).toFixed(1)
        } s after A was killed, same id`,
      );
    } finally {
      await stopAll([agent, a, b]);
    }
  },
});
