/**
 * Validation of the address an agent advertises. The coordinator will send users' prompts
 * there, so only plain host names and IP addresses are accepted, never link-local or cloud
 * metadata addresses, and never anything with a scheme, path or credentials.
 */
import { isIP } from "node:net";

const HOSTNAME =
  /^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/i;
const METADATA_HOSTS = new Set(["metadata.google.internal", "metadata", "instance-data"]);

/** Returns why `address` is not acceptable as an agent address, or null when it is. */
export function addressProblem(address: string): string | null {
  const a = address.trim().replace(/^\[(.*)\]$/, "$1");
  const family = isIP(a);
  if (family === 4) {
    const [x, y] = a.split(".").map(Number);
    if (x === 169 && y === 254) return "link-local and metadata addresses are not allowed";
    if (x === 0) return "the unspecified address is not allowed";
    if (x >= 224) return "multicast and reserved addresses are not allowed";
    return null;
  }
  if (family === 6) {
    const lower = a.toLowerCase();
    if (lower === "::") return "the unspecified address is not allowed";
    if (/^fe[89ab]/.test(lower)) return "link-local addresses are not allowed";
    if (lower.startsWith("ff")) return "multicast addresses are not allowed";
    if (lower.startsWith("fd00:ec2::254")) return "metadata addresses are not allowed";
    // IPv4-mapped addresses (`::ffff:169.254.169.254`, `::ffff:a9fe:a9fe`) are checked as IPv4.
    const mapped = mappedIPv4(lower);
    return mapped ? addressProblem(mapped) : null;
  }
  if (!HOSTNAME.test(a)) return "expected an IP address or a host name";
  // A URL parser reads a name whose last label is a number (`2852039166`, `0xa9fea9fe`,
  // `169.254.43518`) as an IPv4 address: only the canonical dotted form is accepted.
  const last = a.split(".").at(-1)!;
  if (/^(0x[0-9a-f]*|\d+)$/i.test(last)) return "expected an IP address in dotted form";
  if (METADATA_HOSTS.has(a.toLowerCase())) return "metadata addresses are not allowed";
  return null;
}

/** The base URL of an agent's Ollama, with IPv6 addresses bracketed. */
export function ollamaBaseUrl(address: string, port: number): string {
  const a = address.trim().replace(/^\[(.*)\]$/, "$1");
  return isIP(a) === 6 ? `http://[${a}]:${port}` : `http://${a}:${port}`;
}

/** The IPv4 address inside an IPv4-mapped IPv6 address, or null. */
function mappedIPv4(ipv6: string): string | null {
  const dotted = /^(?:0{0,4}:){0,4}:?:ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(ipv6);
  if (dotted) return dotted[1];
  const hex = /^(?:0{0,4}:){0,4}:?:ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(ipv6);
  if (!hex) return null;
  const hi = parseInt(hex[1], 16);
  const lo = parseInt(hex[2], 16);
  return [hi >> 8, hi & 255, lo >> 8, lo & 255].join(".");
}
