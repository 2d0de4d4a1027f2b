/**
 * Access-control state: generated secrets (agent token, admin password hash), per-agent
 * heartbeat secrets, API keys (hashed, revocable, counted) and admin sessions. Every per-request
 * check reads memory; changes are stored first and applied to memory once the store took them,
 * so memory and the database never disagree.
 */
import { timingSafeEqual } from "node:crypto";
import {
  type ApiKeyRecord,
  type KeyChange,
  type KeyLimits,
  NO_LIMITS,
  type SessionRecord,
  type Store,
  type StoreSnapshot,
} from "../store/mod.ts";
import {
  hashPassword,
  randomToken,
  sha256,
  verifyPassword,
  verifyPasswordAsync,
} from "./crypto.ts";

/** An API key as listed (never the key itself). */
export type ApiKeyView = Omit<ApiKeyRecord, "hash">;

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

function view(k: ApiKeyRecord): ApiKeyView {
  const { hash: _, ...rest } = k;
  return rest;
}

/** Access-control state in memory, persisted through the store. */
export class SecurityStore {
  readonly #store: Store;
  readonly #now: () => number;
  readonly #settings: Map<string, string>;
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
  /** Key id → the same active key (quotas look keys up by id on every request). */
  readonly #keysById = new Map<string, ApiKeyView>();
  /** sha256(session cookie) → session. */
  readonly #sessions = new Map<string, Session>();
  /** Uses not yet written, flushed in batches so counting never slows a request. */
  #pendingUses = new Map<string, { uses: number; at: string }>();
  #flushTimer: ReturnType<typeof setTimeout> | undefined;
  #clientAuth: boolean;
  #changes = 0;

  constructor(store: Store, snapshot: StoreSnapshot, now: () => number = Date.now) {
    this.#store = store;
    this.#now = now;
    this.#settings = new Map(Object.entries(snapshot.settings));
    for (const a of snapshot.agents) {
      if (a.secret_hash) this.rememberAgentSecret(a.id, a.secret_hash);
    }
    this.#clientAuth = snapshot.clientKeysEver;
    for (const k of snapshot.keys) this.#rememberKey(k);
    for (const s of snapshot.sessions) this.#rememberSession(s);
  }

