/**
 * The fleet's models, derived from the agents' lists: which agents have each model installed
 * and which have it loaded. Shared by the server (`GET /api/models`, the models page) and the
 * models island, which recomputes it on every live agent update.
 */
import { displayModelName, normalizeModelName } from "../../../shared/model_name.ts";
import type { AgentView } from "../../../shared/schemas.ts";

/** One agent's copy of a model. */
export interface ModelCopy {
  agent_id: string;
  agent_name: string;
  status: AgentView["status"];
  size?: number;
  digest?: string;
  modified_at?: string;
}

/** One loaded instance of a model. */
export interface LoadedCopy {
  agent_id: string;
  agent_name: string;
  size_vram?: number;
  expires_at?: string;
}

/** A model as the fleet has it. */
export interface FleetModel {
  /** Short name, as Ollama lists it (`llama3.2:latest`). */
  name: string;
  /** Normalised name: the key routing uses. */
  key: string;
  size: number | null;
  family: string | null;
  parameter_size: string | null;
  quantization: string | null;
  installed: ModelCopy[];
  loaded: LoadedCopy[];
}

/** The name to show for an agent. */
export function agentName(a: Pick<AgentView, "display_name" | "machine_name">): string {
  return a.display_name || a.machine_name;
}

/** Every model on any agent, sorted by name. */
export function fleetModelView(agents: AgentView[]): FleetModel[] {
  const byKey = new Map<string, FleetModel>();
  const entry = (raw: string): FleetModel => {
    const key = normalizeModelName(raw);
    let m = byKey.get(key);
    if (!m) {
      m = {
        name: displayModelName(raw),
        key,
        size: null,
        family: null,
        parameter_size: null,
        quantization: null,
        installed: [],
        loaded: [],
      };
      byKey.set(key, m);
    }
    return m;
  };
  for (const a of agents) {
    const name = agentName(a);
    for (const im of a.models) {
      const m = entry(im.name);
      m.size ??= im.size ?? null;
      m.family ??= im.details?.family ?? null;
      m.parameter_size ??= im.details?.parameter_size ?? null;
      m.quantization ??= im.details?.quantization_level ?? null;
      m.installed.push({
        agent_id: a.id,
        agent_name: name,
        status: a.status,
        size: im.size,
        digest: im.digest,
        modified_at: im.modified_at,
      });
    }
    for (const lm of a.loaded_models) {
      const m = entry(lm.name);
      m.family ??= lm.details?.family ?? null;
      m.loaded.push({
        agent_id: a.id,
        agent_name: name,
        size_vram: lm.size_vram,
        expires_at: lm.expires_at,
      });
    }
  }
  return [...byKey.values()].sort((x, y) => x.name.localeCompare(y.name));
}
