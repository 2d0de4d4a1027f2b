/** Small pieces shared by the pages and the islands. */
import type { AgentView } from "../../../shared/schemas.ts";
import { fmtAgo, fmtBytes, fmtPercent } from "./format.ts";
import { now } from "./live.ts";

/** Props of {@linkcode Card}. */
export interface CardProps {
  label: string;
  value: string;
  sub?: string;
  /** "bad" or "warn" colours the value. */
  tone?: string;
  /** The time the figure covers ("10 s", "1 min", "now"), shown beside the value. */
  window?: string;
  /** Makes the whole card a link. */
  href?: string;
  /** The sub line is the link's call to action ("failed requests →"), in the link colour. */
  cta?: boolean;
}

/** A figure with its label, the time it covers, and a line of detail. */
export function Card({ label, value, sub, tone, window, href, cta }: CardProps) {
  const body = (
    <>
      <div class="card-label">{label}</div>
      <div class="card-value">
        <span>{value}</span>
        {window && <span class="card-window">{window}</span>}
      </div>
      {sub && <div class={`card-sub${cta ? " cta" : ""}`}>{sub}</div>}
    </>
  );
  const cls = `card${tone ? ` ${tone}` : ""}`;
  return href ? <a class={`${cls} link`} href={href}>{body}</a> : <div class={cls}>{body}</div>;
}

/** An agent's status as a coloured pill. */
export function StatusPill({ status, reason }: { status: string; reason?: string | null }) {
  return <span class={`pill ${status}`} title={reason ?? undefined}>{status}</span>;
}

/** A horizontal meter for a share (0..1), with its text beside it. */
export function Meter(
  { value, text, warnAt = 0.8 }: { value: number | null; text: string; warnAt?: number },
) {
  const v = value === null || !Number.isFinite(value) ? 0 : Math.max(0, Math.min(1, value));
  return (
    <span class="meter-wrap">
      <span class={`meter${v >= warnAt ? " hot" : ""}`} aria-hidden="true">
        <span style={{ width: `${(v * 100).toFixed(1)}%` }} />
      </span>
      <span class="meter-text">{text}</span>
    </span>
  );
}

/** An agent's memory use as a meter: used / total when known, else the share. */
export function MemoryMeter({ metrics: m }: { metrics: AgentView["metrics"] }) {
  if (!m) return <>–</>;
  return (
    <Meter
      value={m.memory_usage / 100}
      text={m.memory_total
        ? `${fmtBytes(m.memory_used)} / ${fmtBytes(m.memory_total)}`
        : fmtPercent(m.memory_usage)}
    />
  );
}

/** "12 s ago", ticking in the browser. */
export function Ago({ at, serverNow }: { at: string; serverNow?: number }) {
  const t = typeof document === "undefined" ? (serverNow ?? Date.now()) : now.value;
  return <time dateTime={at} title={at}>{fmtAgo(at, t)}</time>;
}

/** An agent's labels as chips. */
export function Labels({ labels }: { labels: string[] }) {
  if (!labels.length) return null;
  return <span class="chips">{labels.map((l) => <span class="chip" key={l}>{l}</span>)}</span>;
}

/** The GPUs' utilisation and VRAM as one short text. */
export function gpuSummary(a: Pick<AgentView, "metrics">): {
  util: number | null;
  vramUsed: number;
  vramTotal: number;
  names: string;
} {
  const gpus = a.metrics?.gpus ?? [];
  const utils = gpus.map((g) => g.utilization).filter((u): u is number => u !== undefined);
  return {
    util: utils.length ? utils.reduce((x, y) => x + y, 0) / utils.length : null,
    vramUsed: gpus.reduce((s, g) => s + (g.memory_used ?? 0), 0),
    vramTotal: gpus.reduce((s, g) => s + (g.memory_total ?? 0), 0),
    names: gpus.map((g) => g.name).join(", "),
  };
}
