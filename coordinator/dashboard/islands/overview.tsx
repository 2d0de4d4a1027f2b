/** The overview: the fleet's figures now and their charts over 5 minutes or an hour. */
import { useEffect, useState } from "preact/hooks";
import {
  type FleetSummary,
  PERCENTILE_WINDOW_S,
  type Range,
  RATE_WINDOW_S,
  type Series,
  type StatsMessage,
} from "../wire.ts";
import { api } from "../lib/api.ts";
import { Chart, ChartsHead, mergeTail } from "../lib/chart.tsx";
import { fmtMs, fmtNum, fmtPct, fmtWindow } from "../lib/format.ts";
import { listen } from "../lib/live.ts";
import { Card } from "../lib/ui.tsx";

/** Props of the overview island. */
export interface OverviewProps {
  summary: FleetSummary;
  series: Series;
}

/** Points a chart keeps (5 s × 60 or 1 min × 60). */
const SIZE: Record<Range, number> = { "5m": 60, "1h": 60 };

/** Where the error-rate card leads: the requests that failed. */
export const FAILED_REQUESTS_HREF = "/dashboard/requests?status=error";

/** The line under the page title: how many agents are online, and what the others are doing. */
export function fleetHeadline(
  s: Pick<FleetSummary, "agents_online" | "agents_draining" | "agents_offline">,
): string {
  const total = s.agents_online + s.agents_draining + s.agents_offline;
  if (total === 0) return "No agent has registered yet.";
  let text = `${s.agents_online} of ${total} ${total === 1 ? "agent" : "agents"} online`;
  if (s.agents_draining) text += ` · ${s.agents_draining} draining`;
  if (s.agents_offline) text += ` · ${s.agents_offline} offline`;
  return text;
}

/** The fleet's cards and charts, updated by every `stats` message. */
export default function Overview(props: OverviewProps) {
  const [summary, setSummary] = useState(props.summary);
  const [series, setSeries] = useState(props.series);
  const range = series.range;

  useEffect(() => {
    let current = range;
    const load = async (r: Range) => {
      const res = await api<{ summary: FleetSummary; series: Series }>(`/api/stats?range=${r}`);
      if (r !== current) return;
      setSummary(res.summary);
      setSeries(res.series);
    };
    const stop = listen({
      on(event, data) {
        if (event !== "stats") return;
        const m = data as StatsMessage;
        setSummary(m.summary);
        setSeries((s) => s.range === current ? mergeTail(s, m.tail[current], SIZE[current]) : s);
      },
      resync: () => void load(current).catch(() => {}),
    });
    return () => {
      current = "" as Range;
      stop();
    };
  }, [range]);

  const pick = (r: Range) => {
    if (r === range) return;
    void api<{ summary: FleetSummary; series: Series }>(`/api/stats?range=${r}`).then((res) => {
      setSummary(res.summary);
      setSeries(res.series);
    }).catch(() => {});
  };

  const s = summary;
  const agents = s.agents_online + s.agents_draining + s.agents_offline;
  const queued = Object.entries(s.queue_by_model);
  const rate = (v: number) => fmtNum(v, 2);
  const rateWindow = fmtWindow(RATE_WINDOW_S);
  const pWindow = fmtWindow(PERCENTILE_WINDOW_S);
  return (
    <div>
      <div class="page-head">
        <h1>Overview</h1>
        <p class="muted" data-headline>{fleetHeadline(s)}</p>
      </div>
      <section class="cards" aria-label="Now">
        <Card
          label="Agents online"
          value={`${s.agents_online} / ${agents}`}
          sub={`${s.agents_draining} draining · ${s.agents_offline} offline`}
          tone={s.agents_online === 0 && agents > 0 ? "bad" : undefined}
          href="/dashboard/agents"
        />
        <Card
          label="Requests / s"
          window={rateWindow}
          value={rate(s.requests_per_second)}
          sub={`${s.requests_last_hour} in the last hour`}
        />
        <Card
          label="Tokens / s"
          window={rateWindow}
          value={fmtNum(s.tokens_per_second, 0)}
          sub="generated, fleet-wide"
        />
        <Card
          label="Latency p50"
          window={pWindow}
          value={fmtMs(s.latency_p50_ms)}
          sub={`p95 ${fmtMs(s.latency_p95_ms)}`}
        />
        <Card
          label="First token p50"
          window={pWindow}
          value={fmtMs(s.ttft_p50_ms)}
          sub={`p95 ${fmtMs(s.ttft_p95_ms)}`}
        />
        <Card
          label="Error rate"
          window={pWindow}
          value={fmtPct(s.error_rate)}
          sub="failed requests →"
          tone={(s.error_rate ?? 0) > 0.05 ? "bad" : undefined}
          href={FAILED_REQUESTS_HREF}
          cta
        />
        <Card
          label="Queue"
          window="now"
          value={String(s.queue_depth)}
          sub={queued.length
            ? queued.map(([m, n]) => `${m.replace(/^registry\.ollama\.ai\/library\//, "")}: ${n}`)
              .join(", ")
            : `${s.in_flight} in flight`}
          tone={s.queue_depth > 0 ? "warn" : undefined}
        />
      </section>
      <ChartsHead range={range} onPick={pick} />
      <section class="charts">
        <Chart
          title="Requests per second"
          t={series.t}
          lines={[{ label: "req/s", values: series.rps }]}
          format={rate}
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
          title="Latency"
          t={series.t}
          lines={[{ label: "p50", values: series.p50 }, { label: "p95", values: series.p95 }]}
          format={fmtMs}
          minMax={100}
        />
        <Chart
          title="Time to first token"
          t={series.t}
          lines={[{ label: "p50", values: series.ttft50 }, { label: "p95", values: series.ttft95 }]}
          format={fmtMs}
          minMax={100}
        />
        <Chart
          title="Error rate"
          t={series.t}
          lines={[{ label: "errors", values: series.error_rate }]}
          format={fmtPct}
          minMax={0.1}
        />
        <Chart
          title="Queue and in flight"
          t={series.t}
          lines={[{ label: "in flight", values: series.in_flight }, {
            label: "queued",
            values: series.queue,
          }]}
          format={(v) => fmtNum(v, 0)}
          minMax={4}
        />
      </section>
    </div>
  );
}
