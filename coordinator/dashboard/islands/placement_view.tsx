/**
 * The placement page: the rules (add, change, remove), and for each rule the model's state on
 * each agent with live pull progress, and the drift. Progress arrives on the live stream; the
 * status is fetched again when a pull ends or agents change (at most once a second), and every
 * 15 s for the times to come.
 */
import { useEffect, useRef, useState } from "preact/hooks";
import type {
  PlacementCell,
  PlacementRule,
  PlacementRuleStatus,
  PlacementStatus,
} from "../wire.ts";
import { api } from "../lib/api.ts";
import { useAction } from "../lib/action.ts";
import { fmtBytes, fmtDateTime } from "../lib/format.ts";
import { listen, now, tick } from "../lib/live.ts";
import {
  applyProgress,
  describeRule,
  EMPTY_FORM,
  fmtIn,
  formFromRule,
  type ProgressUpdate,
  type RuleForm,
  ruleFromForm,
} from "../lib/placement.ts";

/** Props of the placement island. */
export interface PlacementViewProps {
  status: PlacementStatus;
}

const STATE_WORDS: Record<PlacementCell["state"], string> = {
  ok: "ok",
  pulling: "pulling",
  missing: "missing",
  failed: "failed",
  no_disk: "not enough disk",
  offline: "offline",
  unwanted: "deleting",
};

function Progress({ p }: { p: NonNullable<PlacementCell["progress"]> }) {
  const share = p.total ? Math.min(1, (p.completed ?? 0) / p.total) : 0;
  return (
    <div class="cell-progress">
      <progress max={1} value={share} aria-label="Pull progress" />
      <span class="small muted">
        {p.total
          ? `${Math.floor(share * 100)}% · ${fmtBytes(p.completed ?? 0)} / ${fmtBytes(p.total)}`
          : p.status}
      </span>
    </div>
  );
}

function Detail({ c }: { c: PlacementCell }) {
  const t = typeof document === "undefined" ? Date.now() : now.value;
  return (
    <div class="cell-detail">
      {c.progress && c.state === "pulling" && <Progress p={c.progress} />}
      {c.reason && <span class="muted">{c.reason}</span>}
      {c.error && (
        <span class="error-text">
          {c.failures && c.failures > 1 ? `${c.failures} failures, last: ` : ""}
          {c.error}
        </span>
      )}
      {c.retry_at && (
        <span class="muted" title={fmtDateTime(c.retry_at)}>
          next try {fmtIn(c.retry_at, t)}
        </span>
      )}
      {c.warm_error && <span class="error-text">warm load failed: {c.warm_error}</span>}
    </div>
  );
}

function hasDetail(c: PlacementCell): boolean {
  return !!(c.reason || c.error || c.retry_at || c.warm_error ||
    (c.progress && c.state === "pulling"));
}

