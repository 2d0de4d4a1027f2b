/**
 * A throwaway PostgreSQL for tests: `initdb` into a temporary folder, `postgres` on a free
 * loopback port, gone when the test (or the whole test process) ends.
 *
 * Tests run as root and PostgreSQL refuses to run as root, so the server runs as the `postgres`
 * system user. It is started with a parent-death signal (`setpriv --pdeathsig KILL`) so a test
 * process that crashes or is SIGKILLed takes its servers with it; folders such a process left
 * behind are removed by the next start.
 */

const PREFIX = "oc_pg_";
const DEBIAN_BIN = "/usr/lib/postgresql/15/bin";
const READY_TIMEOUT_MS = 30_000;
const STOP_GRACE_MS = 5_000;

/** The role and database every server has; its password is sent over TCP (scram-sha-256). */
export const TEST_PG_USER = "coordinator";
/** Password of {@linkcode TEST_PG_USER} and of the `postgres` superuser. */
export const TEST_PG_PASSWORD = "test-password";

/** A running throwaway PostgreSQL. */
export interface TestPostgres {
  /** `postgres://coordinator:…@127.0.0.1:PORT/coordinator` (a password user, not a superuser). */
  url: string;
  /** The same server as the `postgres` superuser (database `postgres`). */
  adminUrl: string;
  port: number;
  /** The temporary folder: `data/`, `server.log`, the unix socket. */
  dir: string;
  /** The postmaster's PID, or undefined while the server is down. */
  readonly pid: number | undefined;
  /** Ends the server (immediate shutdown, SIGKILL after 5 s) and removes the folder. Idempotent. */
  stop(): Promise<void>;
  /** Fast shutdown (clients get 57P01 "terminating connection due to administrator command"), then start on the same folder and port. */
  restart(): Promise<void>;
  /** Fast shutdown that keeps the folder, so `start()` can bring the same data back. */
  shutdown(): Promise<void>;
  /** A crash: SIGKILL to the postmaster and every backend; `start()` runs crash recovery. */
  kill(): Promise<void>;
  /** Starts the server again after `shutdown()` or `kill()`, on the same port. */
  start(): Promise<void>;
  /** SIGSTOP to the server and its backends: connections and queries hang instead of failing. */
  pause(): void;
  /** SIGCONT after `pause()`. */
  resume(): void;
  /** Creates a database owned by the test user and returns its URL (a clean slate per test). */
  createDatabase(name: string): Promise<string>;
  /** Runs SQL through `psql` as the superuser; returns its unaligned, tuples-only output. */
  psql(sql: string): Promise<string>;
}

interface Binaries {
  dir: string;
  /** Set when we are root: the uid/gid the server runs as. */
  user?: { name: string; uid: number; gid: number };
}

let binariesCache: Binaries | string | undefined;

function isFile(path: string): boolean {
  try {
    return Deno.statSync(path).isFile;
  } catch {
    return false;
  }
}

function hasServer(dir: string | undefined): dir is string {
  return !!dir && ["postgres", "initdb", "psql"].every((b) => isFile(`${dir}/${b}`));
}

function pgConfigBinDir(): string | undefined {
  try {
    const out = new Deno.Command("pg_config", { args: ["--bindir"], stderr: "null" }).outputSync();
    return out.success ? new TextDecoder().decode(out.stdout).trim() : undefined;
  } catch {
    return undefined;
  }
}

/** Other major versions of Debian's packages, newest first. */
function debianBinDirs(): string[] {
  try {
    return [...Deno.readDirSync("/usr/lib/postgresql")].map((e) => e.name)
      .filter((name) => /^\d+$/.test(name)).sort((a, b) => Number(b) - Number(a))
      .map((v) => `/usr/lib/postgresql/${v}/bin`);
  } catch {
    return [];
  }
}

function systemUser(name: string): { name: string; uid: number; gid: number } | undefined {
  try {
    for (const line of Deno.readTextFileSync("/etc/passwd").split("\n")) {
      const [user, , uid, gid] = line.split(":");
      if (user === name) return { name, uid: Number(uid), gid: Number(gid) };
    }
  } catch { /* no passwd file */ }
  return undefined;
}

