/** The requests page: the recent request log with filters and exports; new requests appear live. */
import { Fragment } from "preact";
import { useEffect, useState } from "preact/hooks";
import type { RequestRecord } from "../wire.ts";
import { api } from "../lib/api.ts";
import { fmtMs, fmtNum, fmtTime } from "../lib/format.ts";
import { listen } from "../lib/live.ts";

/** The filters the page offers (a subset of `GET /api/requests`'s). */
export interface LogFilter {
  model?: string;
  agent_id?: string;
  status?: "ok" | "error";
  route?: string;
  limit: number;
}

/** Props of the request log island. */
export interface RequestLogProps {
  rows: RequestRecord[];
  filter: LogFilter;
  agents: { id: string; name: string }[];
  routes: string[];
}

/** Whether a record passes the filter (as the server's query would decide). */
export function matches(r: RequestRecord, f: LogFilter): boolean {
  if (f.model && r.model !== f.model) return false;
  if (f.agent_id && r.agent_id !== f.agent_id) return false;
  if (f.route && r.route !== f.route) return false;
  if (f.status === "ok" && r.status >= 400) return false;
  if (f.status === "error" && r.status < 400) return false;
  return true;
}

/** The filter as query parameters. */
export function filterQuery(f: LogFilter, extra: Record<string, string> = {}): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries({ ...f, ...extra })) {
    if (v !== undefined && v !== "" && !(k === "limit" && v === 100)) q.set(k, String(v));
  }
  return q.toString();
}

/**
 * The list after live records arrive: every row in start-time order, newest first (as the
 * server's query sorts), at most `limit`. Records arrive when they finish, so a long request
 * lands below shorter ones that started after it.
 */
export function mergeByStart(
  list: RequestRecord[],
  added: RequestRecord[],
  limit: number,
): RequestRecord[] {
  const seen = new Set(list.map((r) => r.id));
  const merged = [...list, ...added.filter((r) => !seen.has(r.id))];
  // ISO times in UTC sort as strings; the sort is stable, so equal times keep their order.
  merged.sort((a, b) => a.at < b.at ? 1 : a.at > b.at ? -1 : 0);
  return merged.slice(0, limit);
}

function statusClass(s: number): string {
  return s < 400 ? "ok" : s === 499 ? "warn" : "bad";
}