function RuleCard(
  { r, onEdit, onRemove }: {
    r: PlacementRuleStatus;
    onEdit: (rule: PlacementRule) => void;
    onRemove: (model: string) => void;
  },
) {
  const t = typeof document === "undefined" ? Date.now() : now.value;
  const { counts } = r;
  return (
    <section class="panel rule" data-model={r.rule.model} data-met={String(r.met)}>
      <div class="section-head">
        <h2>
          {r.rule.model}
          <span class={`pill ${r.met ? "ok" : "drift"}`}>{r.met ? "in place" : "drift"}</span>
        </h2>
        <div class="actions">
          <button type="button" onClick={() => onEdit(r.rule)}>Edit</button>
          <button type="button" class="danger" onClick={() => onRemove(r.rule.model)}>
            Remove
          </button>
        </div>
      </div>
      <p class="rule-words">{describeRule(r.rule)}</p>
      <p class="small muted">
        {counts.ok} of {counts.wanted} wanted copies in place
        {counts.pulling ? ` · ${counts.pulling} pulling` : ""}
        {counts.warm_wanted ? ` · loaded on ${counts.warm} of ${counts.warm_wanted}` : ""}
        {r.size ? ` · ${fmtBytes(r.size)} each` : ""}
      </p>
      {r.drift.length > 0 && (
        <ul class="drift" aria-label={`Drift of ${r.rule.model}`}>
          {r.drift.map((d) => <li key={d}>{d}</li>)}
        </ul>
      )}
      <div class="table-wrap">
        <table class="compact stack-sm placement">
          <thead>
            <tr>
              <th>Agent</th>
              <th>State</th>
              <th>Detail</th>
              <th>Memory</th>
              <th class="num">Disk free</th>
            </tr>
          </thead>
          <tbody>
            {r.agents.map((c) => (
              <tr key={c.agent_id} data-agent={c.agent_name} data-state={c.state}>
                <td>
                  <div class="agent-cell">
                    <a href={`/dashboard/agents/${c.agent_id}`}>{c.agent_name}</a>
                    {!c.wanted && c.state === "ok" && <span class="small muted">spare</span>}
                    {c.agent_status !== "online" && (
                      <span class={`pill ${c.agent_status}`}>{c.agent_status}</span>
                    )}
                  </div>
                </td>
                <td data-label="State">
                  <span class={`pill ${c.state}`}>{STATE_WORDS[c.state]}</span>
                </td>
                <td
                  data-label={hasDetail(c) ? "Detail" : undefined}
                  class={hasDetail(c) ? undefined : "hide-sm"}
                >
                  <Detail c={c} />
                </td>
                <td
                  data-label={c.loaded || c.warm ? "Memory" : undefined}
                  class={c.loaded || c.warm ? undefined : "hide-sm"}
                >
                  {c.loaded
                    ? (
                      <span class={c.warm ? "loaded" : ""}>
                        {c.warm ? "warm" : "loaded"}
                        {c.expires_at && (
                          <span class="small muted" title={fmtDateTime(c.expires_at)}>
                            {` · ${fmtIn(c.expires_at, t).replace(/^in /, "")} left`}
                          </span>
                        )}
                      </span>
                    )
                    : c.warm
                    ? <span class="muted">loading…</span>
                    : <span class="muted">–</span>}
                </td>
                <td class="num" data-label="Disk free">
                  {c.disk_free === undefined ? "–" : fmtBytes(c.disk_free)}
                </td>
              </tr>
            ))}
            {r.agents.length === 0 && (
              <tr>
                <td colSpan={5} class="empty">No agent matches this rule yet.</td>
              </tr>
            )}
          </tbody>
        </table>
      </div>
    </section>
  );
}

function RuleEditor(
  { form, setForm, onSaved }: {
    form: RuleForm;
    setForm: (f: RuleForm) => void;
    onSaved: () => void;
  },
) {
  const { busy, error, setError, run } = useAction();
  const field = (name: keyof RuleForm) => ({
    value: form[name],
    onInput: (e: Event) => setForm({ ...form, [name]: (e.target as HTMLInputElement).value }),
  });
  const submit = async (e: Event) => {
    e.preventDefault();
    setError("");
    const parsed = ruleFromForm(form);
    if ("error" in parsed) return setError(parsed.error);
    await run(async () => {
      await api("/api/admin/placements", { method: "PUT", json: parsed.rule });
      setForm(EMPTY_FORM);
      onSaved();
    });
  };
  const where = (w: RuleForm["where"], text: string) => (
    <button
      type="button"
      aria-pressed={form.where === w}
      onClick={() => setForm({ ...form, where: w })}
    >
      {text}
    </button>
  );
  return (
    <form class="rule-form" onSubmit={submit} aria-label="Placement rule">
      <label class="grow">
        <span class="label">Model</span>
        <input name="model" placeholder="llama3.2:3b" {...field("model")} />
      </label>
      <div class="where">
        <span class="label">Where</span>
        <div class="segmented" role="group" aria-label="Where">
          {where("label", "every agent with a label")}
          {where("count", "at least N agents")}
          {where("agents", "named agents")}
        </div>
      </div>
      {form.where !== "agents" && (
        <label>
          <span class="label">{form.where === "count" ? "Among label (optional)" : "Label"}</span>
          <input name="label" placeholder="gpu" {...field("label")} />
        </label>
      )}
      {form.where === "count" && (
        <label class="short">
          <span class="label">At least</span>
          <input name="count" type="number" min="1" {...field("count")} />
        </label>
      )}
      {form.where === "agents" && (
        <label class="grow">
          <span class="label">Agents (comma-separated names or ids)</span>
          <input name="agents" placeholder="gpu-01, gpu-02" {...field("agents")} />
        </label>
      )}
      <label class="short">
        <span class="label">Warm on</span>
        <input name="warm" type="number" min="0" placeholder="0" {...field("warm")} />
      </label>
      <label class="short">
        <span class="label">keep_alive</span>
        <input name="keep_alive" placeholder="30m" {...field("keep_alive")} />
      </label>
      <label>
        <span class="label">Never on label (deletes it there)</span>
        <input name="never_on" placeholder="laptop" {...field("never_on")} />
      </label>
      <div class="actions">
        <button type="submit" class="primary" disabled={busy}>Save rule</button>
        {form !== EMPTY_FORM && (
          <button type="button" onClick={() => setForm(EMPTY_FORM)}>Clear</button>
        )}
      </div>
      {error && <p class="error" role="alert">{error}</p>}
    </form>
  );
}

