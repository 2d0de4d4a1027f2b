/**
 * The API keys page: every key with its limits, weight and use over the last hour, day or week
 * (from the request log, so every coordinator's requests count), creating keys with limits,
 * changing limits, revoking. New requests refresh the figures a moment after they end.
 */
import { Fragment } from "preact";
import { useEffect, useState } from "preact/hooks";
import type { KeyLimits, KeyRow, KeyUsage, UsageRange } from "../wire.ts";
import { api } from "../lib/api.ts";
import { useAction } from "../lib/action.ts";
import { Chart } from "../lib/chart.tsx";
import { fmtNum } from "../lib/format.ts";
import { listen, tick } from "../lib/live.ts";
import { Ago } from "../lib/ui.tsx";

/** Props of the keys island. */
export interface KeysViewProps {
  keys: KeyRow[];
  usage: KeyUsage;
  serverNow: number;
}

/** Lines a usage chart draws at most: the busiest keys. */
const CHART_KEYS = 4;
/** After requests end, the figures are read again this much later (once for a burst). */
const REFRESH_MS = 2000;

const RANGE_LABEL: Record<UsageRange, string> = {
  "1h": "1 hour",
  "24h": "24 hours",
  "7d": "7 days",
};
const BUCKET_LABEL: Record<UsageRange, string> = {
  "1h": "per minute",
  "24h": "per 30 minutes",
  "7d": "per 6 hours",
};

/** A key's limits in one short line. */
export function limitsText(l: KeyLimits): string {
  const parts: string[] = [];
  if (l.requests_per_minute !== null) parts.push(`${fmtNum(l.requests_per_minute, 0)} req/min`);
  if (l.tokens_per_minute !== null) parts.push(`${fmtNum(l.tokens_per_minute, 0)} tok/min`);
  if (l.concurrent !== null) parts.push(`${l.concurrent} at once`);
  return parts.length ? parts.join(" · ") : "no limits";
}

/** One key's use over the whole range. */
export interface KeyTotals {
  requests: number;
  tokens: number;
  limited: number;
}

/** Each key's use over the range. */
export function usageTotals(usage: KeyUsage): Map<string, KeyTotals> {
  const out = new Map<string, KeyTotals>();
  for (const r of usage.rows) {
    const t = out.get(r.key_id) ?? { requests: 0, tokens: 0, limited: 0 };
    t.requests += r.requests;
    t.tokens += r.tokens_in + r.tokens_out;
    t.limited += r.limited;
    out.set(r.key_id, t);
  }
  return out;
}

/** Chart columns for `ids`: bucket times and, per key, requests, tokens and 429s per bucket. */
export function usageSeries(usage: KeyUsage, ids: string[]) {
  const t = Array.from({ length: usage.buckets }, (_, i) => usage.since + i * usage.bucket_ms);
  const zeros = () => ids.map(() => t.map(() => 0));
  const requests = zeros(), tokens = zeros(), limited = zeros();
  for (const r of usage.rows) {
    const k = ids.indexOf(r.key_id);
    const i = Math.round((r.t - usage.since) / usage.bucket_ms);
    if (k === -1 || i < 0 || i >= t.length) continue;
    requests[k][i] += r.requests;
    tokens[k][i] += r.tokens_in + r.tokens_out;
    limited[k][i] += r.limited;
  }
  return { t, requests, tokens, limited };
}

/** The limits form's fields, as typed. */
export interface LimitsDraft {
  requests_per_minute: string;
  tokens_per_minute: string;
  concurrent: string;
  weight: string;
}

/** The draft of a key's current limits (an empty field: no limit). */
export function draftOf(l: KeyLimits): LimitsDraft {
  const text = (v: number | null) => (v === null ? "" : String(v));
  return {
    requests_per_minute: text(l.requests_per_minute),
    tokens_per_minute: text(l.tokens_per_minute),
    concurrent: text(l.concurrent),
    weight: String(l.weight),
  };
}

