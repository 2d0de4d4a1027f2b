/**
 * nginx as the benchmark's reference proxy: Debian's nginx, one worker, `least_conn`, keepalive
 * to the upstream, buffering off (as a streaming proxy must), started in the foreground with its
 * own config in a temporary folder.
 *
 * @module
 */
import { freePort, waitUntilUp } from "../../coordinator/testing/process.ts";
import { which } from "./wrk.ts";

/** nginx proxying to `upstreamPort` on loopback, or null when nginx is not installed. */
export async function startNginx(
  upstreamPort: number,
): Promise<{ url: string; stop: () => Promise<void> } | null> {
  const nginx = which("nginx");
  if (!nginx) return null;
  const dir = await Deno.makeTempDir();
  const port = freePort();
  await Deno.writeTextFile(
    `${dir}/nginx.conf`,
    `
worker_processes 1;
daemon off;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path ${dir}; proxy_temp_path ${dir}; fastcgi_temp_path ${dir};
  uwsgi_temp_path ${dir}; scgi_temp_path ${dir};
  upstream ollama { least_conn; server 127.0.0.1:${upstreamPort}; keepalive 64; }
  server {
    listen 127.0.0.1:${port};
    location / {
      proxy_pass http://ollama;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host 127.0.0.1:${upstreamPort};
      proxy_buffering off;
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
  await waitUntilUp(url);
  return {
    url,
    stop: async () => {
      child.kill("SIGQUIT");
      await child.status;
      await Deno.remove(dir, { recursive: true });
    },
  };
}
