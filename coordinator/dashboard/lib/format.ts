/** Formatting shared by the pages (server) and the islands (browser). */

/** Bytes as `1.2 GB`. */
export function fmtBytes(n: number | null | undefined): string {
  if (n === null || n === undefined || !Number.isFinite(n)) return "–";
  const units = ["B", "KB", "MB", "GB", "TB", "PB"];
  let i = 0;
  while (Math.abs(n) >= 1000 && i < units.length - 1) {
    n /= 1000;
    i++;
  }
  return `${i === 0 ? n : n.toFixed(n >= 100 ? 0 : 1)} ${units[i]}`;
}

/** Milliseconds as `850 ms`, `1.2 s` or `3 min`. */
export function fmtMs(ms: number | null | undefined): string {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) return "–";
  if (ms < 1) return "<1 ms";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)} s`;
  return `${(ms / 60_000).toFixed(1)} min`;
}

/** A number with at most `digits` decimals and no trailing zeros: `3.5`, `120`. */
export function fmtNum(n: number | null | undefined, digits = 1): string {
  if (n === null || n === undefined || !Number.isFinite(n)) return "–";
  if (Math.abs(n) >= 10_000) return `${(n / 1000).toFixed(0)}k`;
  if (Math.abs(n) >= 1000) return `${(n / 1000).toFixed(1)}k`;
  return String(Number(n.toFixed(digits)));
}

/** A share (0..1) as `2.5 %`. */
export function fmtPct(x: number | null | undefined): string {
  if (x === null || x === undefined || !Number.isFinite(x)) return "–";
  const p = x * 100;
  return `${p === 0 || p >= 10 ? p.toFixed(0) : p.toFixed(1)} %`;
}

/** A percentage (0..100) as `45 %`. */
export function fmtPercent(p: number | null | undefined): string {
  if (p === null || p === undefined || !Number.isFinite(p)) return "–";
  return `${Math.round(p)} %`;
}

/** A window of time as `10 s`, `1 min` or `2 h`: what a figure covers. */
export function fmtWindow(seconds: number): string {
  if (seconds < 60) return `${seconds} s`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min`;
  return `${Math.round(seconds / 3600)} h`;
}

const pad = (n: number) => String(n).padStart(2, "0");

/** A time as `14:03:07` (the browser's zone; UTC on the server until the page hydrates). */
export function fmtTime(at: string | number): string {
  const d = new Date(at);
  if (Number.isNaN(d.getTime())) return "–";
  if (typeof document === "undefined") {
    return `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())}`;
  }
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** A date and time as `2026-01-31 14:03:07`. */
export function fmtDateTime(at: string | number): string {
  const d = new Date(at);
  if (Number.isNaN(d.getTime())) return "–";
  const local = typeof document !== "undefined";
  const y = local ? d.getFullYear() : d.getUTCFullYear();
  const m = (local ? d.getMonth() : d.getUTCMonth()) + 1;
  const day = local ? d.getDate() : d.getUTCDate();
  return `${y}-${pad(m)}-${pad(day)} ${fmtTime(at)}`;
}

/** How long ago: `now`, `12 s ago`, `5 min ago`, `3 h ago`, `2 d ago`. */
export function fmtAgo(at: string | number, now: number): string {
  const ms = now - new Date(at).getTime();
  if (!Number.isFinite(ms)) return "–";
  if (ms < 2000) return "now";
  if (ms < 60_000) return `${Math.round(ms / 1000)} s ago`;
  if (ms < 3_600_000) return `${Math.round(ms / 60_000)} min ago`;
  if (ms < 86_400_000) return `${Math.round(ms / 3_600_000)} h ago`;
  return `${Math.round(ms / 86_400_000)} d ago`;
}
