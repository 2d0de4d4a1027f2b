/**
 * The abuse suite: attacks on a real coordinator process, each with the coordinator's
 * responsiveness measured throughout (a `/api/version` probe and a heartbeating agent) and its
 * data checked afterwards. Loopback only; every attack is bounded in time and count.
 */
import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { TEST_ADMIN_PASSWORD, TEST_AGENT_TOKEN } from "../config.ts";
import { adminCookie, pool, registerSim, spawnSimulator } from "./process.ts";
import {
  describeResponsiveness,
  fillDisk,
  residentMb,
  type Responsiveness,
  smallDisk,
  watchResponsiveness,
} from "./abuse.ts";
import { connect, send, type ServerProcess, spawnServer } from "./raw_http.ts";

/** The probe's bound under every attack (issue "Stays up whatever arrives"). */
const PROBE_MAX_MS = 200;
/**
 * The coordinator's resident memory never goes above this during an attack. It idles at about
 * 85 MB; a flood of thousands of requests takes it to 150–230 MB, where it levels off (the
 * JavaScript heap is back at about 17 MB after a collection: what stays is the allocators' and
 * V8's reserve). Issue 12 saw 1,073 MB from forty declared bodies.
 */
const RSS_MAX_MB = 300;

/** A coordinator process as users run it (a database file), under a descriptor limit if given. */
interface Target extends ServerProcess {
  dbPath: string;
  close(): Promise<void>;
}

async function startTarget(
  env: Record<string, string> = {},
  options: { openFiles?: number } = {},
): Promise<Target> {
  const dir = await Deno.makeTempDir({ prefix: "oc-abuse-" });
  const dbPath = `${dir}/coordinator.db`;
  const server = await spawnServer(["coordinator/main.ts"], {
    openFiles: options.openFiles,
    // Ahead of the attack and of the machine's other work, as the watcher is: the probe then
    // measures what the coordinator does, not how busy the machine is.
    priority: true,
    env: {
      COORDINATOR_HOST: "127.0.0.1",
      COORDINATOR_PORT: "0",
      DATABASE_URL: `sqlite://${dbPath}`,
      AUTO_REGISTER_LOCAL_OLLAMA: "false",
      // The event loop's delay during an attack is read from /metrics.
      METRICS_PUBLIC: "true",
      LOG_LEVEL: "error",
      AGENT_TOKEN: TEST_AGENT_TOKEN,
      ADMIN_PASSWORD: TEST_ADMIN_PASSWORD,
      PATH: Deno.env.get("PATH") ?? "",
      ...env,
    },
  });
  return {
    ...server,
    dbPath,
    async close() {
      await server.stop();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
  };
}

/**
 * Runs `attack` against `target` with the harness watching, prints one line of figures, and
 * asserts what the issue asks under every attack: each probe answered within 200 ms, no probe or
 * heartbeat failed, resident memory bounded, and the same process still serving afterwards.
 */
async function underAttack(
  target: Target,
  name: string,
  attack: () => Promise<string>,
): Promise<Responsiveness> {
  // The first requests of each kind compile their code paths: not what is measured.
  for (let i = 0; i < 3; i++) await (await fetch(`${target.url}/api/version`)).body?.cancel();
  await loopDelay(target.url); // a new window
  const cpu0 = cpuSeconds(target.pid);
  const wait0 = runQueueSeconds(target.pid);
  const t0 = performance.now();
  const watch = await watchResponsiveness(target.url, "watcher", { pid: target.pid });
  // Whatever the attack does, the watcher's worker ends.
  const outcome = await attack().then((extra) => ({ extra }), (error: unknown) => ({ error }));
  const seen = await watch.stop();
  if ("error" in outcome) throw outcome.error;
  const { extra } = outcome;
  const seconds = (performance.now() - t0) / 1000;
  const cpu = (cpuSeconds(target.pid) - cpu0) / seconds;
  const waited = (runQueueSeconds(target.pid) - wait0) / seconds;
  const loop = await loopDelay(target.url);
  const context = `event loop delay p99 ${loop.p99Ms.toFixed(0)} ms, max ${
    loop.maxMs.toFixed(0)
  } ms; coordinator CPU ${(cpu * 100).toFixed(0)} %, its main thread waiting for a CPU ${
    (waited * 100).toFixed(0)
  } % of the time; load average ${
    Deno.loadavg()[0].toFixed(1)
  } on ${navigator.hardwareConcurrency} CPUs`;
  console.log(describeResponsiveness(name, seen, `${extra}; ${context}`));
  const why = seen.errors.join("; ");
  assert.equal(seen.probeFailures, 0, why);
  assert.equal(seen.heartbeatFailures, 0, why);
  assert.ok(seen.probes >= 10, `only ${seen.probes} probes`);
  assert.ok(seen.maxMs < PROBE_MAX_MS, `a probe took ${seen.maxMs.toFixed(0)} ms`);
  assert.ok(seen.rssPeakMb < RSS_MAX_MB, `resident memory reached ${seen.rssPeakMb.toFixed(0)} MB`);
  const alive = await fetch(`${target.url}/api/version`);
  assert.equal(alive.status, 200);
  await alive.body?.cancel();
  assert.doesNotMatch(target.stderr(), /Uncaught|Unhandled|panicked/);
  return seen;
}

/** The coordinator's event-loop delay since the previous call (from its public /metrics). */
async function loopDelay(url: string): Promise<{ p99Ms: number; maxMs: number }> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const read = (re: RegExp) => Number(re.exec(text)?.[1] ?? NaN) * 1000;
  return {
    p99Ms: read(/^ollama_coordinator_event_loop_delay_seconds\{quantile="0\.99"\} (\S+)$/m),
    maxMs: read(/^ollama_coordinator_event_loop_delay_max_seconds (\S+)$/m),
  };
}

