/** Secrets: random tokens, fast hashes for high-entropy tokens, slow salted hashes for passwords. */
import { createHash, randomBytes, scrypt, scryptSync, timingSafeEqual } from "node:crypto";

/** A random URL-safe token with `bytes` bytes of entropy, optionally prefixed (`oc_…`). */
export function randomToken(bytes = 32, prefix = ""): string {
  return prefix + randomBytes(bytes).toString("base64url");
}

/** SHA-256 in hex: enough for random tokens, which cannot be guessed from their hash. */
export function sha256(value: string): string {
  return createHash("sha256").update(value).digest("hex");
}

const SCRYPT = { N: 1 << 15, r: 8, p: 1, keylen: 32, maxmem: 64 * 1024 * 1024 };

/** A slow salted hash of a password: `scrypt$N$r$p$salt$hash`. */
export function hashPassword(password: string): string {
  const salt = randomBytes(16);
  const hash = scryptSync(password, salt, SCRYPT.keylen, SCRYPT);
  return ["scrypt", SCRYPT.N, SCRYPT.r, SCRYPT.p, salt.toString("base64"), hash.toString("base64")]
    .join("$");
}

/** Checks a password against {@linkcode hashPassword}'s output in constant time. */
export function verifyPassword(password: string, stored: string): boolean {
  const [kind, n, r, p, salt, hash] = stored.split("$");
  if (kind !== "scrypt" || !salt || !hash) return false;
  const expected = Buffer.from(hash, "base64");
  const actual = scryptSync(password, Buffer.from(salt, "base64"), expected.length, {
    N: Number(n),
    r: Number(r),
    p: Number(p),
    maxmem: SCRYPT.maxmem,
  });
  return timingSafeEqual(actual, expected);
}

/**
 * {@linkcode verifyPassword} off the JavaScript thread: node:crypto's callback `scrypt` runs in
 * Deno's blocking-task pool, so the event loop keeps serving while a password is hashed (measured
 * in specs/security/plan.md). Each check still takes a core and 32 MiB for a few hundred
 * milliseconds: callers bound how many run at once.
 */
export async function verifyPasswordAsync(password: string, stored: string): Promise<boolean> {
  const [kind, n, r, p, salt, hash] = stored.split("$");
  if (kind !== "scrypt" || !salt || !hash) return false;
  const expected = Buffer.from(hash, "base64");
  const actual = await new Promise<Buffer>((resolve, reject) =>
    scrypt(password, Buffer.from(salt, "base64"), expected.length, {
      N: Number(n),
      r: Number(r),
      p: Number(p),
      maxmem: SCRYPT.maxmem,
    }, (error, key) => error ? reject(error) : resolve(key))
  );
  return timingSafeEqual(actual, expected);
}