/** Rules, per-agent state and drift, live. */
export default function PlacementView(props: PlacementViewProps) {
  const [status, setStatus] = useState(props.status);
  const [form, setForm] = useState<RuleForm>(EMPTY_FORM);
  const [error, setError] = useState("");
  const refetch = useRef<() => void>(() => {});
  const current = useRef(status);
  current.current = status;

  useEffect(() => {
    tick();
    let timer: ReturnType<typeof setTimeout> | undefined;
    let last = 0;
    const load = () => {
      timer = undefined;
      last = Date.now();
      api<PlacementStatus>("/api/admin/placements/status").then(setStatus).catch(() => {});
    };
    // At most once a second, however many agents beat meanwhile.
    refetch.current = () => {
      timer ??= setTimeout(load, Math.max(0, last + 1000 - Date.now()));
    };
    const every = setInterval(load, 15_000);
    const stop = listen({
      on(event, data) {
        if (event === "progress") {
          const next = applyProgress(current.current, data as ProgressUpdate[]);
          current.current = next.status;
          setStatus(next.status);
          if (next.ended) refetch.current();
        } else if (event === "agents" || event === "removed") {
          refetch.current();
        }
      },
      resync: load,
    });
    return () => {
      stop();
      clearInterval(every);
      clearTimeout(timer);
    };
  }, []);

  const remove = async (model: string) => {
    if (!confirm(`Remove the placement rule of "${model}"? No model is deleted from any agent.`)) {
      return;
    }
    setError("");
    try {
      await api("/api/admin/placements", { method: "DELETE", json: { model } });
      refetch.current();
    } catch (e) {
      setError((e as Error).message);
    }
  };
  const edit = (rule: PlacementRule) => {
    setForm(formFromRule(rule));
    document.querySelector<HTMLInputElement>(".rule-form input[name=model]")?.focus();
  };
  const met = status.rules.filter((r) => r.met).length;
  return (
    <div>
      <section class="panel">
        <h2>Add or change a rule</h2>
        <RuleEditor form={form} setForm={setForm} onSaved={() => refetch.current()} />
      </section>
      {!status.active && (
        <p class="notice" role="status">
          Another coordinator runs the placement; this page shows what this one knows.
        </p>
      )}
      {error && <p class="error" role="alert">{error}</p>}
      <p class="muted summary">
        {status.rules.length} {status.rules.length === 1 ? "rule" : "rules"} · {met} in place ·{" "}
        {status.rules.length - met} drifting · {status.pulls.running} pulls running (at most{" "}
        {status.pulls.max} at once, {status.pulls.max_per_agent} per agent)
      </p>
      {status.rules.map((r) => (
        <RuleCard
          key={r.key}
          r={r}
          onEdit={edit}
          onRemove={(m) => void remove(m)}
        />
      ))}
      {status.rules.length === 0 && (
        <section class="panel">
          <p class="muted">
            No rule yet. Say where a model should be (every agent with a label, at least N agents,
            or named agents) and the coordinator pulls it there, onto machines that join later too.
          </p>
        </section>
      )}
    </div>
  );
}
