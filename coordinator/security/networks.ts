/** Network allow-lists (CIDR) for the addresses agents may advertise. */
import { isIP } from "node:net";

function ipv4ToBigInt(ip: string): bigint {
  return ip.split(".").reduce((n, part) => (n << 8n) | BigInt(Number(part)), 0n);
}

function ipv6ToBigInt(ip: string): bigint {
  let [head, tail] = ip.split("::") as [string, string | undefined];
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(ip);
  if (v4) {
    const n = ipv4ToBigInt(v4[1]);
    const hex = `${(n >> 16n).toString(16)}:${(n & 0xffffn).toString(16)}`;
    if (tail !== undefined) tail = tail.replace(v4[1], hex);
    else head = head.replace(v4[1], hex);
  }
  const h = head ? head.split(":") : [];
  const t = tail ? tail.split(":") : [];
  const groups = tail === undefined ? h : [...h, ...Array(8 - h.length - t.length).fill("0"), ...t];
  return groups.reduce((n, g) => (n << 16n) | BigInt(parseInt(g || "0", 16)), 0n);
}

/** A parsed network: family, base address and prefix length. */
export interface Network {
  family: 4 | 6;
  base: bigint;
  bits: number;
}

/** Parses `10.0.0.0/8`, `fd00::/8` or a single address; throws a TypeError when malformed. */
export function parseNetwork(cidr: string): Network {
  const [addr, bitsText] = cidr.trim().split("/");
  const family = isIP(addr);
  if (family !== 4 && family !== 6) throw new TypeError(`Cannot parse network "${cidr}"`);
  const max = family === 4 ? 32 : 128;
  const bits = bitsText === undefined ? max : Number(bitsText);
  if (!Number.isInteger(bits) || bits < 0 || bits > max) {
    throw new TypeError(`Cannot parse network "${cidr}": prefix must be 0 to ${max}`);
  }
  const value = family === 4 ? ipv4ToBigInt(addr) : ipv6ToBigInt(addr);
  const shift = BigInt(max - bits);
  return { family, base: (value >> shift) << shift, bits };
}

/** Whether `ip` lies in one of `networks`. */
export function inNetworks(ip: string, networks: Network[]): boolean {
  const family = isIP(ip);
  if (family !== 4 && family !== 6) return false;
  const value = family === 4 ? ipv4ToBigInt(ip) : ipv6ToBigInt(ip);
  const max = family === 4 ? 32 : 128;
  return networks.some((n) => {
    if (n.family !== family) return false;
    const shift = BigInt(max - n.bits);
    return (value >> shift) << shift === n.base;
  });
}

/** An IPv4 address written as IPv4-mapped IPv6 (`::ffff:10.0.0.1`) becomes plain IPv4. */
function plain(ip: string): string {
  const m = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip);
  return m ? m[1] : ip;
}

/**
 * The address of the client behind a request. The connecting peer is the client, unless it is one
 * of the `trusted` proxies: then `X-Forwarded-For` is read from the right (each proxy appends the
 * address it saw) and the first address that is not a trusted proxy is the client. Entries that
 * are not IP addresses end the walk, so a forged header can only name addresses left of the
 * trusted proxies' own entries.
 */
export function clientAddress(
  peer: string,
  forwardedFor: string | null,
  trusted: Network[],
): string {
  let client = plain(peer);
  if (!trusted.length || !forwardedFor || !inNetworks(client, trusted)) return client;
  const hops = forwardedFor.split(",").map((h) => plain(h.trim()));
  for (let i = hops.length - 1; i >= 0; i--) {
    if (!isIP(hops[i])) break;
    client = hops[i];
    if (!inNetworks(client, trusted)) break;
  }
  return client;
}

/**
 * The key under which a client's failed attempts are counted: an IPv4 address as it is, an IPv6
 * address by its /64 (one subscriber usually holds a whole /64, so single addresses are free).
 * Anything else (such as "unknown") is its own key.
 */
export function limitKey(ip: string): string {
  if (isIP(ip) !== 6) return ip;
  const prefix = ipv6ToBigInt(ip) >> 64n;
  const groups = [48n, 32n, 16n, 0n].map((s) => ((prefix >> s) & 0xffffn).toString(16));
  return `${groups.join(":")}::/64`;
}