/** The limits a draft asks for (empty: none; weight empty: 1), or what is wrong with it. */
export function limitsOf(d: LimitsDraft): KeyLimits | string {
  const whole = (v: string, what: string): number | null | string => {
    if (v.trim() === "") return null;
    const n = Number(v);
    return Number.isInteger(n) && n >= 1 ? n : `${what} must be a whole number of at least 1`;
  };
  const rpm = whole(d.requests_per_minute, "Requests per minute");
  const tpm = whole(d.tokens_per_minute, "Tokens per minute");
  const concurrent = whole(d.concurrent, "Requests at once");
  for (const v of [rpm, tpm, concurrent]) if (typeof v === "string") return v;
  const weight = d.weight.trim() === "" ? 1 : Number(d.weight);
  if (!(weight >= 0.01 && weight <= 100)) return "Weight must be between 0.01 and 100";
  return {
    requests_per_minute: rpm as number | null,
    tokens_per_minute: tpm as number | null,
    concurrent: concurrent as number | null,
    weight,
  };
}

const EMPTY_DRAFT: LimitsDraft = {
  requests_per_minute: "",
  tokens_per_minute: "",
  concurrent: "",
  weight: "1",
};

function LimitFields(
  { draft, set }: { draft: LimitsDraft; set: (d: LimitsDraft) => void },
) {
  const field = (key: keyof LimitsDraft, label: string, hint: string) => (
    <label>
      <span class="label">{label}</span>
      <input
        name={key}
        type="number"
        min={key === "weight" ? "0.01" : "1"}
        step={key === "weight" ? "0.01" : "1"}
        placeholder={hint}
        value={draft[key]}
        onInput={(e) => set({ ...draft, [key]: (e.target as HTMLInputElement).value })}
      />
    </label>
  );
  return (
    <>
      {field("requests_per_minute", "Requests per minute", "no limit")}
      {field("tokens_per_minute", "Tokens per minute", "no limit")}
      {field("concurrent", "Requests at once", "no limit")}
      {field("weight", "Weight (share of the queue)", "1")}
    </>
  );
}