  #rememberKey(k: ApiKeyRecord): ApiKeyView {
    const v = view(k);
    this.#keys.set(k.hash, v);
    this.#keysById.set(k.id, v);
    return v;
  }

  #forgetKey(id: string): void {
    const v = this.#keysById.get(id);
    if (!v) return;
    this.#keysById.delete(id);
    for (const [hash, k] of this.#keys) {
      if (k === v) {
        this.#keys.delete(hash);
        break;
      }
    }
  }

  /**
   * Counts the changes to what {@linkcode applySnapshot} replaces (settings, keys, sessions,
   * agent secrets), made here or applied from elsewhere: a snapshot read while it moved may be
   * older than what it would replace.
   */
  get changes(): number {
    return this.#changes;
  }

  #rememberSession(s: SessionRecord): void {
    this.#sessions.set(s.id_hash, { csrf: s.csrf, expiresAt: Date.parse(s.expires_at) });
  }

  /** A stored setting. */
  setting(key: string): string | undefined {
    return this.#settings.get(key);
  }

  /** Stores a setting. */
  async setSetting(key: string, value: string): Promise<void> {
    await this.#store.setSetting(key, value);
    this.#settings.set(key, value);
    this.#changes++;
  }

  /**
   * Makes sure an agent token exists: without a configured one, a token is generated at the
   * first start and returned once so it can be printed; only its hash is stored.
   */
  async ensureAgentToken(configured: string): Promise<{ generated?: string }> {
    if (configured || this.setting("agent_token_hash")) return {};
    const token = randomToken(24, "oca_");
    const hash = sha256(token);
    // Another coordinator starting at the same moment may have stored its token first: theirs
    // is the one, and they print it.
    const stored = await this.#store.addSetting("agent_token_hash", hash);
    this.#settings.set("agent_token_hash", stored);
    this.#changes++;
    return stored === hash ? { generated: token } : {};
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
  async ensureAdminPassword(configured: string): Promise<{ generated?: string }> {
    const stored = this.setting("admin_password_hash");
    if (configured) {
      if (!stored || !verifyPassword(configured, stored)) {
        await this.setSetting("admin_password_hash", hashPassword(configured));
        // A new password ends every session signed in with the old one.
        await this.#store.deleteAllSessions();
        this.#sessions.clear();
        this.#changes++;
      }
      return {};
    }
    if (stored) return {};
    const password = randomToken(18);
    const hash = hashPassword(password);
    const kept = await this.#store.addSetting("admin_password_hash", hash);
    this.#settings.set("admin_password_hash", kept);
    this.#changes++;
    return kept === hash ? { generated: password } : {};
  }

  /** Checks the admin password (slow on purpose, off the event loop). */
  async checkAdminPassword(password: string): Promise<boolean> {
    const stored = this.setting("admin_password_hash");
    return stored !== undefined && password.length <= 1024 &&
      await verifyPasswordAsync(password, stored);
  }

  /** A new heartbeat secret and its hash (stored with the agent's registration). */
  newAgentSecret(): { secret: string; hash: string } {
    const secret = randomToken(32, "ocs_");
    return { secret, hash: sha256(secret) };
  }

  /** Makes `hash` the agent's current secret (replacing any earlier one) once it is stored. */
  rememberAgentSecret(agentId: string, hash: string): void {
    this.revokeAgentSecret(agentId);
    this.#agentSecrets.set(hash, agentId);
    this.#secretHashOf.set(agentId, hash);
    this.#changes++;
  }

  /** Whether `hash` is the agent's current secret. */
  agentHasSecret(agentId: string, hash: string): boolean {
    return this.#secretHashOf.get(agentId) === hash;
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
    this.#changes++;
    this.#secretHashOf.delete(agentId);
    if (this.#agentSecrets.get(hash) === agentId) this.#agentSecrets.delete(hash);
    const verified = this.#verifiedOf.get(agentId);
    if (verified !== undefined) {
      this.#verifiedOf.delete(agentId);
      if (this.#verified.get(verified.lookup) === verified) this.#verified.delete(verified.lookup);
    }
  }

  /** Creates an API key; the key itself is returned this once and never stored. */
  async createKey(
    name: string,
    scope: "client" | "admin",
    options: { limits?: KeyLimits } = {},
  ): Promise<{ key: string; view: ApiKeyView }> {
    const key = randomToken(32, scope === "admin" ? "oc_admin_" : "oc_");
    const record: ApiKeyRecord = {
      id: crypto.randomUUID(),
      name,
      prefix: key.slice(0, scope === "admin" ? 13 : 7),
      hash: sha256(key),
      scope,
      created_at: new Date(this.#now()).toISOString(),
      last_used_at: null,
      uses: 0,
      revoked_at: null,
      limits: { ...(options.limits ?? NO_LIMITS) },
    };
    await this.#store.insertKey(record);
    const v = this.#rememberKey(record);
    if (scope === "client") this.#clientAuth = true;
    this.#changes++;
    return { key, view: v };
  }

  /**
   * Renames an active key or replaces its limits, stored first; resolves to the key as it is
   * now, or undefined when there is no such active key.
   */
  async updateKey(id: string, change: KeyChange): Promise<ApiKeyView | undefined> {
    if (!await this.#store.updateKey(id, change)) return undefined;
    const v = this.#keysById.get(id);
    if (!v) return undefined;
    if (change.name !== undefined) v.name = change.name;
    if (change.limits !== undefined) v.limits = { ...change.limits };
    this.#changes++;
    return v;
  }

  /**
   * How metrics and logs name the key a request came with (never the key itself): a created
   * key's name and prefix, `API_KEYS` and a hash prefix for a key from the environment.
   */
  describeKey(tenant: string): { name: string; prefix: string } {
    const v = this.#keysById.get(tenant);
    if (v) return { name: v.name, prefix: v.prefix };
    if (tenant.startsWith("env:")) return { name: "API_KEYS", prefix: tenant };
    return { name: "revoked", prefix: tenant.slice(0, 8) };
  }

  /** The active key with this id (its limits apply to every request it makes). */
  keyById(id: string): ApiKeyView | undefined {
    return this.#keysById.get(id);
  }

  /** Every key, newest first, with usage counts. */
  async listKeys(): Promise<ApiKeyView[]> {
    await this.flushUses();
    return (await this.#store.listKeys()).map(view);
  }

  /** Revokes a key at once. Resolves to false when there was no such active key. */
  async revokeKey(id: string): Promise<boolean> {
    const changed = await this.#store.revokeKey(id, new Date(this.#now()).toISOString());
    this.#forgetKey(id);
    this.#changes++;
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
    const v = this.#keys.get(sha256(key));
    if (!v) return undefined;
    const at = new Date(this.#now()).toISOString();
    v.uses++;
    v.last_used_at = at;
    const p = this.#pendingUses.get(v.id) ?? { uses: 0, at };
    p.uses++;
    p.at = at;
    this.#pendingUses.set(v.id, p);
    if (this.#flushTimer === undefined) {
      this.#flushTimer = setTimeout(() => void this.flushUses(), 1000);
      Deno.unrefTimer(this.#flushTimer as unknown as number);
    }
    return v;
  }

  /** Writes the counted key uses; kept for the next try when the store cannot take them. */
  async flushUses(): Promise<void> {
    clearTimeout(this.#flushTimer);
    this.#flushTimer = undefined;
    if (this.#pendingUses.size === 0) return;
    const pending = this.#pendingUses;
    this.#pendingUses = new Map();
    try {
      await this.#store.addKeyUses([...pending].map(([id, p]) => ({ id, ...p })));
    } catch (e) {
      console.error("Cannot record API key use, keeping it to retry:", (e as Error).message);
      for (const [id, p] of pending) {
        const later = this.#pendingUses.get(id);
        this.#pendingUses.set(id, later ? { uses: later.uses + p.uses, at: later.at } : p);
      }
      if (this.#flushTimer === undefined) {
        this.#flushTimer = setTimeout(() => void this.flushUses(), 5000);
        Deno.unrefTimer(this.#flushTimer as unknown as number);
      }
    }
  }

  /** Starts an admin session; resolves to the cookie value and its CSRF token. */
  async createSession(): Promise<{ id: string; csrf: string }> {
    const id = randomToken(32);
    const now = this.#now();
    const record: SessionRecord = {
      id_hash: sha256(id),
      csrf: randomToken(24),
      created_at: new Date(now).toISOString(),
      expires_at: new Date(now + SESSION_MS).toISOString(),
    };
    await this.#store.insertSession(record);
    this.#rememberSession(record);
    this.#changes++;
    return { id, csrf: record.csrf };
  }

  /** The live session for a cookie value, if any. */
  session(id: string): Session | undefined {
    const hash = sha256(id);
    const s = this.#sessions.get(hash);
    if (!s) return undefined;
    if (s.expiresAt > this.#now()) return s;
    this.#sessions.delete(hash);
    return undefined;
  }

  /** Ends a session (at once here; the stored row goes when the store takes it). */
  async deleteSession(id: string): Promise<void> {
    const hash = sha256(id);
    this.#sessions.delete(hash);
    this.#changes++;
    try {
      await this.#store.deleteSession(hash);
    } finally {
      // Counted again once stored: a snapshot read meanwhile may still hold the session.
      this.#changes++;
    }
  }

  /** Forgets sessions that expired (their rows go with the retention job). */
  pruneSessions(): void {
    const now = this.#now();
    for (const [hash, s] of this.#sessions) if (s.expiresAt <= now) this.#sessions.delete(hash);
  }

  /** Replaces settings, keys and sessions with a stored snapshot (after missing changes). */
  applySnapshot(snapshot: StoreSnapshot): void {
    this.#settings.clear();
    for (const [k, v] of Object.entries(snapshot.settings)) this.#settings.set(k, v);
    this.#keys.clear();
    this.#keysById.clear();
    for (const k of snapshot.keys) this.#rememberKey(k);
    this.#clientAuth ||= snapshot.clientKeysEver;
    this.#sessions.clear();
    for (const s of snapshot.sessions) this.#rememberSession(s);
    for (const a of snapshot.agents) {
      if (a.secret_hash && !this.agentHasSecret(a.id, a.secret_hash)) {
        this.rememberAgentSecret(a.id, a.secret_hash);
      }
    }
  }

  /**
   * Applies a key as another coordinator stored it (created, renamed, limited, or revoked:
   * `revoked_at` set). Uses counted here and not yet written are kept.
   */
  applyRemoteKey(id: string, record: ApiKeyRecord | undefined): void {
    const before = this.#keysById.get(id);
    this.#forgetKey(id);
    this.#changes++;
    if (!record || record.revoked_at !== null) return;
    const v = this.#rememberKey(record);
    if (before) {
      v.uses = Math.max(v.uses, before.uses);
      if ((before.last_used_at ?? "") > (v.last_used_at ?? "")) {
        v.last_used_at = before.last_used_at;
      }
    }
    if (record.scope === "client") this.#clientAuth = true;
  }

  /** Applies a session another coordinator started (a record) or ended (undefined). */
  applyRemoteSession(idHash: string, record: SessionRecord | undefined): void {
    if (record) this.#rememberSession(record);
    else this.#sessions.delete(idHash);
    this.#changes++;
  }

  /** Ends every session here (another coordinator's password change). */
  clearSessions(): void {
    this.#sessions.clear();
    this.#changes++;
  }

  /** Applies a setting another coordinator stored. */
  applyRemoteSetting(key: string, value: string | undefined): void {
    if (value === undefined) this.#settings.delete(key);
    else this.#settings.set(key, value);
    this.#changes++;
  }

  /** Writes what is pending (on shutdown). */
  close(): Promise<void> {
    return this.flushUses();
  }
}
