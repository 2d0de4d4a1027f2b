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
    const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(lower);
    return mapped ? addressProblem(mapped[1]) : null;
  }
  if (!HOSTNAME.test(a)) return "expected an IP address or a host name";
  if (METADATA_HOSTS.has(a.toLowerCase())) return "metadata addresses are not allowed";
  return null;
}

/** The base URL of an agent's Ollama, with IPv6 addresses bracketed. */
export function ollamaBaseUrl(address: string, port: number): string {
  const a = address.trim().replace(/^\[(.*)\]$/, "$1");
  return isIP(a) === 6 ? `http://[${a}]:${port}` : `http://${a}:${port}`;
}
