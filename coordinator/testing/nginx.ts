/**
 * nginx in front of coordinators (or any upstreams), as the benchmarks and the cluster tests run
 * it: Debian's nginx, one worker, started in the foreground with its own config in a temporary
 * folder, on a free loopback port. With `accessLog`, every request is logged with the upstreams
 * nginx tried for it, so a test can tell which server a failed request reached.
 */
import { freePort, waitUntilUp } from "./process.ts";

/** Where nginx is installed, or undefined. */
export function nginxBinary(): string | undefined {
  const dirs = (Deno.env.get("PATH") ?? "").split(":").concat(["/usr/sbin", "/sbin"]);
  for (const dir of dirs) {
    try {
      if (Deno.statSync(`${dir}/nginx`).isFile) return `${dir}/nginx`;
    } catch { /* not here */ }
  }
  return undefined;
}

/**
 * Whether tests that need nginx run. A missing nginx prints one line and returns false; with
 * `REQUIRE_NGINX=1` (set by `.ci/run`) it throws instead, so CI cannot skip them silently.
 */
export function nginxTestsEnabled(): boolean {
  if (nginxBinary()) return true;
  if (Deno.env.get("REQUIRE_NGINX") === "1") {
    throw new Error(
      "Cannot run the nginx tests: nginx is not installed and REQUIRE_NGINX=1 is set",
    );
  }
  console.error("nginx tests skipped: install the Debian package nginx");
  return false;
}

/** Options of {@linkcode startNginx}. */
export interface NginxOptions {
  /** How requests are spread over the upstreams (nginx's default is round robin). */
  balance?: "round_robin" | "least_conn";
  /** Idle connections to the upstreams nginx keeps open. */
  keepalive?: number;
  /** `proxy_next_upstream`'s value (nginx's default is `error timeout`). */
  nextUpstream?: string;
  /**
   * Failed attempts after which nginx leaves an upstream alone for 10 s (its default is 1);
   * 0 keeps trying it, so every request sent its way after it died is re-sent.
   */
  maxFails?: number;
  /**
   * Answer nginx's own 502 and 504 (no upstream answered) in the API's error shape, as the
   * README's example does: `{"error":"No coordinator answered; try again"}`.
   */
  jsonErrors?: boolean;
  /**
   * Log each request: the client's `X-Test-Id` header, nginx's status, the upstreams tried and
   * their statuses (read with `accessLog()`); and tell the client in an `X-Upstream` header
   * which upstreams served it.
   */
  accessLog?: boolean;
}

/** One request as nginx logged it. */
export interface AccessLine {
  /** The client's `X-Test-Id` header ("-" when absent). */
  id: string;
  /** What nginx answered. */
  status: number;
  /** The upstreams tried, in order (`127.0.0.1:PORT`). */
  upstreams: string[];
  /** Their statuses, in the same order (`502` for a connection that failed). */
  upstreamStatuses: string[];
}

/** A running nginx. */
export interface Nginx {
  url: string;
  port: number;
  /** The master process (its worker is its child). */
  pid: number;
  /** The lines of the access log so far (empty without `accessLog`). */
  accessLog(): Promise<AccessLine[]>;
  /** The error log so far (warnings and errors: upstreams that failed, and how). */
  errorLog(): Promise<string>;
  stop(): Promise<void>;
}

/**
 * Starts nginx proxying to the upstreams on loopback with buffering off (as a streaming proxy
 * must); resolves once it answers, or undefined when nginx is not installed.
 */
export async function startNginx(
  upstreamPorts: number[],
  options: NginxOptions = {},
): Promise<Nginx | undefined> {
  const nginx = nginxBinary();
  if (!nginx) return undefined;
  const dir = await Deno.makeTempDir({ prefix: "oc_nginx_" });
  const port = freePort();
  const fails = options.maxFails === undefined ? "" : ` max_fails=${options.maxFails}`;
  const servers = upstreamPorts.map((p) => `server 127.0.0.1:${p}${fails};`).join(" ");
  const log = options.accessLog
    ? `log_format tests '$http_x_test_id $status $upstream_addr $upstream_status';
  access_log ${dir}/access.log tests;`
    : "access_log off;";
  const single = upstreamPorts.length === 1;
  await Deno.writeTextFile(
    `${dir}/nginx.conf`,
    `
worker_processes 1;
daemon off;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 4096; }
http {
  ${log}
  client_body_temp_path ${dir}; proxy_temp_path ${dir}; fastcgi_temp_path ${dir};
  uwsgi_temp_path ${dir}; scgi_temp_path ${dir};
  upstream ollama {
    ${options.balance === "least_conn" ? "least_conn;" : ""}
    ${servers}
    keepalive ${options.keepalive ?? 64};
  }
  server {
    listen 127.0.0.1:${port};
    location / {
      proxy_pass http://ollama;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host ${single ? `127.0.0.1:${upstreamPorts[0]}` : "$host"};
      proxy_buffering off;
      proxy_read_timeout 300s;
      ${options.nextUpstream ? `proxy_next_upstream ${options.nextUpstream};` : ""}
      ${options.accessLog ? "add_header X-Upstream $upstream_addr always;" : ""}
      ${options.jsonErrors ? "error_page 502 504 = @unreachable;" : ""}
    }
    location @unreachable {
      default_type application/json;
      ${options.accessLog ? "add_header X-Upstream $upstream_addr always;" : ""}
      return 502 '{"error":"No coordinator answered; try again"}';
    }
  }
}`,
  );
  const child = new Deno.Command(nginx, {
    args: ["-c", `${dir}/nginx.conf`, "-p", dir],
    stdout: "null",
    stderr: "inherit",
  }).spawn();
  const url = `http://127.0.0.1:${port}`;
  try {
    await waitUntilUp(url);
  } catch (e) {
    child.kill("SIGKILL");
    await child.status;
    await Deno.remove(dir, { recursive: true });
    throw e;
  }
  return {
    url,
    port,
    pid: child.pid,
    async accessLog() {
      let text = "";
      try {
        text = await Deno.readTextFile(`${dir}/access.log`);
      } catch { /* nothing logged yet */ }
      return text.split("\n").filter(Boolean).map(parseAccessLine);
    },
    async errorLog() {
      return await Deno.readTextFile(`${dir}/error.log`).catch(() => "");
    },
    async stop() {
      // A fast shutdown: a graceful one (SIGQUIT) waits out the clients' idle keep-alive
      // connections, up to 75 s when the client is a fetch pool.
      child.kill("SIGTERM");
      await child.status;
      await Deno.remove(dir, { recursive: true });
    },
  };
}

/** Reads one line of the `tests` log format. */
export function parseAccessLine(line: string): AccessLine {
  // `$upstream_addr` and `$upstream_status` list one entry per server tried, as "a, b".
  const [id, status, ...rest] = line.split(" ");
  const tokens = rest.map((t) => t.replace(/,$/, ""));
  return {
    id,
    status: Number(status),
    upstreams: tokens.filter((t) => t.includes(":")),
    upstreamStatuses: tokens.filter((t) => /^\d{3}$/.test(t)),
  };
}
