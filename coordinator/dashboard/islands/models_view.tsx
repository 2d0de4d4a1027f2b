/** The models page: every model across the fleet, where it is installed and loaded, live. */
import { useEffect, useState } from "preact/hooks";
import type { AgentRow } from "../wire.ts";
import { api } from "../lib/api.ts";
import { fmtBytes } from "../lib/format.ts";
import { applyAgentMessage, listen } from "../lib/live.ts";
import { fleetModelView } from "../lib/models.ts";

/** Props of the models island. */
export interface ModelsViewProps {
  agents: AgentRow[];
}

/** The fleet's models; a copy on an agent can be deleted from here. */
export default function ModelsView(props: ModelsViewProps) {
  const [agents, setAgents] = useState(props.agents);
  const [error, setError] = useState("");
  const [q, setQ] = useState("");

  useEffect(() =>
    listen({
      on(event, data) {
        setAgents((list) => applyAgentMessage(list, event, data));
      },
      resync: () =>
        void api<{ agents: AgentRow[] }>("/api/fleet").then((f) => setAgents(f.agents)).catch(
          () => {},
        ),
    }), []);

  const remove = async (agentId: string, agentName: string, model: string) => {
    if (!confirm(`Delete "${model}" from ${agentName}?`)) return;
    setError("");
    try {
      await api(`/api/models/${encodeURIComponent(agentId)}/${encodeURIComponent(model)}`, {
        method: "DELETE",
      });
    } catch (e) {
      setError((e as Error).message);
    }
  };

  const needle = q.trim().toLowerCase();
  const models = fleetModelView(agents).filter((m) =>
    !needle || m.name.toLowerCase().includes(needle) ||
    (m.family ?? "").toLowerCase().includes(needle)
  );
  return (
    <div>
      <form class="filters" onSubmit={(e) => e.preventDefault()}>
        <input
          type="search"
          placeholder="Filter models…"
          aria-label="Filter models"
          value={q}
          onInput={(e) => setQ((e.target as HTMLInputElement).value)}
        />
        <span class="count">{models.length} models on {agents.length} agents</span>
      </form>
      {error && <p class="error" role="alert">{error}</p>}
      <div class="table-wrap">
        <table class="models stack-sm">
          <thead>
            <tr>
              <th>Model</th>
              <th class="hide-sm">Family</th>
              <th class="hide-sm">Parameters</th>
              <th class="hide-sm">Quant.</th>
              <th class="num">Size</th>
              <th>Installed on</th>
              <th>Loaded on</th>
            </tr>
          </thead>
          <tbody>
            {models.map((m) => (
              <tr key={m.key} data-model={m.name}>
                <td class="strong">{m.name}</td>
                <td class="hide-sm">{m.family ?? "–"}</td>
                <td class="hide-sm">{m.parameter_size ?? "–"}</td>
                <td class="hide-sm">{m.quantization ?? "–"}</td>
                <td class="num" data-label="Size">{fmtBytes(m.size)}</td>
                <td data-label="Installed on">
                  <span class="chips">
                    {m.installed.map((c) => (
                      <span
                        class={`chip agent ${c.status}`}
                        key={c.agent_id}
                        data-agent-id={c.agent_id}
                      >
                        <a href={`/dashboard/agents/${c.agent_id}`}>{c.agent_name}</a>
                        <button
                          type="button"
                          class="x"
                          title={`Delete ${m.name} from ${c.agent_name}`}
                          aria-label={`Delete ${m.name} from ${c.agent_name}`}
                          disabled={c.status === "offline"}
                          onClick={() => void remove(c.agent_id, c.agent_name, m.name)}
                        >
                          ×
                        </button>
                      </span>
                    ))}
                  </span>
                </td>
                <td data-label="Loaded on">
                  {m.loaded.length
                    ? (
                      <span class="chips">
                        {m.loaded.map((c) => (
                          <span
                            class="chip loaded"
                            key={c.agent_id}
                            title={c.size_vram ? `${fmtBytes(c.size_vram)} in VRAM` : undefined}
                          >
                            {c.agent_name}
                          </span>
                        ))}
                      </span>
                    )
                    : <span class="muted">–</span>}
                </td>
              </tr>
            ))}
            {models.length === 0 && (
              <tr>
                <td colSpan={7} class="empty">
                  {agents.length ? "No model matches." : "No agent has registered yet."}
                </td>
              </tr>
            )}
          </tbody>
        </table>
      </div>
    </div>
  );
}
