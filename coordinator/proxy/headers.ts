/**
 * Which headers cross the proxy, both ways. Upstream goes only what Ollama reads (never the
 * client's credentials) and the loop guard's hop list. Back to the client goes the agent's answer
 * head less what belongs to the agent's connection or could act on the coordinator's own origin:
 * hop-by-hop headers (RFC 9110 §7.6.1, and any the agent's `Connection` names), cookies, auth
 * challenges, HSTS and Alt-Svc, CORS (the coordinator answers CORS itself), and framing (the
 * coordinator frames the body itself).
 */
import { AGENT_HEADER, agentHeaderValue } from "../http/agent_header.ts";
import { HOP_HEADER } from "../http/loop.ts";

const FORWARDED_REQUEST_HEADERS = ["content-type", "accept", "user-agent"];

const DROPPED_RESPONSE_HEADERS = new Set([
  // Hop-by-hop.
  "connection",
  "proxy-connection",
  "keep-alive",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
  // Framing and the agent's own identity.
  "content-length",
  "date",
  "server",
  // Would act on the coordinator's origin.
  "set-cookie",
  "set-cookie2",
  "www-authenticate",
  "proxy-authenticate",
  "strict-transport-security",
  "alt-svc",
  "clear-site-data",
]);

/** Headers sent to an agent: what Ollama reads, and this coordinator's hop list. */
export function upstreamRequestHeaders(client: Headers, hops: string): [string, string][] {
  const out: [string, string][] = [];
  for (const name of FORWARDED_REQUEST_HEADERS) {
    const v = client.get(name);
    if (v !== null) out.push([name, v]);
  }
  out.push([HOP_HEADER, hops]);
  return out;
}

/** Whether an agent's response header may reach the client. */
function passes(name: string, named: Set<string> | undefined): boolean {
  return !DROPPED_RESPONSE_HEADERS.has(name) && !name.startsWith("access-control-") &&
    !named?.has(name);
}

/**
 * The head of a proxied answer: the agent's headers that may reach the client (names in lower
 * case), then which agent served it, by name, and the request id. Pairs rather than `Headers`:
 * a `Response` takes them as they are, where a `Headers` is sorted again to be read.
 */
export function clientResponseHeaders(
  upstream: Iterable<[string, string]>,
  options: { agentName: string; requestId: string },
): [string, string][] {
  const pairs = [...upstream];
  // Headers the agent's Connection header names are hop-by-hop too (rare: only then a set).
  let named: Set<string> | undefined;
  for (const [name, value] of pairs) {
    if (name !== "connection") continue;
    named ??= new Set();
    for (const token of value.split(",")) named.add(token.trim().toLowerCase());
  }
  const out: [string, string][] = [];
  for (const pair of pairs) {
    const name = pair[0];
    // Ours replace the agent's own.
    if (name === AGENT_HEADER || name === "x-request-id") continue;
    if (passes(name, named)) out.push(pair);
  }
  out.push([AGENT_HEADER, agentHeaderValue(options.agentName)]);
  out.push(["x-request-id", options.requestId]);
  return out;
}
