/**
 * The request log API: `GET /api/requests` with filters, as JSON or exported as CSV or JSON.
 */
import { Hono } from "hono";
import { z } from "zod";
import { describeIssues, ollamaError } from "@oc/shared";
import type { RequestLog, RequestQuery, RequestRecord } from "../../telemetry/request_log.ts";
import { access } from "../../http/access.ts";
import { json } from "../../http/json.ts";

const time = z.string().max(64).refine((s) => Number.isFinite(Date.parse(s)), "expected a date")
  .transform((s) => new Date(s).toISOString());

/** The filters of the request log, as query parameters (empty ones are ignored). */
export const RequestFilter = z.object({
  limit: z.coerce.number().int().min(1).max(10_000).default(100),
  model: z.string().trim().min(1).max(512).optional(),
  agent_id: z.string().trim().min(1).max(128).optional(),
  status: z.enum(["ok", "error"]).optional(),
  route: z.string().trim().min(1).max(128).optional(),
  key_id: z.string().trim().min(1).max(128).optional(),
  since: time.optional(),
  until: time.optional(),
  format: z.enum(["json", "csv"]).optional(),
}).strict();
export type RequestFilter = z.infer<typeof RequestFilter>;

/** Parses query parameters into a filter, or says what is wrong with them. */
export function parseRequestFilter(
  query: Record<string, string>,
): { ok: true; filter: RequestFilter } | { ok: false; error: string } {
  const given = Object.fromEntries(Object.entries(query).filter(([, v]) => v.trim() !== ""));
  const r = RequestFilter.safeParse(given);
  if (!r.success) return { ok: false, error: describeIssues(r.error.issues) };
  return { ok: true, filter: r.data };
}

/** The request log query for a filter. */
export function toQuery(f: RequestFilter): RequestQuery {
  return {
    limit: f.limit,
    model: f.model,
    agentId: f.agent_id,
    status: f.status,
    route: f.route,
    keyId: f.key_id,
    since: f.since,
    until: f.until,
  };
}

/** Columns of the CSV export, in order. */
export const CSV_COLUMNS: (keyof RequestRecord)[] = [
  "at",
  "id",
  "route",
  "model",
  "agent_name",
  "agent_id",
  "status",
  "latency_ms",
  "ttft_ms",
  "queued_ms",
  "tokens_in",
  "tokens_out",
  "tokens_per_second",
  "attempts",
  "error",
  "client_request_id",
  "key_id",
];

function csvCell(v: unknown): string {
  if (v === null || v === undefined) return "";
  if (typeof v === "number") return String(v);
  let s = String(v);
  // Model names and errors come from clients: a cell a spreadsheet would run as a formula is
  // quoted as text.
  if (/^[=+\-@\t\r]/.test(s)) s = "'" + s;
  return /[",\r\n]/.test(s) ? `"${s.replaceAll('"', '""')}"` : s;
}

/** Renders records as CSV (RFC 4180, CRLF line ends, a header row). */
export function toCsv(records: RequestRecord[]): string {
  const lines = [CSV_COLUMNS.join(",")];
  for (const r of records) lines.push(CSV_COLUMNS.map((c) => csvCell(r[c])).join(","));
  return lines.join("\r\n") + "\r\n";
}

/** The request log routes (admin only, like every management API). */
export function requestRoutes(ctx: { log?: RequestLog; now: () => number }): Hono {
  const app = new Hono();

  app.get("/api/requests", access.admin, async (c) => {
    const parsed = parseRequestFilter(c.req.query());
    if (!parsed.ok) return ollamaError(400, parsed.error);
    const f = parsed.filter;
    const records = await ctx.log?.query(toQuery(f)) ?? [];
    if (!f.format) return json(records);
    const stamp = new Date(ctx.now()).toISOString().slice(0, 19).replaceAll(":", "-");
    const filename = `requests-${stamp}.${f.format}`;
    const disposition = `attachment; filename="${filename}"`;
    if (f.format === "json") return json(records, 200, { "content-disposition": disposition });
    return new Response(toCsv(records), {
      headers: { "content-type": "text/csv; charset=utf-8", "content-disposition": disposition },
    });
  });

  return app;
}
