/**
 * Request-log rows for tests: a plain successful chat, changed by what a test is about.
 */
import type { RequestRecord } from "../store/mod.ts";

/** A row of the request log: `/api/chat`, 200, one attempt, no agent, no figures; then `over`. */
export function requestRecord(id: string, over: Partial<RequestRecord> = {}): RequestRecord {
  return {
    id,
    at: new Date().toISOString(),
    route: "/api/chat",
    model: null,
    agent_id: null,
    agent_name: null,
    status: 200,
    latency_ms: 1,
    ttft_ms: null,
    queued_ms: null,
    tokens_in: null,
    tokens_out: null,
    tokens_per_second: null,
    attempts: 1,
    error: null,
    ...over,
  };
}
