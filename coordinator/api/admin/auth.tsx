/**
 * Admin login and logout, and the session's CSRF token. API keys are in `keys.ts`.
 */
import { type Context, Hono } from "hono";
import { deleteCookie, getCookie, setCookie } from "hono/cookie";
import { renderToString } from "preact-render-to-string";
import type { AppContext } from "../../context.ts";
import { access, adminOf, clientAddressOf, SESSION_COOKIE } from "../../http/access.ts";
import type { AppEnv } from "../../http/env.ts";
import { type HostPolicy, hostPolicy, ownOrigin } from "../../http/hosts.ts";
import { json } from "../../http/json.ts";
import { BodyError, readBody } from "../../http/body.ts";
import { FailureLimit } from "../../security/failure_limit.ts";
import { Gate } from "../../security/gate.ts";

/**
 * Wrong passwords: 5 per client address (IPv6: per /64) in 15 minutes, and 10 a minute from all
 * addresses together, so a crowd of addresses cannot keep guessing either (everyone then waits).
 */
const SIGN_IN_LIMITS = {
  perClient: 5,
  clientWindowMs: 15 * 60_000,
  global: 10,
  globalWindowMs: 60_000,
};

/**
 * Password checks at once, and waiting for a turn: each takes a core and 32 MiB for a few hundred
 * milliseconds, so at most one core (two on larger machines) goes to them, whatever arrives.
 */
const CHECKS = {
  concurrency: Math.max(1, Math.min(2, navigator.hardwareConcurrency - 1)),
  queue: 4,
};

/**
 * Where to go after signing in: a path on this site, else the dashboard. The value is resolved
 * the way a browser would resolve it against this site; anything that lands elsewhere (`//host`,
 * `/\host`, a tab or newline the URL parser drops) or would not fit in a header is refused.
 */
export function safeNext(next: string | undefined): string {
  // deno-lint-ignore no-control-regex
  if (!next || !next.startsWith("/") || /[\u0000-\u001f\u007f\\]/.test(next)) return "/dashboard";
  try {
    const url = new URL(next, "http://x");
    if (url.origin !== "http://x") return "/dashboard";
    return url.pathname + url.search + url.hash;
  } catch {
    return "/dashboard";
  }
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

function tooManyFailures(c: Context, wait: number): Response {
  return c.text(`Too many failed sign-ins; try again in ${wait} s`, 429, {
    "retry-after": String(wait),
  });
}

function busy(c: Context): Response {
  return c.text("Too many sign-ins at once; try again in 1 s", 429, { "retry-after": "1" });
}

function page(c: Context, body: preact.JSX.Element, status = 200): Response {
  return c.html("<!doctype html>" + renderToString(body), status as 200);
}

/** Login, logout and session routes. */
export function authRoutes(
  ctx: AppContext,
  options: { hosts?: HostPolicy } = {},
): Hono<AppEnv> {
  const app = new Hono<AppEnv>();
  const hosts = options.hosts ?? hostPolicy(ctx.config);
  const failures = new FailureLimit({ ...SIGN_IN_LIMITS, now: ctx.now });
  const checks = new Gate(CHECKS);

  app.get(
    "/login",
    access.public,
    (c) => page(c, <LoginPage next={safeNext(c.req.query("next"))} />),
  );

  app.post("/login", access.public, async (c) => {
    // A login form posted from another site is refused.
    const origin = c.req.header("origin");
    if (origin && !ownOrigin(origin, c.req.header("host"), hosts)) {
      return c.text("Cross-site sign-in refused", 403);
    }
    // In a flood most attempts end here, before their form is even read.
    const ip = clientAddressOf(c, ctx.config.trustedProxies);
    const refused = failures.check(ip);
    if (refused) return tooManyFailures(c, refused.retryAfter);
    if (checks.full) return busy(c);
    // The form is read before the attempt is counted, so a client that sends it slowly holds
    // no place in the limits meanwhile.
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
    const admission = failures.begin(ip);
    if (!admission.ok) return tooManyFailures(c, admission.retryAfter);
    const { attempt } = admission;
    const form = new URLSearchParams(new TextDecoder().decode(bytes));
    const password = form.get("password") ?? "";
    const next = safeNext(form.get("next") ?? "");
    // Excess sign-ins are turned away at once, without hashing anything.
    const checked = checks.run(() => ctx.security.checkAdminPassword(password));
    if (!checked) {
      attempt.cancel();
      return busy(c);
    }
    if (!await checked) {
      attempt.fail();
      ctx.registry.recordEvent("login_failed", null, `Failed admin sign-in from ${ip}`);
      return page(c, <LoginPage next={next} error="Wrong password" />, 401);
    }
    attempt.pass();
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

  app.post("/logout", access.public, async (c) => {
    const id = getCookie(c, SESSION_COOKIE);
    // The session ends here at once; a store that cannot take it only leaves its row behind.
    if (id) await ctx.security.deleteSession(id).catch(() => {});
    deleteCookie(c, SESSION_COOKIE, { path: "/" });
    return c.redirect("/login", 303);
  });

  // The CSRF token a signed-in page sends with changes (x-csrf-token).
  app.get("/api/admin/session", access.admin, (c) => {
    const admin = adminOf(ctx, c);
    return json(admin?.kind === "session" ? { csrf: admin.csrf } : { csrf: null });
  });

  return app;
}
