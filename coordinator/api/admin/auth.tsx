/**
 * Admin login and logout, the session's CSRF token, and client/admin API keys.
 */
import { type Context, Hono } from "hono";
import { deleteCookie, setCookie } from "hono/cookie";
import { renderToString } from "preact-render-to-string";
import { z } from "zod";
import { ollamaError } from "@oc/shared";
import type { AppContext } from "../../context.ts";
import { adminOf, SESSION_COOKIE } from "../../http/access.ts";
import { json, readJson } from "../../http/json.ts";
import { BodyError, readBody } from "../../http/body.ts";
import { getCookie } from "hono/cookie";
import { clientAddress, type Network } from "../../security/networks.ts";

/** Failed logins per client address before it must wait. */
const MAX_FAILURES = 5;
const FAILURE_WINDOW_MS = 15 * 60_000;

const KeyRequest = z.object({
  name: z.string().trim().min(1).max(64),
  scope: z.enum(["client", "admin"]).default("client"),
}).strict();

/** The signing-in client's address: the peer, or the client a trusted proxy forwards for. */
function signInAddress(c: Context, trusted: Network[]): string {
  const info = c.env as { remoteAddr?: { hostname?: string } } | undefined;
  const peer = info?.remoteAddr?.hostname;
  if (!peer) return "unknown";
  return clientAddress(peer, c.req.header("x-forwarded-for") ?? null, trusted);
}

/** Only same-site paths are followed after login. */
function safeNext(next: string | undefined): string {
  return next && next.startsWith("/") && !next.startsWith("//") && !next.startsWith("/\\")
    ? next
    : "/dashboard";
}

function LoginPage(props: { next: string; error?: string }) {
  return (
    <html lang="en">
      <head>
        <meta charset="utf-8" />
        <meta name="viewport" content="width=device-width, initial-scale=1" />
        <title>Sign in · Ollama Coordinator</title>
        <link rel="icon" href="/favicon.ico" sizes="32x32" />
        <link rel="stylesheet" href="/static/login.css" />
      </head>
      <body>
        <main class="login">
          <h1>Ollama Coordinator</h1>
          <form method="post" action="/login">
            <input type="hidden" name="next" value={props.next} />
            <label>
              Admin password
              <input
                type="password"
                name="password"
                autocomplete="current-password"
                required
                autofocus
              />
            </label>
            {props.error && <p class="error" role="alert">{props.error}</p>}
            <button type="submit">Sign in</button>
          </form>
          <p class="hint">
            The password is <code>ADMIN_PASSWORD</code>, or the one printed at the first start.
          </p>
        </main>
      </body>
    </html>
  );
}

function page(c: Context, body: preact.JSX.Element, status = 200): Response {
  return c.html("<!doctype html>" + renderToString(body), status as 200);
}

/** Login, logout, session and key routes. */
export function authRoutes(ctx: AppContext): Hono {
  const app = new Hono();
  const failures = new Map<string, { count: number; until: number }>();

  app.get("/login", (c) => page(c, <LoginPage next={safeNext(c.req.query("next"))} />));

  app.post("/login", async (c) => {
    const ip = signInAddress(c, ctx.config.trustedProxies);
    const now = ctx.now();
    const f = failures.get(ip);
    if (f && f.count >= MAX_FAILURES && f.until > now) {
      const wait = Math.ceil((f.until - now) / 1000);
      return c.text(`Too many failed sign-ins; try again in ${wait} s`, 429, {
        "retry-after": String(wait),
      });
    }
    // A login form posted from another site is refused.
    const origin = c.req.header("origin");
    if (origin && origin !== new URL(c.req.url).origin) {
      return c.text("Cross-site sign-in refused", 403);
    }
    let bytes;
    try {
      bytes = await readBody(c.req.raw, { limit: 16 * 1024 });
    } catch (error) {
      if (!(error instanceof BodyError)) throw error;
      return c.text(
        error.status === 413 ? "Sign-in form is too large" : error.message,
        error.status,
      );
    }
    const form = new URLSearchParams(new TextDecoder().decode(bytes));
    const password = form.get("password") ?? "";
    const next = safeNext(form.get("next") ?? "");
    if (!ctx.security.checkAdminPassword(password)) {
      const entry = f && f.until > now ? f : { count: 0, until: now + FAILURE_WINDOW_MS };
      entry.count++;
      failures.set(ip, entry);
      if (failures.size > 10_000) failures.delete(failures.keys().next().value!);
      ctx.registry.recordEvent("login_failed", null, `Failed admin sign-in from ${ip}`);
      return page(c, <LoginPage next={next} error="Wrong password" />, 401);
    }
    failures.delete(ip);
    const session = await ctx.security.createSession();
    setCookie(c, SESSION_COOKIE, session.id, {
      httpOnly: true,
      sameSite: "Strict",
      path: "/",
      secure: new URL(c.req.url).protocol === "https:" ||
        c.req.header("x-forwarded-proto") === "https",
      maxAge: 12 * 3600,
    });
    return c.redirect(next, 303);
  });

  app.post("/logout", async (c) => {
    const id = getCookie(c, SESSION_COOKIE);
    // The session ends here at once; a store that cannot take it only leaves its row behind.
    if (id) await ctx.security.deleteSession(id).catch(() => {});
    deleteCookie(c, SESSION_COOKIE, { path: "/" });
    return c.redirect("/login", 303);
  });

  // The CSRF token a signed-in page sends with changes (x-csrf-token).
  app.get("/api/admin/session", (c) => {
    const admin = adminOf(ctx, c);
    return json(admin?.kind === "session" ? { csrf: admin.csrf } : { csrf: null });
  });

  app.get("/api/keys", async () => json(await ctx.security.listKeys()));
  app.post("/api/keys", async (c) => {
    const body = await readJson(c.req.raw, KeyRequest);
    if (!body.ok) return body.response;
    const { key, view } = await ctx.security.createKey(body.data.name, body.data.scope);
    ctx.registry.recordEvent("key_created", null, `API key "${view.name}" (${view.scope}) created`);
    return json({ ...view, key }, 201);
  });
  app.delete("/api/keys/:id", async (c) => {
    const id = c.req.param("id");
    if (!await ctx.security.revokeKey(id)) return ollamaError(404, `API key "${id}" not found`);
    ctx.registry.recordEvent("key_revoked", null, `API key ${id} revoked`);
    return c.body(null, 204);
  });
  return app;
}