/** The binaries and the user to run them as, or why PostgreSQL cannot be started here. */
function findBinaries(): Binaries | string {
  if (binariesCache !== undefined) return binariesCache;
  const chosen = Deno.env.get("POSTGRES_BIN_DIR");
  const path = (Deno.env.get("PATH") ?? "").split(":");
  const candidates = chosen
    ? [chosen]
    : [DEBIAN_BIN, ...debianBinDirs(), pgConfigBinDir(), ...path];
  const dir = candidates.find(hasServer);
  if (!dir) {
    return binariesCache = chosen
      ? `no postgres, initdb and psql in POSTGRES_BIN_DIR=${chosen}`
      : `no postgres, initdb and psql in ${DEBIAN_BIN}, pg_config --bindir or PATH`;
  }
  if (!isFile("/usr/bin/setpriv") && !isFile("/bin/setpriv")) {
    return binariesCache = "setpriv (util-linux) is missing";
  }
  if (Deno.uid() !== 0) return binariesCache = { dir };
  const user = systemUser("postgres");
  return binariesCache = user
    ? { dir, user }
    : "the tests run as root and there is no postgres system user";
}

/**
 * Whether a PostgreSQL server can be started here: the binaries in `POSTGRES_BIN_DIR` if set,
 * else /usr/lib/postgresql/15/bin, `pg_config --bindir` or PATH, and (when running as root) a
 * `postgres` system user.
 */
export function postgresAvailable(): boolean {
  return typeof findBinaries() !== "string";
}

// Each test file gets its own module instance, so "printed already" lives in the environment.
const SKIP_NOTICE_ENV = "OC_POSTGRES_SKIP_NOTICE_PRINTED";

/**
 * Decides whether PostgreSQL tests run. Missing PostgreSQL prints one line once per process and
 * returns false, so test files pass `ignore: !postgresTestsEnabled()`; with `REQUIRE_POSTGRES=1`
 * (set by `.ci/run`) it throws instead, so a missing install step fails CI loudly.
 */
export function postgresTestsEnabled(): boolean {
  const found = findBinaries();
  if (typeof found !== "string") return true;
  if (Deno.env.get("REQUIRE_POSTGRES") === "1") {
    throw new Error(`Cannot run PostgreSQL tests: ${found} and REQUIRE_POSTGRES=1 is set`);
  }
  if (!Deno.env.get(SKIP_NOTICE_ENV)) {
    Deno.env.set(SKIP_NOTICE_ENV, "1");
    console.error(
      `PostgreSQL tests skipped: install the Debian package postgresql (${found})`,
    );
  }
  return false;
}

function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

function alive(pid: number): boolean {
  try {
    // A zombie has exited; only its parent has not collected it yet.
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    return stat.slice(stat.lastIndexOf(")") + 2)[0] !== "Z";
  } catch {
    return false;
  }
}

/** PIDs whose parent is `pid` (a postmaster's backends and auxiliary processes). */
function childrenOf(pid: number): number[] {
  const found: number[] = [];
  for (const entry of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    try {
      const stat = Deno.readTextFileSync(`/proc/${entry.name}/stat`);
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      if (ppid === pid) found.push(Number(entry.name));
    } catch { /* exited while we looked */ }
  }
  return found;
}

function signal(pid: number, sig: Deno.Signal): void {
  try {
    Deno.kill(pid, sig);
  } catch { /* already gone */ }
}

