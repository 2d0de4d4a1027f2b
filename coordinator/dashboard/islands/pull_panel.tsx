/**
 * Pulling a model onto agents, with live progress: the models page offers every agent (or all
 * of them); an agent's page pulls onto that agent.
 */
import { useEffect, useState } from "preact/hooks";
import type { PullProgress } from "../wire.ts";
import { api } from "../lib/api.ts";
import { useAction } from "../lib/action.ts";
import { fmtBytes } from "../lib/format.ts";
import { listen } from "../lib/live.ts";
import { agentName } from "../lib/models.ts";
import type { AgentRow } from "../wire.ts";

/** An agent that can be chosen as a target. */
export interface PullTarget {
  id: string;
  name: string;
  status: string;
}

/** Props of the pull panel. */
export interface PullPanelProps {
  /** Agents to choose from; a single one is the fixed target (an agent's page). */
  agents: PullTarget[];
  /** Pulls already known (recent or running), newest first. */
  pulls: PullProgress[];
}

/** Merges progress messages into a list of pulls, newest first. */
export function mergeProgress(list: PullProgress[], updates: PullProgress[]): PullProgress[] {
  const next = [...list];
  for (const p of updates) {
    const i = next.findIndex((x) => x.id === p.id);
    if (i === -1) next.unshift(p);
    else next[i] = { ...next[i], ...p };
  }
  return next.slice(0, 20);
}

function ProgressRow({ p, name }: { p: PullProgress; name: string }) {
  const share = p.total ? Math.min(1, (p.completed ?? 0) / p.total) : p.done && !p.error ? 1 : 0;
  const state = p.error ? "failed" : p.done ? "done" : "running";
  return (
    <li class={`pull ${state}`} data-pull-id={p.id} data-state={state}>
      <div class="pull-head">
        <b>{p.model}</b> <span class="muted">on {name}</span>
        <span class="pull-status">
          {p.error ? `failed: ${p.error}` : p.done ? "done" : p.status}
          {!p.done && p.total ? ` · ${fmtBytes(p.completed ?? 0)} / ${fmtBytes(p.total)}` : ""}
        </span>
      </div>
      <progress max={1} value={share} aria-label={`Pull of ${p.model} on ${name}`} />
    </li>
  );
}

/** A form to pull a model and the progress of recent pulls. */
export default function PullPanel(props: PullPanelProps) {
  const [pulls, setPulls] = useState(props.pulls);
  const [model, setModel] = useState("");
  const [chosen, setChosen] = useState<string[] | "all">(
    props.agents.length === 1 ? [props.agents[0].id] : "all",
  );
  const { busy, error, setError, run } = useAction();
  const [agents, setAgents] = useState(props.agents);
  const single = props.agents.length === 1;
  /** On an agent's page only its pulls show; on the models page every pull does. */
  const only = single ? props.agents[0].id : null;
  const names = new Map(agents.map((a) => [a.id, a.name]));

  useEffect(() =>
    listen({
      on(event, data) {
        if (event === "progress") {
          const mine = (data as PullProgress[]).filter((p) => !only || p.agent_id === only);
          if (mine.length) setPulls((list) => mergeProgress(list, mine));
        } else if (event === "agents" && !single) {
          setAgents((list) => {
            const next = [...list];
            for (const a of data as AgentRow[]) {
              const t = { id: a.id, name: agentName(a), status: a.status };
              const i = next.findIndex((x) => x.id === a.id);
              if (i === -1) next.push(t);
              else next[i] = t;
            }
            return next;
          });
        } else if (event === "removed" && !single) {
          const gone = new Set(data as string[]);
          setAgents((list) => list.filter((a) => !gone.has(a.id)));
        }
      },
      resync: () =>
        void api<PullProgress[]>("/api/models/pulls").then((all) =>
          setPulls(all.filter((p) => !only || p.agent_id === only).slice(0, 20))
        ).catch(() => {}),
    }), []);

  const submit = async (e: Event) => {
    e.preventDefault();
    setError("");
    if (!model.trim()) return setError("Name a model to pull, e.g. llama3.2");
    if (chosen !== "all" && chosen.length === 0) return setError("Choose at least one agent");
    await run(async () => {
      const res = await api<{ pulls: { id: string; agent_id: string }[] }>("/api/models/pull", {
        json: { model: model.trim(), agents: chosen },
      });
      setPulls((list) =>
        mergeProgress(
          list,
          res.pulls.filter((p) => !list.some((x) => x.id === p.id)).map((p) => ({
            id: p.id,
            agent_id: p.agent_id,
            model: model.trim(),
            status: "starting",
            done: false,
          })),
        )
      );
      setModel("");
    });
  };

  const toggle = (id: string, on: boolean) => {
    const current = chosen === "all" ? [] : chosen;
    setChosen(on ? [...current, id] : current.filter((x) => x !== id));
  };

  return (
    <div class="pull-panel">
      <form class="pull-form" onSubmit={submit}>
        <label class="grow">
          <span class="label">Model</span>
          <input
            name="model"
            placeholder="llama3.2, qwen2.5:7b, hf.co/…"
            value={model}
            required
            onInput={(e) => setModel((e.target as HTMLInputElement).value)}
          />
        </label>
        <button type="submit" class="primary" disabled={busy}>Pull</button>
        {!single && (
          <fieldset class="targets">
            <legend class="label">Onto</legend>
            <label class="check">
              <input
                type="checkbox"
                name="all"
                checked={chosen === "all"}
                onChange={(e) => setChosen((e.target as HTMLInputElement).checked ? "all" : [])}
              />
              every reachable agent
            </label>
            {agents.map((a) => (
              <label class="check" key={a.id}>
                <input
                  type="checkbox"
                  value={a.id}
                  disabled={chosen === "all" || a.status === "offline"}
                  checked={chosen === "all" ? a.status !== "offline" : chosen.includes(a.id)}
                  onChange={(e) => toggle(a.id, (e.target as HTMLInputElement).checked)}
                />
                {a.name}
              </label>
            ))}
          </fieldset>
        )}
      </form>
      {error && <p class="error" role="alert">{error}</p>}
      {pulls.length > 0 && (
        <ul class="pulls" aria-label="Pulls">
          {pulls.map((p) => (
            <ProgressRow key={p.id} p={p} name={names.get(p.agent_id) ?? "agent"} />
          ))}
        </ul>
      )}
    </div>
  );
}
