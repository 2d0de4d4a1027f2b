/**
 * Operations over real processes: what the coordinator writes with `LOG_FORMAT=json`, and a
 * backup restored into a stopped coordinator's place.
 */
import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { TEST_ADMIN_PASSWORD } from "../config.ts";
import { LEVELS } from "../telemetry/logger.ts";
import {
  adminCookie,
  freePort,
  registerSim,
  spawnCoordinator,
  spawnSimulator,
  waitUntilUp,
} from "./process.ts";

const ROOT = new URL("../../", import.meta.url);

/** Collects a stream's lines as they arrive; `done` resolves when the stream ends. */
function lines(stream: ReadableStream<Uint8Array>) {
  const all: string[] = [];
  const done = (async () => {
    const decoder = new TextDecoder();
    let rest = "";
    for await (const chunk of stream) {
      const parts = (rest + decoder.decode(chunk, { stream: true })).split("\n");
      rest = parts.pop()!;
      all.push(...parts);
    }
    if (rest) all.push(rest);
  })();
  return { all, done };
}

async function until<T>(what: string, probe: () => T | undefined, timeoutMs = 15_000) {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const found = probe();
    if (found !== undefined) return found;
    if (Date.now() > end) throw new Error(`Cannot see ${what} within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Runs `deno run -A <args>` from the repository root, returning exit code and output. */
async function run(args: string[], env: Record<string, string> = {}) {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", ...args],
    cwd: ROOT,
    env,
    stdin: "null",
  }).output();
  const decode = (b: Uint8Array) => new TextDecoder().decode(b);
  return { code: out.code, stdout: decode(out.stdout), stderr: decode(out.stderr) };
}

Deno.test("ops - with LOG_FORMAT=json every line the coordinator writes is a JSON object", async () => {
  const dir = await Deno.makeTempDir();
  const sim = await spawnSimulator(["--tps", "2000", "--models", "llama3.2"]);
  const port = freePort();
  // A fresh database and no secrets given: the first start generates and shows them.
  const process = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "coordinator/main.ts"],
    cwd: ROOT,
    env: {
      COORDINATOR_HOST: "127.0.0.1",
      COORDINATOR_PORT: String(port),
      DATABASE_URL: `sqlite://${dir}/c.db`,
      AUTO_REGISTER_LOCAL_OLLAMA: "false",
      AGENT_TOKEN: "",
      ADMIN_PASSWORD: "",
      LOG_FORMAT: "json",
      LOG_LEVEL: "info",
    },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const stdout = lines(process.stdout);
  const stderr = lines(process.stderr);
  try {
    const url = `http://127.0.0.1:${port}`;
    await waitUntilUp(url);
    const secrets = await until("the first-start secrets", () => {
      const line = stdout.all.find((l) => l.includes("agent_token"));
      return line === undefined ? undefined : JSON.parse(line);
    });
    // The secrets are readable from the JSON line, and they work.
    assert.match(secrets.agent_token, /^oca_/);
    assert.ok(secrets.agent_command.includes(`AGENT_TOKEN=${secrets.agent_token}`));
    assert.notEqual(secrets.admin_password, TEST_ADMIN_PASSWORD);
    const tags = await (await fetch(`${sim.url}/api/tags`)).json();
    const registered = await fetch(`${url}/api/agents`, {
      method: "POST",
      headers: {
        "content-type": "application/json",
        authorization: `Bearer ${secrets.agent_token}`,
      },
      body: JSON.stringify({
        machine_name: "sim",
        ip_address: "127.0.0.1",
        ollama_port: sim.port,
        ollama_version: "0.12.6",
        models: tags.models,
      }),
    });
    assert.equal(registered.status, 201, await registered.text());
    const login = await fetch(`${url}/login`, {
      method: "POST",
      body: new URLSearchParams({ password: secrets.admin_password }),
      redirect: "manual",
    });
    await login.body?.cancel();
    assert.equal(login.status, 303);
    const res = await fetch(`${url}/api/generate`, {
      method: "POST",
      body: JSON.stringify({ model: "llama3.2", prompt: "hi", stream: false }),
    });
    assert.equal((await res.json()).done, true);
    await until("the request's log line", () => stdout.all.find((l) => l.includes('"request"')));
    process.kill("SIGTERM");
    assert.equal((await process.status).code, 0);
    await Promise.all([stdout.done, stderr.done]);

    const entries = [...stdout.all, ...stderr.all].map((line) => {
      let entry;
      try {
        entry = JSON.parse(line);
      } catch {
        assert.fail(`Not a JSON line: ${line}`);
      }
      assert.equal(typeof entry.time, "string", line);
      assert.ok(LEVELS.includes(entry.level), line);
      assert.equal(typeof entry.msg, "string", line);
      return entry;
    });
    const messages = entries.map((e) => e.msg);
    assert.equal(messages[0], "Ollama Coordinator listening");
    assert.equal(entries[0].address, url);
    assert.equal(entries[0].database, `sqlite://${dir}/c.db`);
    for (
      const msg of [
        "First start: these secrets are shown once and stored only as hashes",
        "request",
        "Stopping: finishing in-flight requests",
        "Stopped",
      ]
    ) assert.ok(messages.includes(msg), `no "${msg}" line in ${JSON.stringify(messages)}`);
    assert.equal(entries.find((e) => e.msg === "request").route, "/api/generate");
    assert.equal(entries.find((e) => e.msg === "Stopped").signal, "SIGTERM");
  } finally {
    try {
      process.kill("SIGKILL");
    } catch { /* already gone */ }
    await process.status;
    await Promise.all([stdout.done, stderr.done]);
    await sim.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("ops - a first start with no Ollama says where it looked and what to do next", async () => {
  const dir = await Deno.makeTempDir();
  const port = freePort();
  const ollama = `http://127.0.0.1:${freePort()}`;
  const process = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "coordinator/main.ts"],
    cwd: ROOT,
    env: {
      COORDINATOR_HOST: "127.0.0.1",
      COORDINATOR_PORT: String(port),
      DATABASE_URL: `sqlite://${dir}/c.db`,
      LOCAL_OLLAMA_URL: ollama,
      AGENT_TOKEN: "",
      ADMIN_PASSWORD: "",
    },
    stdin: "null",
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const stdout = lines(process.stdout);
  try {
    await until("the next steps", () => stdout.all.find((l) => l.includes("deno task simulator")));
    const text = stdout.all.join("\n");
    assert.match(text, /\(database sqlite:\/\/.*, 0 agents known\)/);
    assert.ok(
      text.includes(
        `No local Ollama answered at ${ollama} (LOCAL_OLLAMA_URL), and no agents are known yet. Next:`,
      ),
      text,
    );
    assert.match(text, /start an agent: the command printed above/);
    assert.match(text, /`deno task demo`/);
    // The command it refers to is there, above.
    assert.ok(text.indexOf("deno task agent") < text.indexOf("No local Ollama answered"));
  } finally {
    process.kill("SIGKILL");
    await process.status;
    await stdout.done;
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("ops - a stop signal during start-up waits for the start, then stops cleanly", async () => {
  // A "local Ollama" that accepts connections and never answers holds the start up.
  const hanging = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const held: Deno.Conn[] = [];
  const accepted = Promise.withResolvers<void>();
  let open = true;
  const closeHanging = () => {
    if (!open) return;
    open = false;
    hanging.close();
    for (const c of held) c.close();
  };
  const accepting = (async () => {
    for await (const conn of hanging) {
      held.push(conn);
      accepted.resolve();
    }
  })();
  const process = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "coordinator/main.ts"],
    cwd: ROOT,
    env: {
      COORDINATOR_HOST: "127.0.0.1",
      COORDINATOR_PORT: String(freePort()),
      DATABASE_URL: "sqlite::memory:",
      LOCAL_OLLAMA_URL: `http://127.0.0.1:${(hanging.addr as Deno.NetAddr).port}`,
      AGENT_TOKEN: "a-test-agent-token-0123456789",
      ADMIN_PASSWORD: "a-test-password",
    },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const stdout = lines(process.stdout);
  const stderr = lines(process.stderr);
  try {
    // The coordinator is looking for the local Ollama: it is still starting.
    await accepted.promise;
    assert.ok(!stdout.all.some((l) => l.includes("listening")));
    process.kill("SIGTERM");
    await Promise.race([
      until("the stop", () => stdout.all.find((l) => l.startsWith("SIGTERM received"))),
      process.status, // killed by the signal
    ]);
    // Let the start go on: nothing answers there any more.
    closeHanging();
    const status = await process.status;
    await Promise.all([stdout.done, stderr.done]);
    assert.equal(status.signal, null, "killed by the signal instead of stopping");
    assert.equal(status.code, 0, stderr.all.join("\n"));
  } finally {
    try {
      process.kill("SIGKILL");
    } catch { /* already gone */ }
    await process.status;
    closeHanging();
    await accepting.catch(() => {});
  }
});

Deno.test("ops - a bad setting stops start-up with one line, JSON with LOG_FORMAT=json", async () => {
  const json = await run(["coordinator/main.ts", "--shutdown-timeout", "soon"], {
    LOG_FORMAT: "json",
  });
  assert.equal(json.code, 2);
  assert.equal(json.stdout, "");
  const [line, ...more] = json.stderr.trim().split("\n");
  assert.deepEqual(more, []);
  const entry = JSON.parse(line);
  assert.equal(entry.level, "error");
  assert.match(entry.msg, /^Invalid setting --shutdown-timeout="soon": /);
  // Text mode is unchanged: the message alone.
  const text = await run(["coordinator/main.ts", "--log-format", "text"], {
    SHUTDOWN_TIMEOUT: "soon",
  });
  assert.equal(text.code, 2);
  assert.match(text.stderr, /^Invalid setting SHUTDOWN_TIMEOUT="soon": [^\n]+\n$/);
});

Deno.test("ops - a backup restored into a stopped coordinator's place brings its data back", async () => {
  const dir = await Deno.makeTempDir();
  const env = { DATABASE_URL: `sqlite://${dir}/c.db` };
  const sim = await spawnSimulator(["--tps", "2000", "--models", "llama3.2"]);
  let coordinator = await spawnCoordinator(env);
  try {
    const agentId = await registerSim(coordinator.url, "sim", sim);
    // An admin key for the calls below, made from a signed-in session.
    const cookie = await adminCookie(coordinator.url);
    const { csrf } = await (await fetch(`${coordinator.url}/api/admin/session`, {
      headers: { cookie },
    })).json();
    const admin = await (await fetch(`${coordinator.url}/api/keys`, {
      method: "POST",
      headers: { cookie, "x-csrf-token": csrf, "content-type": "application/json" },
      body: JSON.stringify({ name: "ops", scope: "admin" }),
    })).json();
    const call = async (path: string, init: RequestInit = {}) => {
      const res = await fetch(`${coordinator.url}${path}`, {
        ...init,
        headers: { "content-type": "application/json", authorization: `Bearer ${admin.key}` },
      });
      return { status: res.status, body: res.status === 204 ? null : await res.json() };
    };
    const newKey = async (name: string) =>
      (await call("/api/keys", { method: "POST", body: JSON.stringify({ name }) })).body.key;
    const generate = async (key: string) => {
      const res = await fetch(`${coordinator.url}/api/generate`, {
        method: "POST",
        headers: { authorization: `Bearer ${key}` },
        body: JSON.stringify({ model: "llama3.2", prompt: "hi", stream: false }),
      });
      await res.body?.cancel();
      return { status: res.status, id: res.headers.get("x-request-id")! };
    };
    const requestIds = async () =>
      new Set(((await call("/api/requests?limit=1000")).body as { id: string }[]).map((r) => r.id));

    const laptop = await newKey("laptop");
    const before: string[] = [];
    for (let i = 0; i < 3; i++) {
      const r = await generate(laptop);
      assert.equal(r.status, 200);
      before.push(r.id);
    }
    assert.equal((await requestIds()).size, 3); // also flushes the request log

    const backup = `${dir}/backup.db`;
    const made = await run(["scripts/backup.ts", "--out", backup], env);
    assert.equal(made.code, 0, made.stderr);

    // Life goes on after the backup: another key, more requests, the agent removed.
    const phone = await newKey("phone");
    const after = [(await generate(phone)).id, (await generate(laptop)).id];
    assert.equal((await call(`/api/agents/${agentId}`, { method: "DELETE" })).status, 204);
    assert.equal((await requestIds()).size, 5);

    // Refused while the coordinator runs, and nothing is touched.
    const refused = await run(["scripts/restore.ts", backup], env);
    assert.equal(refused.code, 1);
    assert.equal(
      refused.stderr.trim(),
      `Cannot restore into "${dir}/c.db": the database is in use (stop the coordinator first)`,
    );
    assert.deepEqual((await call("/api/agents")).body, []);

    // Stopped hard, so its write-ahead log is left beside the database.
    coordinator.kill("SIGKILL");
    await coordinator.process.status;
    assert.ok((await Deno.stat(`${dir}/c.db-wal`)).isFile);
    const restored = await run(["scripts/restore.ts", backup], env);
    assert.equal(restored.code, 0, restored.stderr);
    const kept = /kept as (\S+)$/.exec(restored.stdout.trim())?.[1];
    assert.ok(kept?.startsWith(`${dir}/c.db.before-restore-`), restored.stdout);
    const files = [];
    for await (const e of Deno.readDir(dir)) files.push(e.name);
    assert.deepEqual(files.sort(), ["backup.db", "c.db", kept!.slice(dir.length + 1)]);
    // The replaced database is whole, its log folded in: the later requests are there.
    const old = new DatabaseSync(kept!, { readOnly: true });
    assert.equal(old.prepare("PRAGMA integrity_check").get()?.integrity_check, "ok");
    assert.equal(old.prepare("SELECT COUNT(*) AS n FROM requests").get()?.n, 5);
    old.close();

    coordinator = await spawnCoordinator(env, coordinator.port);
    const agents = (await call("/api/agents")).body as { id: string }[];
    assert.deepEqual(agents.map((a) => a.id), [agentId]);
    const keys = (await call("/api/keys")).body as { name: string; revoked_at: string | null }[];
    assert.deepEqual(keys.map((k) => k.name).sort(), ["laptop", "ops"]);
    const ids = await requestIds();
    assert.deepEqual(before.filter((id) => !ids.has(id)), []);
    assert.deepEqual(after.filter((id) => ids.has(id)), []);
    // The key made after the backup is gone; the one before it still opens the door.
    assert.equal((await generate(phone)).status, 401);
    assert.notEqual((await generate(laptop)).status, 401);
  } finally {
    await Promise.all([sim.stop(), coordinator.stop()]);
    await Deno.remove(dir, { recursive: true });
  }
});
