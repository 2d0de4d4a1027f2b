/**
 * Validation of the address an agent advertises. The coordinator will send users' prompts
 * there, so only plain host names and IP addresses are accepted, never link-local or cloud
 * metadata addresses, and never anything with a scheme, path or credentials.
 *
 * Addresses are compared by value, not by spelling: an IPv6 address is first written the way the
 * URL parser (and so every connection the coordinator makes) reads it, then parsed with
 * `ipaddr.js`; IPv4 addresses embedded in it (IPv4-mapped, -translated or -compatible, NAT64,
 * 6to4, Teredo) are checked as IPv4. The agent's base URL is built from that same form, so the
 * address checked is the address connected to.
 */
import { isIP } from "node:net";
import { hostname } from "node:os";
import ipaddr from "ipaddr.js";

const HOSTNAME =
  /^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/i;

/** Cloud metadata services' host names (lower case). */
const METADATA_HOSTS = new Set([
  "metadata", // GCP, short
  "metadata.google.internal", // GCP
  "metadata.goog", // GCP
  "instance-data", // AWS
  "instance-data.ec2.internal", // AWS
  "metadata.tencentyun.com", // Tencent Cloud
  "metadata.platformequinix.com", // Equinix Metal
  "metadata.packet.net", // Equinix Metal, formerly Packet
  "api.metadata.cloud.ibm.com", // IBM Cloud VPC
  "rancher-metadata", // Rancher
]);

/**
 * Cloud metadata addresses outside the link-local range (169.254.0.0/16, which AWS, GCP, Azure,
 * Oracle, OpenStack, DigitalOcean, Hetzner and most others use, is refused whole).
 */
const METADATA_IPS = new Set(
  [
    "100.100.100.200", // Alibaba Cloud
    "192.0.0.192", // Oracle Cloud, older instances
    "fd00:ec2::254", // AWS, IPv6
    "fd20:ce::254", // GCP, IPv6
    "fd00:42::42", // Scaleway, IPv6
  ].map((ip) => ipaddr.parse(ip).toNormalizedString()),
);

type IPv4 = ipaddr.IPv4;
type IPv6 = ipaddr.IPv6;

/** Returns why `address` is not acceptable as an agent address, or null when it is. */
export function addressProblem(address: string): string | null {
  const a = unbracket(address);
  if (a.includes(":")) {
    const ip = parseIPv6(a);
    return ip ? ipv6Problem(ip) : "expected an IP address or a host name";
  }
  if (isIP(a) === 4) return ipv4Problem(ipaddr.IPv4.parse(a));
  if (!HOSTNAME.test(a)) return "expected an IP address or a host name";
  // A URL parser reads a name whose last label is a number (`2852039166`, `0xa9fea9fe`,
  // `169.254.43518`) as an IPv4 address: only the canonical dotted form is accepted.
  const last = a.split(".").at(-1)!;
  if (/^(0x[0-9a-f]*|\d+)$/i.test(last)) return "expected an IP address in dotted form";
  if (METADATA_HOSTS.has(a.toLowerCase())) return "metadata addresses are not allowed";
  return null;
}

/** The base URL of an agent's Ollama; an IPv6 address bracketed, in its canonical form. */
export function ollamaBaseUrl(address: string, port: number): string {
  const a = unbracket(address);
  if (a.includes(":")) {
    const ip = parseIPv6(a);
    return `http://[${ip ? ip.toRFC5952String() : a}]:${port}`;
  }
  return `http://${a}:${port}`;
}

/**
 * Whether `address` may be this machine: a loopback address, `localhost`, this machine's host
 * name, or an address of one of its network interfaces. Only such an address can be the
 * coordinator itself, so only it is probed at registration; other addresses are never contacted
 * then (a coordinator elsewhere is caught by the loop guard when a request comes back).
 */
