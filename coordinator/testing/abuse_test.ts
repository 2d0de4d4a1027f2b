/**
 * The abuse suite: attacks on a real coordinator process, each with the coordinator's
 * responsiveness measured throughout (a `/api/version` probe and a heartbeating agent) and its
 * data checked afterwards. Loopback only; every attack is bounded in time and count.
 */
import assert from "node:assert/strict";
import { adminCookie, pool, registerSim, spawnCoordinator, spawnSimulator } from "./process.ts";
import {
  describeResponsiveness,
  fillDisk,
  residentMb,
  smallDisk,
  watchResponsiveness,
} from "./abuse.ts";

/** The probe's bound under every attack (issue "Stays up whatever arrives"). */
const PROBE_MAX_MS = 200;

Deno.test("abuse - a full disk: inference goes on, changes answer 503 and change nothing, the log catches up", async () => {
  const disk = await smallDisk("4m");
  if (!disk) {
    console.log("abuse: disk-full attack skipped: this machine cannot mount a tmpfs (run as root)");
    return;
  }
  const sim = await spawnSimulator(["--tps", "100000", "--models", "llama3.2"]);
  const coordinator = await spawnCoordinator({ DATABASE_URL: `sqlite://${disk.dir}/c.db` });
  try {
    const agentId = await registerSim(coordinator.url, "sim", sim);
    const cookie = await adminCookie(coordinator.url);
    const csrf = (await (await fetch(`${coordinator.url}/api/admin/session`, {
      headers: { cookie },
    })).json()).csrf;
    const watch = await watchResponsiveness(coordinator.url);
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
    assert.deepEqual(new Set(statuses), new Set([200]));
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
    const rss = residentMb(coordinator.process.pid);
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
    await Promise.all([coordinator.stop(), sim.stop()]);
    await disk.unmount();
  }
});
