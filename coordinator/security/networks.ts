/**
 * Network allow-lists (CIDR) for the addresses agents may advertise and for trusted proxies.
 * Addresses are parsed and compared by value with `ipaddr.js`, so every spelling of an address
 * (`::ffff:10.0.0.1`, `0:0:0:0:0:ffff:a00:1`) matches the same networks.
 */
import { isIP } from "node:net";
import ipaddr from "ipaddr.js";

type Address = ipaddr.IPv4 | ipaddr.IPv6;

/** A parsed network: family, base address and prefix length. */
export interface Network {
  family: 4 | 6;
  base: Address;
  bits: number;
}

/** An IP address in strict form (dotted-quad IPv4 or IPv6 without a zone), or null. */
function parseIP(ip: string): Address | null {
  const family = isIP(ip);
  if (family === 4) return ipaddr.IPv4.parse(ip);
  if (family === 6 && !ip.includes("%")) return ipaddr.IPv6.parse(ip);
  return null;
}

/** Parses `10.0.0.0/8`, `fd00::/8` or a single address; throws a TypeError when malformed. */
export function parseNetwork(cidr: string): Network {
  const [addr, bitsText] = cidr.trim().split("/");
  const base = parseIP(addr);
  if (!base) throw new TypeError(`Cannot parse network "${cidr}"`);
  const max = base.kind() === "ipv4" ? 32 : 128;
  const bits = bitsText === undefined ? max : Number(bitsText);
  if (!Number.isInteger(bits) || bits < 0 || bits > max) {
    throw new TypeError(`Cannot parse network "${cidr}": prefix must be 0 to ${max}`);
  }
  return { family: max === 32 ? 4 : 6, base, bits };
}

/**
 * Whether `ip` lies in one of `networks`. An IPv4 address and its IPv4-mapped IPv6 form are the
 * same address: each matches IPv4 networks and `::ffff:0:0/96`-style ones alike.
 */
export function inNetworks(ip: string, networks: Network[]): boolean {
  const addr = parseIP(ip);
  if (!addr) return false;
  const forms: Address[] = [addr];
  if (addr.kind() === "ipv4") forms.push((addr as ipaddr.IPv4).toIPv4MappedAddress());
  else if ((addr as ipaddr.IPv6).isIPv4MappedAddress()) {
    forms.push((addr as ipaddr.IPv6).toIPv4Address());
  }
  return networks.some((n) =>
    forms.some((f) => f.kind() === n.base.kind() && f.match(n.base, n.bits))
  );
}

/** An IPv4 address written as IPv4-mapped IPv6 (`::ffff:10.0.0.1`) becomes plain IPv4. */
function plain(ip: string): string {
  const addr = parseIP(ip);
  if (addr?.kind() === "ipv6" && (addr as ipaddr.IPv6).isIPv4MappedAddress()) {
    return (addr as ipaddr.IPv6).toIPv4Address().toString();
  }
  return ip;
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
  if (isIP(ip) !== 6 || ip.includes("%")) return ip;
  const addr = ipaddr.IPv6.parse(ip);
  // An IPv4 client seen through a dual-stack socket is the IPv4 client.
  if (addr.isIPv4MappedAddress()) return addr.toIPv4Address().toString();
  const groups = addr.parts.slice(0, 4).map((p) => p.toString(16));
  return `${groups.join(":")}::/64`;
}
