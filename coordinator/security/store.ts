/**
 * What access control keeps in the database: generated secrets (agent token, admin password
 * hash), per-agent heartbeat secrets, API keys (hashed, revocable, counted) and admin sessions.
 */
import { timingSafeEqual } from "node:crypto";
import type { DatabaseSync, StatementSync } from "node:sqlite";
import { hashPassword, randomToken, sha256, verifyPassword } from "./crypto.ts";

/** An API key as listed (never the key itself). */
export interface ApiKeyView {
  id: string;
  name: string;
  prefix: string;
  scope: "client" | "admin";
  created_at: string;
  last_used_at: string | null;
  uses: number;
  revoked_at: string | null;
}

/** An admin session. */
export interface Session {
  csrf: string;
  expiresAt: number;
}

const SESSION_MS = 12 * 3600_000;

/**
 * Leading characters of an agent secret that key the cache of verified secrets: a lookup id, as
 * in tokens made of an id and a verifier. What a lookup's timing could tell about them leaves
 * far more than enough of the secret unknown (`ocs_` plus 8 of its 43 random characters).
 */
const LOOKUP_CHARS = 12;

/** Whether two strings are equal, in time that depends only on their length. */
function sameSecret(a: string, b: string): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a.charCodeAt(i) ^ b.charCodeAt(i);
  return diff === 0;
}

/** An agent secret that passed the hash check once. */
interface VerifiedSecret {
  secret: string;
  hash: string;
  agentId: string;
  lookup: string;
}

/** Access-control state over SQLite, with in-memory indexes for the per-request checks. */
export class SecurityStore {
  readonly #db: DatabaseSync;
  readonly #now: () => number;
  readonly #stmt: Record<string, StatementSync>;
  /** sha256(agent secret) → agent id. */
  readonly #agentSecrets = new Map<string, string>();
  /** Agent id → sha256 of its secret (an agent has at most one). */
  readonly #secretHashOf = new Map<string, string>();
  /** Agent id → its entry in {@linkcode #verified}. */
  readonly #verifiedOf = new Map<string, VerifiedSecret>();
  /**
   * Secrets already verified, by their first {@linkcode LOOKUP_CHARS} characters: an agent
   * heartbeating every few seconds costs a map lookup and a constant-time compare, not a SHA-256.
   * Only secrets that matched a stored hash get in, so it is no larger than the fleet.
   */
  readonly #verified = new Map<string, VerifiedSecret>();
  /** sha256(api key) → key. */
  readonly #keys = new Map<string, ApiKeyView>();
  /** Uses not yet written, flushed in batches so counting never slows a request. */
  #pendingUses = new Map<string, { uses: number; at: string }>();
  #flushTimer: ReturnType<typeof setTimeout> | undefined;
  #clientAuth: boolean;

