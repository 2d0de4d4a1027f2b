/**
 * A small line chart in SVG, rendered the same on the server (useful without JavaScript) and in
 * islands (where hovering shows the values at a point). Lines scale to the box; labels are HTML
 * so text never stretches.
 */
import { useState } from "preact/hooks";
import { fmtTime } from "./format.ts";
import type { Range } from "../wire.ts";

/** One line of a chart. */
export interface ChartLine {
  label: string;
  values: (number | null)[];
}

/** Props of {@linkcode Chart}. */
export interface ChartProps {
  title: string;
  /** Bucket start times (ms), oldest first. */
  t: number[];
  lines: ChartLine[];
  format: (v: number) => string;
  /** Smallest top of the y axis, so a quiet chart is not all noise. */
  minMax?: number;
}

const W = 600;
const H = 140;

function niceMax(x: number): number {
  if (!(x > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(x));
  for (const m of [1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10]) if (m * p >= x) return m * p;
  return 10 * p;
}

function path(values: (number | null)[], max: number, n: number): string {
  let d = "";
  let pen = false;
  values.forEach((v, i) => {
    if (v === null || !Number.isFinite(v)) {
      pen = false;
      return;
    }
    const x = n <= 1 ? W : (i / (n - 1)) * W;
    const y = H - (Math.min(v, max) / max) * H;
    d += `${pen ? "L" : "M"}${x.toFixed(1)} ${y.toFixed(1)}`;
    pen = true;
  });
  return d;
}

/**
 * A line chart whose legend shows the newest point's values (or the hovered one's). The series
 * hold finished points only (live_stats.ts), so the newest point is a whole one; a line with no
 * value there (no request in that point) shows "–", not an older value.
 */
export function Chart({ title, t, lines, format, minMax = 0 }: ChartProps) {
  const [hover, setHover] = useState<number | null>(null);
  const n = t.length;
  let top = minMax;
  for (const l of lines) for (const v of l.values) if (v !== null && v > top) top = v;
  const max = niceMax(top);
  const at = hover ?? n - 1;
  const onMove = (e: PointerEvent) => {
    const box = (e.currentTarget as HTMLElement).getBoundingClientRect();
    const i = Math.round(((e.clientX - box.left) / box.width) * (n - 1));
    setHover(Math.max(0, Math.min(n - 1, i)));
  };
  return (
    <figure class="chart">
      <figcaption>
        <span class="chart-title">{title}</span>
        <span class="legend">
          {lines.map((l, i) => {
            const v = l.values[at];
            return (
              <span class={`key k${i}`} key={l.label}>
                {l.label} <b>{v === null || v === undefined ? "–" : format(v)}</b>
              </span>
            );
          })}
        </span>
      </figcaption>
      <div
        class="plot"
        onPointerMove={onMove}
        onPointerLeave={() => setHover(null)}
      >
        <svg viewBox={`0 0 ${W} ${H}`} preserveAspectRatio="none" aria-hidden="true">
          <line class="grid" x1="0" x2={W} y1={H / 2} y2={H / 2} />
          <line class="grid" x1="0" x2={W} y1="0.5" y2="0.5" />
          {lines.map((l, i) => {
            const d = path(l.values, max, n);
            return d
              ? (
                <g class={`k${i}`} key={l.label}>
                  {i === 0 && l.values.every((v) => v !== null) && (
                    <path class="area" d={`${d}L${W} ${H}L0 ${H}Z`} />
                  )}
                  <path class="line" d={d} />
                </g>
              )
              : null;
          })}
          {hover !== null && n > 1 && (
            <line
              class="cursor"
              x1={(hover / (n - 1)) * W}
              x2={(hover / (n - 1)) * W}
              y1="0"
              y2={H}
            />
          )}
        </svg>
        <span class="ymax">{format(max)}</span>
        <span class="ymid">{format(max / 2)}</span>
      </div>
      <div class="xaxis">
        <span>{n ? fmtTime(t[0]) : ""}</span>
        {hover !== null && <span class="xhover">{fmtTime(t[at])}</span>}
        <span>{n ? (hover === null ? "now" : "") : ""}</span>
      </div>
    </figure>
  );
}

/** Merges newer buckets (`tail`) into columnar chart data, keeping at most `size` buckets. */
export function mergeTail<S extends { t: number[] }>(series: S, tail: S, size: number): S {
  const out = { ...series } as Record<string, unknown[]>;
  const keys = Object.keys(tail).filter((k) => Array.isArray((tail as Record<string, unknown>)[k]));
  for (const k of keys) out[k] = [...(out[k] ?? [])];
  const times = out.t as number[];
  tail.t.forEach((time, j) => {
    let i = times.length - 1;
    while (i >= 0 && times[i] > time) i--;
    if (i >= 0 && times[i] === time) {
      for (const k of keys) out[k][i] = (tail as Record<string, unknown[]>)[k][j];
    } else if (i === times.length - 1) {
      for (const k of keys) out[k].push((tail as Record<string, unknown[]>)[k][j]);
    }
  });
  const extra = times.length - size;
  if (extra > 0) { for (const k of keys) out[k] = out[k].slice(extra); }
  return out as unknown as S;
}

/** What one point of a range covers, as the charts' heading says. */
export const POINT_LABEL: Record<Range, string> = {
  "5m": "one point per 5 s",
  "1h": "one point per minute",
};

/** The "Charts" heading with its 5-minute / 1-hour range switch. */
export function ChartsHead(
  { range, onPick }: { range: Range; onPick: (r: Range) => void },
) {
  return (
    <div class="section-head">
      <h2>
        Charts <span class="muted small" data-points>{POINT_LABEL[range]}</span>
      </h2>
      <div class="segmented" role="group" aria-label="Range">
        {(["5m", "1h"] as Range[]).map((r) => (
          <button
            type="button"
            aria-pressed={r === range}
            onClick={() => onPick(r)}
          >
            {r === "5m" ? "5 minutes" : "1 hour"}
          </button>
        ))}
      </div>
    </div>
  );
}
