/** One agent's page: its state, resources, models and charts, live; rename, label, drain, remove. */
import type { ComponentChildren } from "preact";
import { useEffect, useState } from "preact/hooks";
import type { AgentRow, StatsMessage } from "../wire.ts";
import type { AgentFigures, AgentSeries, Range } from "../wire.ts";
import { api } from "../lib/api.ts";
import { useAction } from "../lib/action.ts";
import { Chart, ChartsHead, mergeTail } from "../lib/chart.tsx";
import { fmtBytes, fmtDateTime, fmtMs, fmtNum, fmtPercent } from "../lib/format.ts";
import { listen, tick } from "../lib/live.ts";
import { agentName } from "../lib/models.ts";
import { Ago, Card, Labels, MemoryMeter, Meter, StatusPill } from "../lib/ui.tsx";

/** Props of the agent island. */
export interface AgentDetailProps {
  agent: AgentRow;
  figures: AgentFigures;
  series: AgentSeries;
  serverNow: number;
}

/** Points a chart keeps (5 s × 60 or 1 min × 60). */
const SIZE: Record<Range, number> = { "5m": 60, "1h": 60 };
const NO_FIGURES: AgentFigures = {
  requests: 0,
  requests_per_second: 0,
  tokens_per_second: null,
  errors: 0,
  mean_latency_ms: null,
};

function Fact({ label, children }: { label: string; children: ComponentChildren }) {
  return (
    <>
      <dt>{label}</dt>
      <dd>{children}</dd>
    </>
  );
}