/** The live request table. */
export default function RequestLog(props: RequestLogProps) {
  const [rows, setRows] = useState(props.rows);
  const [filter, setFilter] = useState(props.filter);
  const [draft, setDraft] = useState(props.filter);
  const [fresh, setFresh] = useState<Set<string>>(new Set());
  const [error, setError] = useState("");

  const load = (f: LogFilter) =>
    api<RequestRecord[]>(`/api/requests?${filterQuery(f)}`).then((r) => {
      setRows(r);
      setError("");
    }).catch((e) => setError((e as Error).message));

  useEffect(() => {
    let current = filter;
    const stop = listen({
      on(event, data) {
        if (event !== "requests") return;
        const added = (data as RequestRecord[]).filter((r) => matches(r, current));
        if (!added.length) return;
        setRows((list) => mergeByStart(list, added, current.limit));
        setFresh(new Set(added.map((r) => r.id)));
      },
      resync: () => void load(current),
    });
    return () => {
      current = { limit: 0 };
      stop();
    };
  }, [filter]);

  const submit = (e: Event) => {
    e.preventDefault();
    const get = (v: string | undefined) => v?.trim() || undefined;
    const next: LogFilter = {
      model: get(draft.model),
      agent_id: get(draft.agent_id),
      status: get(draft.status) as LogFilter["status"],
      route: get(draft.route),
      limit: filter.limit,
    };
    setFilter(next);
    const q = filterQuery(next);
    history.replaceState(null, "", `${location.pathname}${q ? `?${q}` : ""}`);
    void load(next);
  };

  const set = (key: keyof LogFilter) => (e: Event) =>
    setDraft((d) => ({ ...d, [key]: (e.target as HTMLInputElement).value }));
  const names = new Map(props.agents.map((a) => [a.id, a.name]));
  return (
    <div>
      <form class="filters" method="get" onSubmit={submit}>
        <input
          name="model"
          placeholder="Model"
          aria-label="Model"
          value={draft.model ?? ""}
          onInput={set("model")}
        />
        <select
          name="agent_id"
          aria-label="Agent"
          value={draft.agent_id ?? ""}
          onChange={set("agent_id")}
        >
          <option value="">Any agent</option>
          {props.agents.map((a) => <option value={a.id} key={a.id}>{a.name}</option>)}
        </select>
        <select name="route" aria-label="Route" value={draft.route ?? ""} onChange={set("route")}>
          <option value="">Any route</option>
          {props.routes.map((r) => <option value={r} key={r}>{r}</option>)}
        </select>
        <select
          name="status"
          aria-label="Status"
          value={draft.status ?? ""}
          onChange={set("status")}
        >
          <option value="">Any status</option>
          <option value="ok">Succeeded</option>
          <option value="error">Failed</option>
        </select>
        <button type="submit">Apply</button>
        <span class="spacer" />
        <a
          class="button"
          href={`/api/requests?${filterQuery(filter, { format: "csv", limit: "10000" })}`}
          download
        >
          Export CSV
        </a>
        <a
          class="button"
          href={`/api/requests?${filterQuery(filter, { format: "json", limit: "10000" })}`}
          download
        >
          Export JSON
        </a>
      </form>
      {error && <p class="error" role="alert">{error}</p>}
      <div class="table-wrap">
        <table class="requests">
          <thead>
            <tr>
              <th>Started</th>
              <th class="hide-sm">Route</th>
              <th>Model</th>
              <th>Agent</th>
              <th>Status</th>
              <th class="num">Latency</th>
              <th class="num hide-sm">TTFT</th>
              <th class="num hide-sm">Tokens</th>
              <th class="num hide-sm">Tok/s</th>
            </tr>
          </thead>
          <tbody>
            {rows.map((r) => (
              <Fragment key={r.id}>
                <tr
                  class={`${fresh.has(r.id) ? "fresh" : ""}${r.error ? " has-error" : ""}` ||
                    undefined}
                  data-request-id={r.id}
                >
                  <td class="nowrap">
                    <time dateTime={r.at}>{fmtTime(r.at)}</time>
                  </td>
                  <td class="mono hide-sm">{r.route}</td>
                  <td>{r.model ?? "–"}</td>
                  <td>
                    {r.agent_id
                      ? (
                        <a href={`/dashboard/agents/${r.agent_id}`}>
                          {r.agent_name ?? names.get(r.agent_id) ?? "agent"}
                        </a>
                      )
                      : <span class="muted">none</span>}
                  </td>
                  <td>
                    <span class={`status ${statusClass(r.status)}`}>{r.status}</span>
                    {r.attempts > 1 && <span class="muted small">×{r.attempts}</span>}
                  </td>
                  <td class="num">{fmtMs(r.latency_ms)}</td>
                  <td class="num hide-sm">{fmtMs(r.ttft_ms)}</td>
                  <td class="num nowrap hide-sm">{r.tokens_in ?? "–"} → {r.tokens_out ?? "–"}</td>
                  <td class="num hide-sm">{fmtNum(r.tokens_per_second, 0)}</td>
                </tr>
                {r.error && (
                  <tr
                    class={`error-row${fresh.has(r.id) ? " fresh" : ""}`}
                    data-error-for={r.id}
                  >
                    <td colSpan={9}>
                      <span class="error-label">Error</span>{" "}
                      <span class="error-text">{r.error}</span>
                      {r.status === 404 && !r.agent_id && (
                        <>
                          {" "}
                          <a href="/dashboard/models" class="small">
                            No online agent has this model: pull it from the Models page
                          </a>
                        </>
                      )}
                    </td>
                  </tr>
                )}
              </Fragment>
            ))}
            {rows.length === 0 && (
              <tr>
                <td colSpan={9} class="empty">
                  No request matches yet. They appear here as they finish.
                </td>
              </tr>
            )}
          </tbody>
        </table>
      </div>
    </div>
  );
}
