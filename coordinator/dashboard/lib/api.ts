/** Calls the coordinator's JSON API from an island; errors carry the server's message. */

let csrf: Promise<string | null> | undefined;

/** The signed-in session's CSRF token (sent with every change), or null without a login. */
function csrfToken(): Promise<string | null> {
  csrf ??= fetch("/api/admin/session").then(async (res) =>
    res.ok ? ((await res.json()) as { csrf?: string | null }).csrf ?? null : null
  ).catch(() => null);
  return csrf;
}

/** Sends a request; resolves with the parsed JSON answer (or null for an empty one). */
export async function api<T = unknown>(
  path: string,
  init: { method?: string; json?: unknown } = {},
): Promise<T> {
  const method = init.method ?? (init.json === undefined ? "GET" : "POST");
  const headers: Record<string, string> = {};
  if (init.json !== undefined) headers["content-type"] = "application/json";
  if (method !== "GET") {
    const token = await csrfToken();
    if (token) headers["x-csrf-token"] = token;
  }
  const res = await fetch(path, {
    method,
    headers,
    body: init.json === undefined ? undefined : JSON.stringify(init.json),
  });
  const text = await res.text();
  let body: unknown = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch { /* not JSON */ }
  if (!res.ok) {
    if (res.status === 403) csrf = undefined; // a new session: fetch its token next time
    const message = (body as { error?: unknown } | null)?.error;
    throw new Error(typeof message === "string" ? message : `HTTP ${res.status}`);
  }
  return body as T;
}
