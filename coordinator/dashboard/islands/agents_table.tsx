/** The agents page: every agent with its health and load, sortable and filterable, live. */
import { useEffect, useState } from "preact/hooks";
import type { AgentRow, StatsMessage } from "../wire.ts";
import type { AgentFigures } from "../wire.ts";
import { api } from "../lib/api.ts";
import { fmtBytes, fmtNum, fmtPercent } from "../lib/format.ts";
import { applyAgentMessage, listen, tick } from "../lib/live.ts";
import { agentName } from "../lib/models.ts";
import { Ago, gpuSummary, Labels, MemoryMeter, Meter, StatusPill } from "../lib/ui.tsx";

/** Columns that can be sorted. */
export const SORTS = {
  name: "Name",
  status: "Status",
  version: "Ollama",
  cpu: "CPU",
  memory: "Memory",
  gpu: "GPU",
  load: "In flight",
  models: "Models",
  seen: "Last seen",
  requests: "Requests",
  tps: "Tok/s",
} as const;
/** A sortable column. */
export type SortKey = keyof typeof SORTS;

/** Props of the agents table. */
export interface AgentsTableProps {
  agents: AgentRow[];
  figures: Record<string, AgentFigures>;
  sort: SortKey;
  desc: boolean;
  q: string;
  status: string;
  /** The server's clock when it rendered (for "12 s ago" without JavaScript). */
  serverNow: number;
}

const STATUS_ORDER: Record<string, number> = { online: 0, draining: 1, offline: 2 };

function sortValue(a: AgentRow, f: AgentFigures | undefined, key: SortKey): number | string {
  switch (key) {
    case "name":
      return agentName(a).toLowerCase();
    case "status":
      return STATUS_ORDER[a.status] ?? 3;
    case "version":
      return a.ollama_version;
    case "cpu":
      return a.metrics?.cpu_usage ?? -1;
    case "memory":
      return a.metrics?.memory_usage ?? -1;
    case "gpu":
      return gpuSummary(a).util ?? -1;
    case "load":
      return a.in_flight / Math.max(1, a.capacity);
    case "models":
      return a.models.length;
    case "seen":
      return Date.parse(a.last_seen);
    case "requests":
      return f?.requests ?? 0;
    case "tps":
      return f?.tokens_per_second ?? -1;
  }
}

/** Filters by text (name, machine, address, labels, models) and status, then sorts. */
export function selectAgents(
  agents: AgentRow[],
  figures: Record<string, AgentFigures>,
  o: { sort: SortKey; desc: boolean; q: string; status: string },
): AgentRow[] {
  const q = o.q.trim().toLowerCase();
  const rows = agents.filter((a) => {
    if (o.status && a.status !== o.status) return false;
    if (!q) return true;
    const hay = [
      a.machine_name,
      a.display_name ?? "",
      a.ip_address,
      ...a.labels,
      ...a.models.map((m) => m.name),
    ]
      .join(" ").toLowerCase();
    return hay.includes(q);
  });
  const dir = o.desc ? -1 : 1;
  return rows.sort((x, y) => {
    const a = sortValue(x, figures[x.id], o.sort);
    const b = sortValue(y, figures[y.id], o.sort);
    const c = a < b ? -1 : a > b ? 1 : 0;
    return c * dir || agentName(x).localeCompare(agentName(y));
  });
}

function sortHref(p: { sort: SortKey; desc: boolean; q: string; status: string }, key: SortKey) {
  const q = new URLSearchParams();
  q.set("sort", key);
  if (p.sort === key && !p.desc) q.set("dir", "desc");
  if (p.q) q.set("q", p.q);
  if (p.status) q.set("status", p.status);
  return `?${q}`;
}

