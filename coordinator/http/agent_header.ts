/**
 * The `X-Coordinator-Agent` header, both ways. On responses it names the agent that served the
 * request; on requests it pins one (`all` for every agent on pull and push).
 *
 * Agent names are free text (`gpu-箱`, an en dash, an emoji) but a header value is bytes, and
 * `Headers.set` throws on anything outside Latin-1, which turned every answer of such an agent
 * into a 500. Names are therefore sent with RFC 8187's percent-encoding (without its charset
 * prefix): visible ASCII and spaces stay as they are, `%` and every other character become the
 * `%XX` escapes of their UTF-8 bytes (`gpu-箱` → `gpu-%E7%AE%B1`). A request header is matched
 * as sent, percent-decoded, or as raw UTF-8 bytes (what `curl -H` sends), so a client can send
 * back exactly what it received.
 */
import type { Agent, Registry } from "../fleet/registry.ts";
import type { Pin } from "../scheduler/placement.ts";

/** The header's name. */
export const AGENT_HEADER = "x-coordinator-agent";

/** Printable ASCII but `%`: what a name keeps as it is. */
const PLAIN = /^[\x20-\x24\x26-\x7e]*$/;

/** An agent's name as an `X-Coordinator-Agent` value; plain ASCII names are unchanged. */
export function agentHeaderValue(name: string): string {
  if (PLAIN.test(name)) return name;
  let out = "";
  for (const byte of new TextEncoder().encode(name)) {
    out += byte >= 0x20 && byte <= 0x7e && byte !== 0x25
      ? String.fromCharCode(byte)
      : `%${byte.toString(16).toUpperCase().padStart(2, "0")}`;
  }
  return out;
}

/** The names a received `X-Coordinator-Agent` value may stand for, as sent first. */
export function agentRefs(value: string): string[] {
  const refs = [value];
  if (/%[0-9a-f]{2}/i.test(value)) {
    try {
      refs.push(decodeURIComponent(value));
    } catch { /* not our encoding: the value as sent is all there is */ }
  }
  // Header bytes arrive as Latin-1 characters: raw UTF-8 from a client is decoded as UTF-8.
  if (/[\x80-\xff]/.test(value) && !/[\u0100-\uffff]/.test(value)) {
    try {
      const bytes = Uint8Array.from(value, (ch) => ch.charCodeAt(0));
      refs.push(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
    } catch { /* not UTF-8 */ }
  }
  return [...new Set(refs)];
}

/**
 * What a request's `X-Coordinator-Agent` asks for: undefined when absent, `"all"`, or the agents
 * it names by id, display name or machine name (id matches first; empty when none matches).
 */
export function pinOf(registry: Pick<Registry, "all" | "get">, headers: Headers): Pin {
  const value = headers.get(AGENT_HEADER);
  if (!value) return undefined;
  if (value === "all") return "all";
  const refs = agentRefs(value);
  const byId = refs.map((r) => registry.get(r)).filter((a): a is Agent => a !== undefined);
  const byName = registry.all().filter((a) =>
    !byId.includes(a) &&
    refs.some((r) => a.displayName === r || a.machineName === r)
  );
  return [...byId, ...byName];
}