  constructor(db: DatabaseSync, now: () => number = Date.now) {
    this.#db = db;
    this.#now = now;
    this.#stmt = {
      get: db.prepare("SELECT value FROM settings WHERE key = ?"),
      set: db.prepare(
        "INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
      ),
      agentSecret: db.prepare("UPDATE agents SET secret_hash = ? WHERE id = ?"),
      insertKey: db.prepare(
        "INSERT INTO api_keys (id, name, prefix, hash, scope, created_at) VALUES (?, ?, ?, ?, ?, ?)",
      ),
      revokeKey: db.prepare(
        "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
      ),
      useKey: db.prepare("UPDATE api_keys SET uses = uses + ?, last_used_at = ? WHERE id = ?"),
      insertSession: db.prepare(
        "INSERT INTO sessions (id_hash, csrf, created_at, expires_at) VALUES (?, ?, ?, ?)",
      ),
      getSession: db.prepare("SELECT csrf, expires_at FROM sessions WHERE id_hash = ?"),
      deleteSession: db.prepare("DELETE FROM sessions WHERE id_hash = ?"),
      pruneSessions: db.prepare("DELETE FROM sessions WHERE expires_at < ?"),
    };
    for (
      const r of db.prepare("SELECT id, secret_hash FROM agents WHERE secret_hash IS NOT NULL")
        .all()
    ) {
      this.#agentSecrets.set(String(r.secret_hash), String(r.id));
      this.#secretHashOf.set(String(r.id), String(r.secret_hash));
    }
    this.#clientAuth =
      db.prepare("SELECT 1 FROM api_keys WHERE scope = 'client' LIMIT 1").get() !== undefined;
    for (const r of db.prepare("SELECT * FROM api_keys WHERE revoked_at IS NULL").all()) {
      this.#keys.set(String(r.hash), this.#keyView(r));
    }
  }

  #keyView(r: Record<string, unknown>): ApiKeyView {
    return {
      id: String(r.id),
      name: String(r.name),
      prefix: String(r.prefix),
      scope: r.scope === "admin" ? "admin" : "client",
      created_at: String(r.created_at),
      last_used_at: r.last_used_at == null ? null : String(r.last_used_at),
      uses: Number(r.uses),
      revoked_at: r.revoked_at == null ? null : String(r.revoked_at),
    };
  }

  /** A stored setting. */
  setting(key: string): string | undefined {
    const row = this.#stmt.get.get(key) as { value: string } | undefined;
    return row?.value;
  }

  /** Stores a setting. */
  setSetting(key: string, value: string): void {
    this.#stmt.set.run(key, value);
  }

  /**
   * Makes sure an agent token exists: without a configured one, a token is generated at the
   * first start and returned once so it can be printed; only its hash is stored.
   */
  ensureAgentToken(configured: string): { generated?: string } {
    if (configured || this.setting("agent_token_hash")) return {};
    const token = randomToken(24, "oca_");
    this.setSetting("agent_token_hash", sha256(token));
    return { generated: token };
  }

  /** Checks an agent token against the configured one, else the generated one's hash. */
  checkAgentToken(token: string, configured: string): boolean {
    const expected = configured ? sha256(configured) : this.setting("agent_token_hash");
    return expected !== undefined &&
      timingSafeEqual(Buffer.from(sha256(token)), Buffer.from(expected));
  }

  /**
   * Makes sure an admin password exists: the configured one (its hash is refreshed when it
   * changed), else a strong generated one returned once so it can be printed.
   */
  ensureAdminPassword(configured: string): { generated?: string } {
    const stored = this.setting("admin_password_hash");
    if (configured) {
      if (!stored || !verifyPassword(configured, stored)) {
        this.setSetting("admin_password_hash", hashPassword(configured));
        // A new password ends every session signed in with the old one.
        this.#db.exec("DELETE FROM sessions");
      }
      return {};
    }
    if (stored) return {};
    const password = randomToken(18);
    this.setSetting("admin_password_hash", hashPassword(password));
    return { generated: password };
  }

  /** Checks the admin password (slow on purpose). */
  checkAdminPassword(password: string): boolean {
    const stored = this.setting("admin_password_hash");
    return stored !== undefined && password.length <= 1024 && verifyPassword(password, stored);
  }

  /** Issues a new heartbeat secret for an agent (replacing any earlier one). */
  issueAgentSecret(agentId: string): string {
    this.revokeAgentSecret(agentId);
    const secret = randomToken(32, "ocs_");
    const hash = sha256(secret);
    this.#agentSecrets.set(hash, agentId);
    this.#secretHashOf.set(agentId, hash);
    this.#stmt.agentSecret.run(hash, agentId);
    return secret;
  }

  /** The agent a heartbeat secret belongs to, if any. */
  agentForSecret(secret: string): string | undefined {
    const lookup = secret.slice(0, LOOKUP_CHARS);
    const known = this.#verified.get(lookup);
    // A cached secret counts only while it is still the agent's current one.
    if (
      known !== undefined && sameSecret(known.secret, secret) &&
      this.#agentSecrets.get(known.hash) === known.agentId
    ) {
      return known.agentId;
    }
    const hash = sha256(secret);
    const agentId = this.#agentSecrets.get(hash);
    if (agentId !== undefined) {
      const entry = { secret, hash, agentId, lookup };
      this.#verified.set(lookup, entry);
      this.#verifiedOf.set(agentId, entry);
    }
    return agentId;
  }

  /** Forgets an agent's secret (the agent was removed or registered again). */
  revokeAgentSecret(agentId: string): void {
    const hash = this.#secretHashOf.get(agentId);
    if (hash === undefined) return;
    this.#secretHashOf.delete(agentId);
    if (this.#agentSecrets.get(hash) === agentId) this.#agentSecrets.delete(hash);
    const verified = this.#verifiedOf.get(agentId);
    if (verified !== undefined) {
      this.#verifiedOf.delete(agentId);
      if (this.#verified.get(verified.lookup) === verified) this.#verified.delete(verified.lookup);
    }
  }

  /** Creates an API key; the key itself is returned this once and never stored. */
  createKey(name: string, scope: "client" | "admin"): { key: string; view: ApiKeyView } {
    const key = randomToken(32, scope === "admin" ? "oc_admin_" : "oc_");
    const view: ApiKeyView = {
      id: crypto.randomUUID(),
      name,
      prefix: key.slice(0, scope === "admin" ? 13 : 7),
      scope,
      created_at: new Date(this.#now()).toISOString(),
      last_used_at: null,
      uses: 0,
      revoked_at: null,
    };
    const hash = sha256(key);
    this.#stmt.insertKey.run(view.id, view.name, view.prefix, hash, scope, view.created_at);
    this.#keys.set(hash, view);
    if (scope === "client") this.#clientAuth = true;
    return { key, view };
  }

  /** Every key, newest first, with usage counts. */
  listKeys(): ApiKeyView[] {
    this.flushUses();
    return this.#db.prepare("SELECT * FROM api_keys ORDER BY created_at DESC").all().map((r) =>
      this.#keyView(r)
    );
  }

  /** Revokes a key at once. Returns false when there was no such active key. */
  revokeKey(id: string): boolean {
    const changed =
      Number(this.#stmt.revokeKey.run(new Date(this.#now()).toISOString(), id).changes) > 0;
    for (const [hash, k] of this.#keys) if (k.id === id) this.#keys.delete(hash);
    return changed;
  }

  /**
   * Whether client auth is on: a client key was created at some point. Revoking keys never turns
   * it off again (revoking the last key must not open the API to everyone).
   */
  hasClientKeys(): boolean {
    return this.#clientAuth;
  }

  /** The active key matching `key`, counting the use. */
  useKey(key: string): ApiKeyView | undefined {
    const view = this.#keys.get(sha256(key));
    if (!view) return undefined;
    const at = new Date(this.#now()).toISOString();
    view.uses++;
    view.last_used_at = at;
    const p = this.#pendingUses.get(view.id) ?? { uses: 0, at };
    p.uses++;
    p.at = at;
    this.#pendingUses.set(view.id, p);
    if (this.#flushTimer === undefined) {
      this.#flushTimer = setTimeout(() => this.flushUses(), 1000);
      Deno.unrefTimer(this.#flushTimer as unknown as number);
    }
    return view;
  }

  /** Writes the counted key uses. */
  flushUses(): void {
    clearTimeout(this.#flushTimer);
    this.#flushTimer = undefined;
    if (this.#pendingUses.size === 0) return;
    const pending = this.#pendingUses;
    this.#pendingUses = new Map();
    try {
      for (const [id, p] of pending) this.#stmt.useKey.run(p.uses, p.at, id);
    } catch (e) {
      console.error("Cannot record API key use:", (e as Error).message);
    }
  }

  /** Starts an admin session; returns the cookie value and its CSRF token. */
  createSession(): { id: string; csrf: string } {
    const id = randomToken(32);
    const csrf = randomToken(24);
    const now = this.#now();
    this.#stmt.pruneSessions.run(new Date(now).toISOString());
    this.#stmt.insertSession.run(
      sha256(id),
      csrf,
      new Date(now).toISOString(),
      new Date(now + SESSION_MS).toISOString(),
    );
    return { id, csrf };
  }

  /** The live session for a cookie value, if any. */
  session(id: string): Session | undefined {
    const row = this.#stmt.getSession.get(sha256(id)) as
      | { csrf: string; expires_at: string }
      | undefined;
    if (!row) return undefined;
    const expiresAt = Date.parse(row.expires_at);
    return expiresAt > this.#now() ? { csrf: row.csrf, expiresAt } : undefined;
  }

  /** Ends a session. */
  deleteSession(id: string): void {
    this.#stmt.deleteSession.run(sha256(id));
  }

  /** Writes what is pending (on shutdown). */
  close(): void {
    this.flushUses();
  }
}