async function until(done: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!done()) {
    if (Date.now() > deadline) throw new Error(`Cannot ${what} within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Runs a command as the server's user; throws with its output when it fails. */
async function run(bin: Binaries, cmd: string, args: string[], stdin?: string): Promise<string> {
  const argv = bin.user ? ["-u", bin.user.name, "--", cmd, ...args] : args;
  const child = new Deno.Command(bin.user ? "runuser" : cmd, {
    args: argv,
    stdin: stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (stdin !== undefined) {
    const writer = child.stdin.getWriter();
    await writer.write(new TextEncoder().encode(stdin));
    await writer.close();
  }
  const out = await child.output();
  const text = new TextDecoder().decode(out.stdout);
  if (!out.success) {
    const err = new TextDecoder().decode(out.stderr);
    throw new Error(`Cannot run ${cmd.split("/").pop()}: ${(err || text).trim()}`);
  }
  return text;
}

function chownTree(bin: Binaries, path: string): void {
  if (bin.user) Deno.chownSync(path, bin.user.uid, bin.user.gid);
}

/** Removes folders of earlier test processes that died before cleaning up. */
function removeStaleFolders(): void {
  const tmp = tmpRoot();
  let entries: Deno.DirEntry[];
  try {
    entries = [...Deno.readDirSync(tmp)];
  } catch {
    return;
  }
  for (const entry of entries) {
    const m = entry.name.match(new RegExp(`^${PREFIX}(\\d+)_`));
    if (!m || Number(m[1]) === Deno.pid || alive(Number(m[1]))) continue;
    const dir = `${tmp}/${entry.name}`;
    const postmaster = readPostmasterPid(`${dir}/data`);
    if (postmaster && alive(postmaster)) continue; // not ours to end; leave it
    try {
      Deno.removeSync(dir, { recursive: true });
    } catch { /* another process is removing it */ }
  }
}

function readPostmasterPid(data: string): number | undefined {
  try {
    const pid = Number(Deno.readTextFileSync(`${data}/postmaster.pid`).split("\n")[0]);
    return pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

/**
 * `postmaster.pid` names the server's PID on line 1 and reads "ready" on line 8 once it accepts
 * connections (pg_ctl waits on it too). After a crash the file is stale, hence the PID check.
 */
function postmasterReady(data: string, pid: number): boolean {
  try {
    const lines = Deno.readTextFileSync(`${data}/postmaster.pid`).split("\n");
    return Number(lines[0]) === pid && lines[7]?.trim() === "ready";
  } catch {
    return false;
  }
}

function tmpRoot(): string {
  return Deno.env.get("TMPDIR") || "/tmp";
}

function tempDir(bin: Binaries, suffix: string): string {
  const dir = Deno.makeTempDirSync({ dir: tmpRoot(), prefix: `${PREFIX}${Deno.pid}_${suffix}` });
  chownTree(bin, dir);
  return dir;
}

let template: Promise<string> | undefined;

/**
 * The data folder every server starts from as a copy. `initdb` takes one to three seconds, so it
 * runs once per machine and PostgreSQL build: the result is kept in the temp folder under a name
 * derived from the binary, built elsewhere and renamed into place so concurrent test processes
 * never see half of it. The test role, its database and the superuser's password are made in
 * single-user mode, so no server has to run for it.
 */
function templateData(bin: Binaries): Promise<string> {
  template ??= (async () => {
    const server = Deno.statSync(`${bin.dir}/postgres`);
    const data = (dir: string) => `${dir}/data`;
    const initdb = [
      "-U",
      "postgres",
      "--auth-local=trust",
      "--auth-host=scram-sha-256",
      "--no-sync",
      "--encoding=UTF8",
      "--locale=C",
      // 1 MiB WAL segments instead of 16: a third less to copy for every server.
      "--wal-segsize=1",
    ];
    const key = [bin.dir, server.size, server.mtime?.getTime(), bin.user?.uid, ...initdb].join();
    const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(key));
    const hex = [...new Uint8Array(digest).slice(0, 6)].map((b) => b.toString(16).padStart(2, "0"))
      .join("");
    const final = `${tmpRoot()}/${PREFIX}template_${hex}`;
    if (isFile(`${data(final)}/PG_VERSION`)) return data(final);

    const build = tempDir(bin, "build_");
    try {
      await run(bin, `${bin.dir}/initdb`, ["-D", data(build), ...initdb]);
      const q = TEST_PG_PASSWORD.replaceAll("'", "''");
      await run(
        bin,
        `${bin.dir}/postgres`,
        ["--single", "-D", data(build), "-F", "postgres"],
        [
          `ALTER ROLE postgres PASSWORD '${q}';`,
          `CREATE ROLE ${TEST_PG_USER} LOGIN PASSWORD '${q}';`,
          `CREATE DATABASE ${TEST_PG_USER} OWNER ${TEST_PG_USER};`,
          "",
        ].join("\n"),
      );
      try {
        Deno.renameSync(build, final);
      } catch (e) {
        // Another test process finished first; its template is as good as ours.
        if (!isFile(`${data(final)}/PG_VERSION`)) throw e;
      }
    } finally {
      await Deno.remove(build, { recursive: true }).catch(() => {});
    }
    return data(final);
  })();
  // A failed attempt may succeed later (a concurrent process removed a folder, say).
  template.catch(() => template = undefined);
  return template;
}

/** Options of {@linkcode startPostgres}. */
export interface StartOptions {
  /** The port to try first; when it is taken, a free one is used instead. */
  port?: number;
}

/**
 * Starts a throwaway PostgreSQL (15 on our machines) on a free loopback port and waits until it
 * accepts connections. Durability is off (`fsync`, `synchronous_commit`, `full_page_writes`):
 * crash recovery after `kill()` still works, but an OS crash would lose data, which a test
 * does not care about.
 */
export async function startPostgres(options: StartOptions = {}): Promise<TestPostgres> {
  const found = findBinaries();
  if (typeof found === "string") throw new Error(`Cannot start PostgreSQL: ${found}`);
  const bin: Binaries = found;
  removeStaleFolders();
  const source = await templateData(bin);
  const dir = tempDir(bin, "");
  const data = `${dir}/data`;
  const copy = await new Deno.Command("cp", { args: ["-a", source, data], stderr: "piped" })
    .output();
  if (!copy.success) {
    throw new Error(
      `Cannot copy the PostgreSQL template: ${new TextDecoder().decode(copy.stderr)}`,
    );
  }
  let port = options.port ?? freePort();
  const log = `${dir}/server.log`;
  let child: Deno.ChildProcess | undefined;
  let exited: Promise<Deno.CommandStatus> | undefined;
  let stopped = false;

  const onUnload = () => {
    if (child) signal(child.pid, "SIGKILL");
    try {
      Deno.removeSync(dir, { recursive: true });
    } catch { /* already gone */ }
  };
  globalThis.addEventListener("unload", onUnload);

  async function start(): Promise<void> {
    if (stopped) throw new Error("Cannot start PostgreSQL: it was stopped and its folder removed");
    if (child) return;
    const server = [
      `${bin.dir}/postgres`,
      "-D",
      data,
      "-p",
      String(port),
      "-c",
      "listen_addresses=127.0.0.1",
      "-c",
      `unix_socket_directories=${dir}`,
      "-c",
      "fsync=off",
      "-c",
      "synchronous_commit=off",
      "-c",
      "full_page_writes=off",
    ];
    // exec keeps the PID and the parent-death signal, and sends the log to a file rather than
    // a pipe this process would have to keep reading.
    const shell = ["/bin/sh", "-c", `exec "$0" "$@" 2>>'${log}' >&2`, ...server];
    const ids = bin.user
      ? [`--reuid=${bin.user.uid}`, `--regid=${bin.user.gid}`, "--init-groups"]
      : [];
    const proc = new Deno.Command("setpriv", {
      args: [...ids, "--pdeathsig", "KILL", "--", ...shell],
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).spawn();
    // The server is a fixture; it must not keep a test process alive on its own.
    proc.unref();
    child = proc;
    let gone = false;
    exited = proc.status.then((s) => {
      gone = true;
      return s;
    });
    try {
      await until(
        () => gone || postmasterReady(data, proc.pid),
        READY_TIMEOUT_MS,
        "start PostgreSQL",
      );
    } catch (e) {
      signal(proc.pid, "SIGKILL");
      throw e;
    }
    if (gone) {
      child = undefined;
      throw new Error(`Cannot start PostgreSQL: it exited\n${tail(log)}`);
    }
  }

  /** Sends `sig` and waits for the postmaster to exit, SIGKILL after the grace period. */
  async function down(sig: Deno.Signal): Promise<void> {
    const proc = child;
    if (!proc) return;
    const backends = childrenOf(proc.pid);
    // A paused server would only see the signal once continued.
    for (const pid of [proc.pid, ...backends]) signal(pid, "SIGCONT");
    signal(proc.pid, sig);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timedOut = await Promise.race([
      exited!.then(() => false),
      new Promise<boolean>((r) => timer = setTimeout(() => r(true), STOP_GRACE_MS)),
    ]);
    clearTimeout(timer);
    if (timedOut) {
      for (const pid of [proc.pid, ...childrenOf(proc.pid)]) signal(pid, "SIGKILL");
      await exited;
    }
    // Backends still attached to the shared memory would stop the next start.
    for (const pid of backends) if (timedOut || sig === "SIGKILL") signal(pid, "SIGKILL");
    await until(
      () => backends.every((pid) => !alive(pid)),
      STOP_GRACE_MS,
      "end PostgreSQL backends",
    );
    child = undefined;
  }

  for (let attempt = 1;; attempt++) {
    try {
      await start();
      break;
    } catch (e) {
      // Another process may take the free port before the server binds it.
      const taken = /already in use/.test(tail(log));
      if (taken && attempt < 3) {
        port = freePort();
        continue;
      }
      onUnload();
      globalThis.removeEventListener("unload", onUnload);
      throw e;
    }
  }
  const host = `127.0.0.1:${port}`;
  const pg: TestPostgres = {
    url: `postgres://${TEST_PG_USER}:${TEST_PG_PASSWORD}@${host}/${TEST_PG_USER}`,
    adminUrl: `postgres://postgres:${TEST_PG_PASSWORD}@${host}/postgres`,
    port,
    dir,
    get pid() {
      return child?.pid;
    },
    async stop() {
      if (stopped) return;
      await down("SIGQUIT");
      stopped = true;
      globalThis.removeEventListener("unload", onUnload);
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
    async restart() {
      await down("SIGINT");
      await start();
    },
    shutdown: () => down("SIGINT"),
    async kill() {
      const proc = child;
      if (!proc) return;
      // Stop everyone first so no backend notices the postmaster's death and exits cleanly.
      for (const pid of [proc.pid, ...childrenOf(proc.pid)]) signal(pid, "SIGSTOP");
      for (const pid of childrenOf(proc.pid)) signal(pid, "SIGKILL");
      await down("SIGKILL");
    },
    start,
    pause() {
      if (child) {
        for (const pid of [child.pid, ...childrenOf(child.pid)]) {
          signal(pid, "SIGSTOP");
        }
      }
    },
    resume() {
      if (child) {
        for (const pid of [child.pid, ...childrenOf(child.pid)]) {
          signal(pid, "SIGCONT");
        }
      }
    },
    async createDatabase(name: string) {
      if (!/^[a-z_][a-z0-9_]*$/.test(name)) {
        throw new RangeError(`Cannot create database "${name}": use lower-case letters, digits, _`);
      }
      await pg.psql(`CREATE DATABASE ${name} OWNER ${TEST_PG_USER}`);
      return `postgres://${TEST_PG_USER}:${TEST_PG_PASSWORD}@${host}/${name}`;
    },
    psql(sql: string) {
      return run(bin, `${bin.dir}/psql`, [
        "-h",
        dir,
        "-p",
        String(port),
        "-U",
        "postgres",
        "-d",
        "postgres",
        "-X",
        "-q",
        "-A",
        "-t",
        "-v",
        "ON_ERROR_STOP=1",
        "-c",
        sql,
      ]).then((s) => s.trim());
    },
  };
  return pg;
}

function tail(path: string, lines = 20): string {
  try {
    return Deno.readTextFileSync(path).trimEnd().split("\n").slice(-lines).join("\n");
  } catch {
    return "(no server log)";
  }
}