/** The keys, their limits and their use, with the forms that change them. */
export default function KeysView(props: KeysViewProps) {
  const [keys, setKeys] = useState(props.keys);
  const [usage, setUsage] = useState(props.usage);
  const [name, setName] = useState("");
  const [scope, setScope] = useState<"client" | "admin">("client");
  const [draft, setDraft] = useState(EMPTY_DRAFT);
  const [created, setCreated] = useState<{ name: string; key: string } | null>(null);
  const [editing, setEditing] = useState<{ id: string; draft: LimitsDraft } | null>(null);
  const { busy, error, setError, run: act } = useAction();
  const range = usage.range;

  useEffect(() => {
    tick();
    let current = range;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const refresh = () => {
      timer = undefined;
      void Promise.all([
        api<KeyRow[]>("/api/keys"),
        api<KeyUsage>(`/api/keys/usage?range=${current}`),
      ]).then(([k, u]) => {
        setKeys(k);
        if (u.range === current) setUsage(u);
      }).catch(() => {});
    };
    const stop = listen({
      on(event, data) {
        if (event !== "requests" || timer !== undefined) return;
        if ((data as { key_id?: string | null }[]).some((r) => r.key_id)) {
          timer = setTimeout(refresh, REFRESH_MS);
        }
      },
      resync: refresh,
    });
    return () => {
      current = "" as UsageRange;
      clearTimeout(timer);
      stop();
    };
  }, [range]);

  const create = (e: Event) => {
    e.preventDefault();
    const limits = limitsOf(draft);
    if (typeof limits === "string") return setError(limits);
    if (!name.trim()) return setError("Name the key, e.g. the person or service using it");
    void act(async () => {
      const made = await api<KeyRow & { key: string }>("/api/keys", {
        json: { name: name.trim(), scope, limits },
      });
      const { key, ...row } = made;
      setKeys((list) => [{ ...row, in_flight: 0 }, ...list]);
      setCreated({ name: made.name, key });
      setName("");
      setDraft(EMPTY_DRAFT);
    });
  };

  const save = (e: Event) => {
    e.preventDefault();
    if (!editing) return;
    const limits = limitsOf(editing.draft);
    if (typeof limits === "string") return setError(limits);
    void act(async () => {
      const row = await api<KeyRow>(`/api/keys/${editing.id}`, {
        method: "PATCH",
        json: { limits },
      });
      setKeys((list) => list.map((k) => (k.id === row.id ? row : k)));
      setEditing(null);
    });
  };

  const revoke = (k: KeyRow) => {
    if (
      !confirm(`Revoke API key "${k.name}" (${k.prefix}…)? Clients using it are refused at once.`)
    ) {
      return;
    }
    void act(async () => {
      await api(`/api/keys/${k.id}`, { method: "DELETE" });
      const at = new Date().toISOString();
      setKeys((list) => list.map((x) => (x.id === k.id ? { ...x, revoked_at: at } : x)));
    });
  };

  const pick = (r: UsageRange) => {
    if (r === range) return;
    void api<KeyUsage>(`/api/keys/usage?range=${r}`).then(setUsage).catch((e) =>
      setError((e as Error).message)
    );
  };

  const totals = usageTotals(usage);
  const none: KeyTotals = { requests: 0, tokens: 0, limited: 0 };
  const busiest = [...totals.entries()].sort((a, b) => b[1].requests - a[1].requests)
    .slice(0, CHART_KEYS).map(([id]) => id);
  const nameOf = (id: string) => {
    const k = keys.find((x) => x.id === id);
    return k ? k.name : id.startsWith("env:") ? "API_KEYS" : id.slice(0, 8);
  };
  const series = usageSeries(usage, busiest);
  const lines = (values: number[][]) =>
    busiest.map((id, i) => ({ label: nameOf(id), values: values[i] }));
  const active = keys.filter((k) => k.revoked_at === null);
  const revoked = keys.filter((k) => k.revoked_at !== null);

  return (
    <div class="keys-view">
      <div class="page-head">
        <h1>API keys</h1>
        <p class="muted">
          Who may use the API, what each key may use, and what it used. Limits apply per key;
          weights share the queue between keys.
        </p>
      </div>
      {error && <p class="error" role="alert">{error}</p>}
      <section class="panel">
        <h2>New key</h2>
        <form class="edit" onSubmit={create} aria-label="New key">
          <label>
            <span class="label">Name</span>
            <input
              name="name"
              maxLength={64}
              placeholder="laptop, ci, open-webui"
              value={name}
              onInput={(e) => setName((e.target as HTMLInputElement).value)}
            />
          </label>
          <label>
            <span class="label">Scope</span>
            <select
              name="scope"
              value={scope}
              onChange={(e) => setScope((e.target as HTMLSelectElement).value as "client")}
            >
              <option value="client">client: inference and models</option>
              <option value="admin">admin: everything</option>
            </select>
          </label>
          <LimitFields draft={draft} set={setDraft} />
          <div class="actions">
            <button type="submit" class="primary" disabled={busy}>Create key</button>
          </div>
        </form>
        {created && (
          <p class="notice" role="status" data-new-key>
            Key "{created.name}": <code>{created.key}</code> — copy it now, it is not shown again.
          </p>
        )}
      </section>
      <section class="panel">
        <div class="section-head">
          <h2>
            Keys <span class="muted small">use over the last {RANGE_LABEL[range]}</span>
          </h2>
          <RangeSwitch range={range} onPick={pick} />
        </div>
        <div class="table-wrap">
          <table class="keys">
            <thead>
              <tr>
                <th>Key</th>
                <th>Limits</th>
                <th class="num">Weight</th>
                <th class="num">In flight</th>
                <th class="num">Requests</th>
                <th class="num">Tokens</th>
                <th class="num">429s</th>
                <th>Last used</th>
                <th></th>
              </tr>
            </thead>
            <tbody>
              {keys.length === 0 && (
                <tr>
                  <td class="empty" colSpan={9}>
                    No keys yet: the API is open to anyone who can reach it.
                  </td>
                </tr>
              )}
              {[...active, ...revoked].map((k) => {
                const t = totals.get(k.id) ?? none;
                const open = editing?.id === k.id;
                return (
                  <Fragment key={k.id}>
                    <tr data-key-id={k.id} class={k.revoked_at ? "revoked" : undefined}>
                      <td>
                        <b>{k.name}</b> <code>{k.prefix}…</code> <span class="pill">{k.scope}</span>
                        {k.revoked_at && <span class="pill offline">revoked</span>}
                      </td>
                      <td data-limits>{limitsText(k.limits)}</td>
                      <td class="num">{fmtNum(k.limits.weight, 2)}</td>
                      <td class="num">{k.revoked_at ? "–" : k.in_flight}</td>
                      <td class="num" data-requests>{fmtNum(t.requests, 0)}</td>
                      <td class="num">{fmtNum(t.tokens, 0)}</td>
                      <td class={`num${t.limited ? " status warn" : ""}`} data-limited>
                        {fmtNum(t.limited, 0)}
                      </td>
                      <td>
                        {k.last_used_at
                          ? <Ago at={k.last_used_at} serverNow={props.serverNow} />
                          : "never"}
                      </td>
                      <td>
                        {!k.revoked_at && (
                          <span class="actions">
                            <button
                              type="button"
                              disabled={busy}
                              onClick={() =>
                                setEditing(open ? null : { id: k.id, draft: draftOf(k.limits) })}
                            >
                              Limits
                            </button>
                            <button
                              type="button"
                              class="danger"
                              disabled={busy}
                              onClick={() => revoke(k)}
                            >
                              Revoke
                            </button>
                          </span>
                        )}
                      </td>
                    </tr>
                    {open && (
                      <tr class="edit-row">
                        <td colSpan={9}>
                          <form class="edit" onSubmit={save} aria-label={`Limits of ${k.name}`}>
                            <LimitFields
                              draft={editing.draft}
                              set={(d) => setEditing({ id: k.id, draft: d })}
                            />
                            <div class="actions">
                              <button type="submit" class="primary" disabled={busy}>Save</button>
                              <button type="button" onClick={() => setEditing(null)}>Cancel</button>
                            </div>
                          </form>
                        </td>
                      </tr>
                    )}
                  </Fragment>
                );
              })}
            </tbody>
          </table>
        </div>
      </section>
      <div class="section-head">
        <h2>
          Use by key <span class="muted small">{BUCKET_LABEL[range]}, the busiest keys</span>
        </h2>
      </div>
      <section class="charts">
        <Chart
          title="Requests"
          t={series.t}
          lines={lines(series.requests)}
          format={(v) => fmtNum(v, 0)}
          minMax={4}
        />
        <Chart
          title="Tokens (in + out)"
          t={series.t}
          lines={lines(series.tokens)}
          format={(v) => fmtNum(v, 0)}
          minMax={100}
        />
        <Chart
          title="Refused (429)"
          t={series.t}
          lines={lines(series.limited)}
          format={(v) => fmtNum(v, 0)}
          minMax={4}
        />
      </section>
    </div>
  );
}

function RangeSwitch({ range, onPick }: { range: UsageRange; onPick: (r: UsageRange) => void }) {
  return (
    <div class="segmented" role="group" aria-label="Range">
      {(["1h", "24h", "7d"] as UsageRange[]).map((r) => (
        <button
          type="button"
          aria-pressed={r === range}
          onClick={() => onPick(r)}
        >
          {RANGE_LABEL[r]}
        </button>
      ))}
    </div>
  );
}