/** The live agent view with its actions. */
export default function AgentDetail(props: AgentDetailProps) {
  const id = props.agent.id;
  const [agent, setAgent] = useState(props.agent);
  const [figures, setFigures] = useState(props.figures);
  const [series, setSeries] = useState(props.series);
  const [removed, setRemoved] = useState(false);
  const [editing, setEditing] = useState(false);
  const [draft, setDraft] = useState({ display_name: "", labels: "", weight: "1" });
  const { busy, error, run: act } = useAction();
  const range = series.range;

  useEffect(() => {
    tick();
    const loadSeries = (r: Range) =>
      api<{ figures: AgentFigures; series: AgentSeries; agent: AgentFigures }>(
        `/api/stats?agent_id=${encodeURIComponent(id)}&range=${r}`,
      ).then((res) => {
        setFigures(res.agent);
        setSeries(res.series);
      });
    return listen({
      on(event, data) {
        if (event === "agents") {
          const mine = (data as AgentRow[]).find((a) => a.id === id);
          if (mine) setAgent(mine);
        } else if (event === "removed") {
          if ((data as string[]).includes(id)) setRemoved(true);
        } else if (event === "stats") {
          const m = data as StatsMessage;
          setFigures(m.agents[id] ?? NO_FIGURES);
          if (m.agent?.id === id) {
            setSeries((s) => mergeTail(s, m.agent!.tail[s.range], SIZE[s.range]));
          }
        }
      },
      resync: () => {
        void api<{ agents: AgentRow[] }>("/api/fleet").then((f) => {
          const mine = f.agents.find((a) => a.id === id);
          if (mine) setAgent(mine);
          else setRemoved(true);
        }).catch(() => {});
        setSeries((s) => {
          void loadSeries(s.range).catch(() => {});
          return s;
        });
      },
    });
  }, []);

  const patch = (body: Record<string, unknown>) =>
    act(async () => {
      const view = await api<AgentRow>(`/api/agents/${id}`, { method: "PATCH", json: body });
      setAgent((a) => ({
        ...a,
        ...view,
        drain: typeof body.drain === "boolean" ? body.drain : a.drain,
      }));
    });
  const remove = () => {
    if (!confirm(`Remove agent "${agentName(agent)}"? It registers again when it next reports.`)) {
      return;
    }
    void act(async () => {
      await api(`/api/agents/${id}`, { method: "DELETE" });
      location.href = "/dashboard/agents";
    });
  };
  const edit = () => {
    setDraft({
      display_name: agent.display_name ?? "",
      labels: agent.labels.join(", "),
      weight: String(agent.weight),
    });
    setEditing(!editing);
  };
  const field = (key: keyof typeof draft) => ({
    value: draft[key],
    onInput: (e: Event) => setDraft((d) => ({ ...d, [key]: (e.target as HTMLInputElement).value })),
  });
  const save = (e: Event) => {
    e.preventDefault();
    void patch({
      display_name: draft.display_name.trim() || null,
      labels: draft.labels.split(/[\s,]+/).filter(Boolean),
      weight: Number(draft.weight),
    }).then((ok) => ok && setEditing(false));
  };
  const pick = (r: Range) => {
    if (r !== range) {
      void api<{ series: AgentSeries }>(`/api/stats?agent_id=${encodeURIComponent(id)}&range=${r}`)
        .then((res) => setSeries(res.series)).catch(() => {});
    }
  };

  const m = agent.metrics;
  const gpus = m?.gpus ?? [];
  const loaded = new Set(agent.loaded_models.map((l) => l.name));
  return (
    <div class="agent-detail" data-agent-id={id} data-status={agent.status}>
      <div class="detail-head">
        <div>
          <nav class="crumbs" aria-label="Breadcrumb">
            <a href="/dashboard/agents">Agents</a> /{" "}
            <span aria-current="page">{agentName(agent)}</span>
          </nav>
          <h1>
            {agentName(agent)} <StatusPill status={agent.status} reason={agent.status_reason} />
          </h1>
          <p class="muted">
            {agent.machine_name} · {agent.ip_address}:{agent.ollama_port}
            {agent.status_reason ? ` · ${agent.status_reason}` : ""}
          </p>
          <Labels labels={agent.labels} />
        </div>
        <div class="actions">
          <button
            type="button"
            class={agent.drain ? "primary" : ""}
            disabled={busy || removed}
            onClick={() => void patch({ drain: !agent.drain })}
            title={agent.drain
              ? "Send new requests to this agent again"
              : "Let running requests finish; send no new ones"}
          >
            {agent.drain ? "Enable" : "Drain"}
          </button>
          <button type="button" disabled={busy || removed} onClick={edit}>Edit</button>
          <button type="button" class="danger" disabled={busy || removed} onClick={remove}>
            Remove
          </button>
        </div>
      </div>
      {removed && <p class="notice" role="status">This agent was removed.</p>}
      {error && <p class="error" role="alert">{error}</p>}
      {editing && (
        <form class="edit panel" onSubmit={save}>
          <label>
            <span class="label">Display name</span>
            <input
              name="display_name"
              {...field("display_name")}
              placeholder={agent.machine_name}
              maxLength={128}
            />
          </label>
          <label>
            <span class="label">Labels (comma-separated)</span>
            <input name="labels" {...field("labels")} placeholder="gpu, rack-2, zone=a" />
          </label>
          <label>
            <span class="label">Weight</span>
            <input name="weight" type="number" min="0" max="100" step="0.1" {...field("weight")} />
          </label>
          <div class="actions">
            <button type="submit" class="primary" disabled={busy}>Save</button>
            <button type="button" onClick={() => setEditing(false)}>Cancel</button>
          </div>
        </form>
      )}
      <section class="cards" aria-label="Figures">
        <Card
          label="In flight"
          window="now"
          value={`${agent.in_flight} / ${agent.capacity}`}
          sub={`parallel ${agent.parallel} × weight ${agent.weight}`}
        />
        <Card
          label="Requests"
          window="1 h"
          value={String(figures.requests)}
          sub={`${fmtNum(figures.requests_per_second, 2)}/s over 1 min`}
        />
        <Card
          label="Tokens / s"
          window="5 min"
          value={fmtNum(figures.tokens_per_second, 0)}
          sub="generation speed"
        />
        <Card
          label="Mean latency"
          window="1 h"
          value={fmtMs(figures.mean_latency_ms)}
          sub="successful requests"
        />
        <Card
          label="Errors"
          window="1 h"
          value={String(figures.errors)}
          sub="failed requests →"
          tone={figures.errors ? "bad" : undefined}
          href={`/dashboard/requests?agent_id=${encodeURIComponent(id)}&status=error`}
          cta
        />
      </section>
      <div class="grid2">
        <section class="panel">
          <h2>Machine</h2>
          <dl class="facts">
            <Fact label="Ollama">{agent.ollama_version}</Fact>
            <Fact label="Agent">{agent.agent_version ?? "–"}</Fact>
            <Fact label="Registered">{fmtDateTime(agent.registered_at)}</Fact>
            <Fact label="Last seen">
              <Ago at={agent.last_seen} serverNow={props.serverNow} />
            </Fact>
            <Fact label="CPU">
              {m ? <Meter value={m.cpu_usage / 100} text={fmtPercent(m.cpu_usage)} /> : "–"}
            </Fact>
            <Fact label="Memory">
              <MemoryMeter metrics={m} />
            </Fact>
            {gpus.length === 0 && <Fact label="GPU">none reported</Fact>}
            {gpus.map((g, i) => (
              <Fact label={gpus.length > 1 ? `GPU ${i}` : "GPU"} key={i}>
                <div class="small">
                  {g.name}
                  {g.temperature !== undefined ? ` · ${Math.round(g.temperature)} °C` : ""}
                </div>
                <Meter
                  value={g.utilization === undefined ? null : g.utilization / 100}
                  text={`${fmtPercent(g.utilization)} busy`}
                />
                {g.memory_total
                  ? (
                    <Meter
                      value={(g.memory_used ?? 0) / g.memory_total}
                      text={`${fmtBytes(g.memory_used)} / ${fmtBytes(g.memory_total)} VRAM`}
                    />
                  )
                  : null}
              </Fact>
            ))}
          </dl>
        </section>
        <section class="panel">
          <h2>Models</h2>
          <div class="table-wrap">
            <table class="compact">
              <thead>
                <tr>
                  <th>Name</th>
                  <th class="num">Size</th>
                  <th>Quant.</th>
                  <th>State</th>
                </tr>
              </thead>
              <tbody>
                {agent.models.map((x) => (
                  <tr key={x.name}>
                    <td>{x.name}</td>
                    <td class="num">{fmtBytes(x.size)}</td>
                    <td>{x.details?.quantization_level ?? "–"}</td>
                    <td>
                      {loaded.has(x.name)
                        ? <span class="pill loaded">loaded</span>
                        : <span class="muted">on disk</span>}
                    </td>
                  </tr>
                ))}
                {agent.models.length === 0 && (
                  <tr>
                    <td colSpan={4} class="empty">No model installed.</td>
                  </tr>
                )}
              </tbody>
            </table>
          </div>
        </section>
      </div>
      <ChartsHead range={range} onPick={pick} />
      <section class="charts">
        <Chart
          title="Requests per second"
          t={series.t}
          lines={[{ label: "req/s", values: series.rps }]}
          format={(v) => fmtNum(v, 2)}
          minMax={1}
        />
        <Chart
          title="Tokens per second"
          t={series.t}
          lines={[{ label: "tok/s", values: series.tps }]}
          format={(v) => fmtNum(v, 0)}
          minMax={10}
        />
        <Chart
          title="Mean latency"
          t={series.t}
          lines={[{ label: "mean", values: series.mean_latency }]}
          format={fmtMs}
          minMax={100}
        />
      </section>
    </div>
  );
}