/** The live agents table. */
export default function AgentsTable(props: AgentsTableProps) {
  const [agents, setAgents] = useState(props.agents);
  const [figures, setFigures] = useState(props.figures);
  const [view, setView] = useState({
    sort: props.sort,
    desc: props.desc,
    q: props.q,
    status: props.status,
  });

  useEffect(() => {
    tick();
    return listen({
      on(event, data) {
        if (event === "stats") setFigures((data as StatsMessage).agents);
        else setAgents((list) => applyAgentMessage(list, event, data));
      },
      resync: () =>
        void api<{ agents: AgentRow[]; figures: Record<string, AgentFigures> }>("/api/fleet")
          .then((s) => {
            setAgents(s.agents);
            setFigures(s.figures);
          }).catch(() => {}),
    });
  }, []);

  const update = (change: Partial<typeof view>) => {
    const next = { ...view, ...change };
    setView(next);
    const q = new URLSearchParams();
    if (next.sort !== "name") q.set("sort", next.sort);
    if (next.desc) q.set("dir", "desc");
    if (next.q) q.set("q", next.q);
    if (next.status) q.set("status", next.status);
    history.replaceState(null, "", `${location.pathname}${q.size ? `?${q}` : ""}`);
  };

  const rows = selectAgents(agents, figures, view);
  const head = (key: SortKey, cls?: string) => (
    <th
      class={cls}
      aria-sort={view.sort === key ? (view.desc ? "descending" : "ascending") : undefined}
    >
      <a
        href={sortHref(view, key)}
        onClick={(e) => {
          e.preventDefault();
          update({ sort: key, desc: view.sort === key ? !view.desc : false });
        }}
      >
        {SORTS[key]}
        {view.sort === key && <span class="arrow">{view.desc ? " ↓" : " ↑"}</span>}
      </a>
    </th>
  );
  return (
    <div>
      <form class="filters" method="get" onSubmit={(e) => e.preventDefault()}>
        <input
          type="search"
          name="q"
          placeholder="Filter by name, label, model…"
          value={view.q}
          aria-label="Filter agents"
          onInput={(e) => update({ q: (e.target as HTMLInputElement).value })}
        />
        <select
          name="status"
          aria-label="Status"
          value={view.status}
          onChange={(e) => update({ status: (e.target as HTMLSelectElement).value })}
        >
          <option value="">Any status</option>
          <option value="online">Online</option>
          <option value="draining">Draining</option>
          <option value="offline">Offline</option>
        </select>
        <button type="submit" class="nojs">Filter</button>
        <span class="count">{rows.length} of {agents.length} agents</span>
      </form>
      <div class="table-wrap">
        <table class="agents">
          <thead>
            <tr>
              {head("name")}
              {head("status")}
              {head("version", "hide-sm")}
              {head("cpu", "hide-sm")}
              {head("memory", "hide-sm")}
              {head("gpu", "hide-sm")}
              {head("load")}
              {head("models", "hide-sm")}
              {head("seen")}
              {head("requests", "num hide-sm")}
              {head("tps", "num")}
            </tr>
          </thead>
          <tbody>
            {rows.map((a) => {
              const m = a.metrics;
              const gpu = gpuSummary(a);
              const f = figures[a.id];
              return (
                <tr key={a.id} data-agent-id={a.id} data-status={a.status}>
                  <td>
                    <a class="strong" href={`/dashboard/agents/${a.id}`}>{agentName(a)}</a>
                    {a.display_name && a.display_name !== a.machine_name && (
                      <div class="muted small">{a.machine_name}</div>
                    )}
                    <Labels labels={a.labels} />
                  </td>
                  <td>
                    <StatusPill status={a.status} reason={a.status_reason} />
                  </td>
                  <td class="hide-sm">{a.ollama_version}</td>
                  <td class="hide-sm">
                    {m ? <Meter value={m.cpu_usage / 100} text={fmtPercent(m.cpu_usage)} /> : "–"}
                  </td>
                  <td class="hide-sm">
                    <MemoryMeter metrics={m} />
                  </td>
                  <td class="hide-sm">
                    {gpu.names
                      ? (
                        <span title={gpu.names}>
                          <Meter
                            value={gpu.util === null ? null : gpu.util / 100}
                            text={`${fmtPercent(gpu.util)}${
                              gpu.vramTotal
                                ? ` · ${fmtBytes(gpu.vramUsed)} / ${fmtBytes(gpu.vramTotal)}`
                                : ""
                            }`}
                          />
                        </span>
                      )
                      : <span class="muted">none</span>}
                  </td>
                  <td>
                    <Meter
                      value={a.in_flight / Math.max(1, a.capacity)}
                      text={`${a.in_flight} / ${a.capacity}`}
                      warnAt={1}
                    />
                  </td>
                  <td class="hide-sm">
                    <span title={a.models.map((x) => x.name).join("\n")}>
                      {a.models.length} installed
                    </span>
                    {a.loaded_models.length > 0 && (
                      <div class="small loaded">
                        {a.loaded_models.map((x) => x.name).join(", ")}
                      </div>
                    )}
                  </td>
                  <td>
                    <Ago at={a.last_seen} serverNow={props.serverNow} />
                  </td>
                  <td class="num hide-sm">{f?.requests ?? 0}</td>
                  <td class="num">{fmtNum(f?.tokens_per_second ?? null, 0)}</td>
                </tr>
              );
            })}
            {rows.length === 0 && (
              <tr>
                <td colSpan={11} class="empty">
                  {agents.length
                    ? "No agent matches the filter."
                    : "No agent has registered yet. Start one with deno task agent."}
                </td>
              </tr>
            )}
          </tbody>
        </table>
      </div>
    </div>
  );
}