export function mayBeThisMachine(address: string): boolean {
  const a = unbracket(address).toLowerCase();
  const ip = a.includes(":") ? parseIPv6(a) : isIP(a) === 4 ? ipaddr.IPv4.parse(a) : null;
  if (!ip) {
    const host = hostname().toLowerCase();
    return a === "localhost" || a.endsWith(".localhost") || a === host ||
      a === host.split(".")[0] || host.startsWith(`${a}.`);
  }
  const plain = ip.kind() === "ipv6" && (ip as IPv6).isIPv4MappedAddress()
    ? (ip as IPv6).toIPv4Address()
    : ip;
  if (plain.range() === "loopback" || plain.range() === "unspecified") return true;
  const key = plain.toNormalizedString();
  let interfaces: Deno.NetworkInterfaceInfo[];
  try {
    interfaces = Deno.networkInterfaces();
  } catch {
    return false; // without the permission to list them, only loopback counts
  }
  return interfaces.some((i) => {
    const own = ipaddr.isValid(i.address) ? ipaddr.process(i.address) : null;
    return own !== null && own.kind() === plain.kind() && own.toNormalizedString() === key;
  });
}

/** Where an Ollama listens, as an agent registers it. */
export interface Endpoint {
  address: string;
  port: number;
}

/**
 * Whether two registered endpoints are one Ollama: the same port, and the same address by value,
 * or both addresses of this machine (its Ollama registered as `127.0.0.1` by the coordinator and
 * as the machine's LAN address by an agent beside it).
 */
export function sameOllama(a: Endpoint, b: Endpoint): boolean {
  if (a.port !== b.port) return false;
  if (
    ollamaBaseUrl(a.address, a.port).toLowerCase() ===
      ollamaBaseUrl(b.address, b.port).toLowerCase()
  ) {
    return true;
  }
  return mayBeThisMachine(a.address) && mayBeThisMachine(b.address);
}

function unbracket(address: string): string {
  return address.trim().replace(/^\[(.*)\]$/, "$1");
}

/** An IPv6 address as the URL parser reads it, or null when it reads none (zone ids included). */
function parseIPv6(a: string): IPv6 | null {
  let host: string;
  try {
    host = new URL(`http://[${a}]/`).hostname;
  } catch {
    return null;
  }
  return ipaddr.IPv6.parse(host.slice(1, -1));
}

function ipv4Problem(ip: IPv4): string | null {
  if (METADATA_IPS.has(ip.toNormalizedString())) return "metadata addresses are not allowed";
  switch (ip.range()) {
    case "linkLocal":
      return "link-local and metadata addresses are not allowed";
    case "unspecified":
      return "the unspecified address is not allowed";
    case "multicast":
    case "broadcast":
      return "multicast and reserved addresses are not allowed";
  }
  if (ip.octets[0] >= 240) return "multicast and reserved addresses are not allowed";
  return null;
}

function ipv6Problem(ip: IPv6): string | null {
  if (METADATA_IPS.has(ip.toNormalizedString())) return "metadata addresses are not allowed";
  switch (ip.range()) {
    case "unspecified":
      return "the unspecified address is not allowed";
    case "linkLocal":
      return "link-local addresses are not allowed";
    case "multicast":
      return "multicast addresses are not allowed";
  }
  for (const v4 of embeddedIPv4(ip)) {
    const problem = ipv4Problem(v4);
    if (problem) return `${problem} (embedded in ${ip.toRFC5952String()})`;
  }
  return null;
}

/** The IPv4 addresses an IPv6 address carries, by the translation schemes that carry one. */
function embeddedIPv4(ip: IPv6): IPv4[] {
  const b = ip.toByteArray();
  const v4 = (i: number) => new ipaddr.IPv4(b.slice(i, i + 4));
  const zero = (from: number, to: number) => b.slice(from, to).every((x) => x === 0);
  switch (ip.range()) {
    case "ipv4Mapped": // ::ffff:a.b.c.d
    case "rfc6145": // ::ffff:0:a.b.c.d
      return [v4(12)];
    case "rfc6052": // NAT64: 64:ff9b::a.b.c.d, or 64:ff9b:1::/48 with the address around the u octet
      return ip.match(ipaddr.IPv6.parse("64:ff9b::"), 96)
        ? [v4(12)]
        : [new ipaddr.IPv4([b[6], b[7], b[9], b[10]])];
    case "6to4": // 2002:aabb:ccdd::
      return [v4(2)];
    case "teredo": // 2001:0:server:flags:port:~client
      return [v4(4), new ipaddr.IPv4(b.slice(12, 16).map((x) => ~x & 255))];
  }
  // IPv4-compatible (deprecated): ::a.b.c.d (:: and ::1 have ranges of their own).
  if (ip.range() === "unicast" && zero(0, 12)) return [v4(12)];
  return [];
}