/** CPU time a process has used, in seconds (Linux), or NaN elsewhere. */
function cpuSeconds(pid: number): number {
  try {
    const fields = Deno.readTextFileSync(`/proc/${pid}/stat`).split(") ")[1].split(" ");
    // utime and stime, fields 14 and 15 of stat(5), in clock ticks (100 a second on Linux).
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch {
    return NaN;
  }
}

/**
 * Time the process's main thread has spent runnable but waiting for a CPU, in seconds (Linux
 * schedstat), or NaN elsewhere: what a busy machine, not the coordinator, adds to its latencies.
 */
function runQueueSeconds(pid: number): number {
  try {
    return Number(Deno.readTextFileSync(`/proc/${pid}/task/${pid}/schedstat`).split(" ")[1]) / 1e9;
  } catch {
    return NaN;
  }
}

/** Creates an admin API key through a signed-in session; returns the key. */
async function adminKey(url: string): Promise<string> {
  const cookie = await adminCookie(url);
  const { csrf } = await (await fetch(`${url}/api/admin/session`, { headers: { cookie } })).json();
  const res = await fetch(`${url}/api/keys`, {
    method: "POST",
    headers: { cookie, "x-csrf-token": csrf, "content-type": "application/json" },
    body: JSON.stringify({ name: "abuse", scope: "admin" }),
  });
  const { key } = await res.json();
  if (!res.ok || !key) throw new Error(`Cannot create an admin key: HTTP ${res.status}`);
  return key;
}

/** Counts of each status, as "401×10, 429×2990". */
function tally(statuses: number[]): string {
  const counts = new Map<number, number>();
  for (const s of statuses) counts.set(s, (counts.get(s) ?? 0) + 1);
  return [...counts].sort(([a], [b]) => a - b).map(([s, n]) => `${s}×${n}`).join(", ");
}

const perSecond = (n: number, ms: number) => `${Math.round(n / (ms / 1000))}/s`;

Deno.test("abuse - a full disk: inference goes on, changes answer 503 and change nothing, the log catches up", async () => {
  const disk = await smallDisk("4m");
  if (!disk) {
    console.log("abuse: disk-full attack skipped: this machine cannot mount a tmpfs (run as root)");
    return;
  }
  const sim = await spawnSimulator(["--tps", "100000", "--models", "llama3.2"]);
  const coordinator = await startTarget({ DATABASE_URL: `sqlite://${disk.dir}/c.db` });
  try {
    const agentId = await registerSim(coordinator.url, "sim", sim);
    const cookie = await adminCookie(coordinator.url);
    const csrf = (await (await fetch(`${coordinator.url}/api/admin/session`, {
      headers: { cookie },
    })).json()).csrf;
    const watch = await watchResponsiveness(coordinator.url, "watcher", { pid: coordinator.pid });
    const filler = await fillDisk(disk.dir);
    const chat = (i: number) =>
      fetch(`${coordinator.url}/api/chat`, {
        method: "POST",
        body: JSON.stringify({
          model: "llama3.2",
          messages: [{ role: "user", content: `hello ${i}` }],
          stream: false,
        }),
      }).then(async (r) => (await r.text(), r.status));
    const statuses = await pool(300, 8, chat);
    assert.deepEqual(new Set(statuses), new Set([200]), tally(statuses));
    // An admin change the database cannot take: 503, and nothing changed.
    const patch = await fetch(`${coordinator.url}/api/agents/${agentId}`, {
      method: "PATCH",
      headers: { cookie, "x-csrf-token": csrf, "content-type": "application/json" },
      body: JSON.stringify({ drain: true, labels: ["x"] }),
    });
    assert.equal(patch.status, 503, await patch.text());
    const agent = await (await fetch(`${coordinator.url}/api/agents/${agentId}`, {
      headers: { cookie },
    })).json();
    assert.equal(agent.status, "online");
    assert.deepEqual(agent.labels, []);
    const rss = residentMb(coordinator.pid);
    // Space comes back: every request made meanwhile reaches the log.
    await Deno.remove(filler);
    let logged = 0;
    for (let i = 0; i < 100 && logged < 300; i++) {
      const res = await fetch(`${coordinator.url}/api/requests?route=/api/chat&limit=10000`, {
        headers: { cookie },
      });
      logged = (await res.json()).length;
      if (logged < 300) await new Promise((r) => setTimeout(r, 100));
    }
    const seen = await watch.stop();
    console.log(
      describeResponsiveness(
        "disk full",
        seen,
        `${logged} of 300 logged, RSS ${rss.toFixed(0)} MB`,
      ),
    );
    assert.equal(logged, 300);
    assert.equal(seen.probeFailures, 0);
    assert.equal(seen.heartbeatFailures, 0);
    assert.ok(seen.maxMs < PROBE_MAX_MS, `a probe took ${seen.maxMs} ms`);
    // Still the same process.
    const alive = await fetch(`${coordinator.url}/api/version`);
    assert.equal(alive.status, 200);
    await alive.body?.cancel();
  } finally {
    await Promise.all([coordinator.close(), sim.stop()]);
    await disk.unmount();
  }
});

Deno.test("abuse - a sign-in flood from many addresses: few passwords hashed, the rest 429 at once", async () => {
  const target = await startTarget({ TRUSTED_PROXIES: "127.0.0.1" });
  try {
    const key = await adminKey(target.url);
    const total = 3000;
    let answers: [number, string | null][] = [];
    let ms = 0;
    await underAttack(target, "sign-in flood", async () => {
      const t0 = performance.now();
      // 3,000 wrong passwords, 100 at a time, each from its own address (IPv4 and IPv6 /64s)
      // forwarded by a trusted proxy: the per-address limit never applies, the global one does.
      answers = await pool(total, 100, async (i) => {
        const client = i % 2
          ? `198.18.${(i >> 8) & 255}.${i & 255}`
          : `2001:db8:${i.toString(16)}::1`;
        const res = await fetch(`${target.url}/login`, {
          method: "POST",
          body: new URLSearchParams({ password: "wrong-password", next: "/dashboard" }),
          headers: { "x-forwarded-for": client },
          redirect: "manual",
        });
        await res.body?.cancel();
        return [res.status, res.headers.get("retry-after")] as [number, string | null];
      });
      ms = performance.now() - t0;
      return `${total} sign-ins from ${total} addresses, 100 at a time, ${perSecond(total, ms)}: ` +
        tally(answers.map(([s]) => s));
    });
    // Passwords hashed: at most the global budget of failures; everyone else turned away.
    assert.ok(answers.filter(([s]) => s === 401).length <= 10);
    for (const [status, retryAfter] of answers.filter(([s]) => s !== 401)) {
      assert.equal(status, 429);
      assert.ok(Number(retryAfter) > 0);
    }
    // Admin API keys keep working while sign-ins wait out the minute.
    const agents = await fetch(`${target.url}/api/agents`, {
      headers: { authorization: `Bearer ${key}` },
    });
    assert.equal(agents.status, 200);
    await agents.body?.cancel();
  } finally {
    await target.close();
  }
});

Deno.test("abuse - idle connections beyond the descriptor limit and slowloris heads, under ulimit -n 256", async () => {
  const target = await startTarget({}, { openFiles: 256 });
  const conns = new Set<Deno.Conn>();
  let opened = 0;
  let closedByCoordinator = 0;
  let dripping = true;
  try {
    await underAttack(target, "idle and slow connections", async () => {
      // Each connection is held until the coordinator closes it: a read pending on it says when.
      const hold = (conn: Deno.Conn) => {
        conns.add(conn);
        opened++;
        void conn.read(new Uint8Array(1024)).then(() => {}, () => {}).finally(() => {
          if (conns.delete(conn)) {
            closedByCoordinator++;
            try {
              conn.close();
            } catch { /* closed */ }
          }
        });
      };
      // 100 slowloris connections: half a request head, then a byte every 200 ms.
      const slow: Deno.Conn[] = [];
      for (let i = 0; i < 100; i++) {
        const conn = await connect(target.port);
        hold(conn);
        slow.push(conn);
        await send(conn, "GET /api/version HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ");
      }
      const drip = (async () => {
        while (dripping) {
          for (const conn of slow) {
            if (conns.has(conn)) await send(conn, "x").catch(() => {});
          }
          await new Promise((r) => setTimeout(r, 200));
        }
      })();
      // 1,200 idle connections (more than four times the descriptor limit), 50 at a time.
      await pool(1200, 50, async () => hold(await connect(target.port)));
      // Held for two seconds, then a second wave.
      await new Promise((r) => setTimeout(r, 2000));
      await pool(600, 50, async () => hold(await connect(target.port)));
      await new Promise((r) => setTimeout(r, 1000));
      dripping = false;
      await drip;
      return `${opened} connections opened (100 slowloris), ${closedByCoordinator} closed by the ` +
        `coordinator, ${conns.size} still open`;
    });
    assert.doesNotMatch(target.stderr(), /Cannot accept connections/);
  } finally {
    dripping = false;
    for (const c of conns) {
      try {
        c.close();
      } catch { /* closed */ }
    }
    conns.clear();
    await target.close();
  }
});

Deno.test("abuse - 40 bodies declared at 64 MiB with 100 bytes sent: memory stays bounded", async () => {
  const target = await startTarget();
  const conns: Deno.Conn[] = [];
  try {
    const rssBefore = residentMb(target.pid);
    const seen = await underAttack(target, "oversized declared bodies", async () => {
      for (let i = 0; i < 40; i++) {
        const conn = await connect(target.port);
        conns.push(conn);
        await send(
          conn,
          "POST /api/chat HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n" +
            `Content-Length: 67108863\r\n\r\n{"model":"llama3.2","messages":[${" ".repeat(68)}`,
        );
      }
      // The bodies are being read now; held while the harness watches.
      await new Promise((r) => setTimeout(r, 3000));
      return `40 × content-length 67108863 + 100 bytes; RSS ${rssBefore.toFixed(0)} MB before, ` +
        `${residentMb(target.pid).toFixed(0)} MB with 40 pending`;
    });
    // Not even one declared body was allocated: it would be 64 MiB.
    assert.ok(seen.rssPeakMb - rssBefore < 64, `grew by ${seen.rssPeakMb - rssBefore} MB`);
  } finally {
    for (const c of conns) c.close();
    await target.close();
  }
});

Deno.test("abuse - wrong agent tokens at a high rate: limited, heartbeats unaffected", async () => {
  const target = await startTarget({ TRUSTED_PROXIES: "127.0.0.1" });
  try {
    const total = 6000;
    let statuses: number[] = [];
    await underAttack(target, "wrong agent tokens", async () => {
      const t0 = performance.now();
      statuses = await pool(total, 50, async (i) => {
        const res = await fetch(`${target.url}/api/agents`, {
          method: "POST",
          headers: {
            authorization: `Bearer wrong-token-${i}-0123456789`,
            "x-forwarded-for": `198.18.${(i >> 8) & 255}.${i & 255}`,
          },
          body: JSON.stringify({
            machine_name: `guess-${i}`,
            ip_address: "127.0.0.1",
            ollama_port: 9,
            ollama_version: "0.12.6",
          }),
        });
        await res.body?.cancel();
        return res.status;
      });
      const ms = performance.now() - t0;
      return `${total} registrations with wrong tokens, 50 at a time, ${perSecond(total, ms)}: ` +
        tally(statuses);
    });
    // At most the global budget of guesses was checked; the rest were refused with 429.
    assert.ok(statuses.filter((s) => s === 401).length <= 60);
    assert.ok(statuses.every((s) => s === 401 || s === 429), tally(statuses));
  } finally {
    await target.close();
  }
});

Deno.test("abuse - agents named outside Latin-1 serve requests: no 500, names percent-encoded", async () => {
  const target = await startTarget();
  const sim = await spawnSimulator(["--tps", "100000", "--models", "llama3.2"]);
  const names = ["gpu-箱", "a–b", "🦙 box", "100%"];
  try {
    for (const name of names) await registerSim(target.url, name, sim);
    let statuses: number[] = [];
    const served = new Set<string>();
    await underAttack(target, "non-Latin-1 agent names", async () => {
      statuses = await pool(400, 8, async (i) => {
        const res = await fetch(`${target.url}/api/chat`, {
          method: "POST",
          body: JSON.stringify({
            model: "llama3.2",
            messages: [{ role: "user", content: `hello ${i}` }],
            stream: i % 2 === 0,
          }),
        });
        await res.text();
        const agent = res.headers.get("x-coordinator-agent");
        if (agent) served.add(agent);
        return res.status;
      });
      return `400 chats over ${names.length} agents named ${names.join(", ")}: ${tally(statuses)}`;
    });
    assert.deepEqual(new Set(statuses), new Set([200]), tally(statuses));
    // Each header value is plain ASCII and decodes back to an agent's name.
    for (const value of served) {
      assert.match(value, /^[\x20-\x7e]+$/);
      assert.ok(names.includes(decodeURIComponent(value)), value);
    }
    // Fleet-wide answers and a pull aimed at one of them by its encoded name.
    const tags = await fetch(`${target.url}/api/tags`);
    assert.equal(tags.status, 200);
    await tags.body?.cancel();
    const pull = await fetch(`${target.url}/api/pull`, {
      method: "POST",
      headers: { "x-coordinator-agent": encodeURIComponent("gpu-箱") },
      body: JSON.stringify({ model: "phi3", stream: false }),
    });
    assert.equal(pull.status, 200, await pull.text());
    assert.equal(decodeURIComponent(pull.headers.get("x-coordinator-agent")!), "gpu-箱");
  } finally {
    await Promise.all([target.close(), sim.stop()]);
  }
});

Deno.test("abuse - a flood of unauthenticated model operations: events stay bounded", async () => {
  const maxRows = 1000;
  const target = await startTarget({
    EVENT_MAX_ROWS: String(maxRows),
    REQUEST_LOG_MAX_ROWS: String(maxRows),
  });
  const sim = await spawnSimulator(["--tps", "100000", "--models", "llama3.2"]);
  const db = new DatabaseSync(target.dbPath, { readOnly: true });
  const events = () =>
    Number((db.prepare("SELECT COUNT(*) AS n FROM events").get() as { n: number }).n);
  let peak = 0;
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      peak = Math.max(peak, events());
      await new Promise((r) => setTimeout(r, 100));
    }
  })();
  try {
    await registerSim(target.url, "sim", sim, 4, { keepAlive: true });
    const total = 4500;
    let statuses: number[] = [];
    const failures = new Map<string, number>();
    await underAttack(target, "model operations flood", async () => {
      const t0 = performance.now();
      // Models pulled, copied and deleted, each one an event, no sign-in needed. The names go
      // round ten of each (the simulator pulls any name): the agent's model list stays short,
      // so what grows is what each operation leaves behind, not the fleet's model lists.
      statuses = await pool(total, 16, async (i) => {
        const [path, method, body] = [
          ["/api/pull", "POST", { model: `flood-${i % 10}`, stream: false }],
          ["/api/copy", "POST", { source: "llama3.2", destination: `flood-copy-${i % 10}` }],
          ["/api/delete", "DELETE", { model: `flood-copy-${(i + 5) % 10}` }],
        ][i % 3] as [string, string, unknown];
        // Pulls are aimed at the simulator: the watcher is an agent without an Ollama.
        const res = await fetch(`${target.url}${path}`, {
          method,
          headers: { "x-coordinator-agent": "sim" },
          body: JSON.stringify(body),
        });
        const text = await res.text();
        if (res.status >= 500) {
          const key = `${path} ${res.status} ${text.slice(0, 200)}`;
          failures.set(key, (failures.get(key) ?? 0) + 1);
        }
        return res.status;
      });
      const ms = performance.now() - t0;
      return `${total} pulls, copies and deletes, 16 at a time, ${perSecond(total, ms)}: ` +
        tally(statuses);
    });
    // Retention caught up with the volume: the table is back within a tenth of its limit.
    let rows = events();
    for (let i = 0; i < 100 && rows > maxRows * 1.1; i++) {
      await new Promise((r) => setTimeout(r, 100));
      rows = events();
    }
    sampling = false;
    await sampler;
    console.log(
      `abuse: model operations flood: events peaked at ${peak}, ${rows} after (limit ${maxRows})`,
    );
    assert.deepEqual([...failures], []);
    // Retention follows the volume: a prune after every hundred rows (a tenth of the limit),
    // looked at ten times a second, so the peak does not depend on how fast this machine floods.
    assert.ok(peak <= 2 * maxRows, `the events table reached ${peak} rows`);
    assert.ok(rows <= maxRows * 1.1, `${rows} events were left`);
  } finally {
    sampling = false;
    await sampler;
    db.close();
    await Promise.all([target.close(), sim.stop()]);
  }
});
