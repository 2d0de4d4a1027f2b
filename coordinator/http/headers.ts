/**
 * Browser-facing protections: CORS for the Ollama/OpenAI API like Ollama's `OLLAMA_ORIGINS`, and
 * secure headers with a content security policy on the dashboard.
 */
import type { MiddlewareHandler } from "hono";
import { type HostPolicy, ownOrigin } from "./hosts.ts";

/** Origins Ollama itself always allows: local pages and desktop-app schemes. */
const LOCAL_ORIGIN =
  /^(https?:\/\/(localhost|127\.0\.0\.1|\[::1\]|0\.0\.0\.0)(:\d+)?|app:\/\/.*|file:\/\/.*|tauri:\/\/.*|vscode-webview:\/\/.*)$/;

function globToRegExp(glob: string): RegExp {
  const escaped = glob.replace(/[.+?^${}()|[\]\\]/g, "\\$&").replace(/\*/g, ".*");
  return new RegExp(`^${escaped}$`, "i");
}

/** Whether a browser origin may call the API: local origins, or one matching `OLLAMA_ORIGINS`. */
export function originAllowed(origin: string, extra: string[]): boolean {
  if (LOCAL_ORIGIN.test(origin)) return true;
  return extra.some((o) => o === "*" || globToRegExp(o).test(origin));
}

/** CORS for the API routes: answers preflights and echoes allowed origins. */
export function apiCors(options: { origins: string[]; hosts: HostPolicy }): MiddlewareHandler {
  const { origins: extra, hosts } = options;
  return async (c, next) => {
    const origin = c.req.header("origin");
    const path = c.req.path;
    const api = path === "/" || path.startsWith("/api/") || path.startsWith("/v1/");
    // The dashboard calling its own API: same host and port, and that host on the allow-list (a
    // page on a rebound name has a matching Origin and Host too, but not an allowed one).
    if (!origin || !api || ownOrigin(origin, c.req.header("host"), hosts)) {
      await next();
      return;
    }
    // Like Ollama: a browser page from an origin that is not allowed is refused outright, so a
    // web page a user happens to open cannot drive the API (it runs models, deletes models).
    if (!originAllowed(origin, extra)) {
      return c.json({ error: `Origin ${origin} is not allowed (see OLLAMA_ORIGINS)` }, 403);
    }
    if (c.req.method === "OPTIONS") {
      return c.body(null, 204, {
        "access-control-allow-origin": origin,
        "access-control-allow-methods": "GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS",
        "access-control-allow-headers": c.req.header("access-control-request-headers") ??
          "authorization, content-type",
        "access-control-max-age": "600",
        vary: "origin",
      });
    }
    await next();
    c.res.headers.set("access-control-allow-origin", origin);
    c.res.headers.append("vary", "origin");
  };
}

const CSP = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self' 'unsafe-inline'",
  "img-src 'self' data:",
  "connect-src 'self'",
  "font-src 'self'",
  "object-src 'none'",
  "base-uri 'none'",
  "form-action 'self'",
  "frame-ancestors 'none'",
].join("; ");

/** Secure headers on the dashboard's pages and the login page. */
export function pageHeaders(): MiddlewareHandler {
  return async (c, next) => {
    await next();
    const path = c.req.path;
    if (
      path === "/login" || path === "/dashboard" || path.startsWith("/dashboard/") ||
      path.startsWith("/static/")
    ) {
      const h = c.res.headers;
      h.set("content-security-policy", CSP);
      h.set("x-content-type-options", "nosniff");
      h.set("x-frame-options", "DENY");
      h.set("referrer-policy", "same-origin");
      h.set("cross-origin-opener-policy", "same-origin");
      if (!path.startsWith("/static/")) h.set("cache-control", "no-store");
    }
  };
}
