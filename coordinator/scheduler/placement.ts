/**
 * Where server-local work goes. Models live on one agent's disk, so a pull, a push, a blob upload,
 * the create that uses it, a copy or a delete must reach particular agents, not just any with a
 * free slot: these decisions, like the inference ones in `mod.ts`, are made in the scheduler.
 */
import { normalizeModelName } from "@oc/shared";
import type { Agent, Registry } from "../fleet/registry.ts";
import { MESSAGES } from "../http/messages.ts";
import { NoAgentError } from "./no_agent.ts";

/**
 * What `X-Coordinator-Agent` asked for: every agent (`"all"`), the agents it names (empty when it
 * names none we know), or nothing (undefined).
 */
export type Pin = "all" | readonly Agent[] | undefined;

/** Blob homes remembered at most: an upload is followed by its create within minutes. */
const BLOB_HOMES_LIMIT = 10_000;

/** The agents among `agents` that have `model` installed. */
export function withModel(agents: readonly Agent[], model: string): Agent[] {
  const key = normalizeModelName(model);
  return agents.filter((a) => a.modelKeys.has(key));
}

/** The agent with the fewest requests in flight (the first of those tied). */
export function leastBusy(agents: readonly Agent[]): Agent {
  return [...agents].sort((a, b) => a.inFlight - b.inFlight)[0];
}

/** For a pull: an agent that lacks the model, then the least busy, then the most free memory. */
export function pullTarget(agents: readonly Agent[], model: string): Agent {
  const key = normalizeModelName(model);
  const free = (a: Agent) => (a.metrics?.memory_total ?? 0) - (a.metrics?.memory_used ?? 0);
  return [...agents].sort((a, b) =>
    Number(a.modelKeys.has(key)) - Number(b.modelKeys.has(key)) ||
    a.inFlight - b.inFlight || free(b) - free(a)
  )[0];
}

/**
 * Placement of server-local requests. Throws {@linkcode NoAgentError} (404 or 503) when there is
 * nowhere to send one. Keeps where each blob was uploaded, so the create that uses it follows.
 */
export class Placement {
  readonly #registry: Registry;
  /** Blob digest → id of the agent it was uploaded to, oldest first. */
  readonly #blobHomes = new Map<string, string>();
  /**
   * Told of each upload sent from here, so other coordinators sharing the store can send the
   * create that follows (through another of them, behind a load balancer) to the same agent.
   */
  onBlob?: (digest: string, agentId: string) => void;

  constructor(registry: Registry) {
    this.#registry = registry;
  }

  #online(): Agent[] {
    return this.#registry.all().filter((a) => a.status === "online");
  }

  #onlineOrThrow(): Agent[] {
    const online = this.#online();
    if (online.length === 0) throw new NoAgentError(MESSAGES.noAgentOnline, 503, 5);
    return online;
  }

  /**
   * Pull or push: the pinned agent, every online agent (`all`), else for a push the first agent
   * that has the model and for a pull {@linkcode pullTarget}.
   */
  transferTargets(model: string, options: { verb: "pull" | "push"; pin?: Pin }): Agent[] {
    const online = this.#onlineOrThrow();
    const { pin } = options;
    if (pin === "all") return online;
    if (pin !== undefined) {
      const agent = pin[0];
      if (!agent) throw new NoAgentError(MESSAGES.unknownAgent, 404);
      if (agent.status === "offline") {
        throw new NoAgentError(MESSAGES.agentOffline(this.#registry.label(agent)), 503);
      }
      return [agent];
    }
    if (options.verb === "push") {
      const holders = withModel(online, model);
      if (!holders.length) throw new NoAgentError(MESSAGES.modelNotInstalled(model), 404);
      return holders.slice(0, 1);
    }
    return [pullTarget(online, model)];
  }

  /**
   * A blob check or upload: the pinned agent, else where the blob went before, while online;
   * otherwise the least busy online agent. An upload's agent is remembered for the create.
   */
  blobTarget(digest: string, options: { pin?: Pin; upload: boolean }): Agent {
    const { pin } = options;
    let agent = pin === undefined
      ? this.#registry.get(this.#blobHomes.get(digest) ?? "")
      : pin === "all"
      ? undefined
      : pin[0];
    if (agent?.status !== "online") agent = undefined;
    agent ??= leastBusy(this.#onlineOrThrow());
    if (options.upload) {
      this.rememberBlob(digest, agent.id);
      this.onBlob?.(digest, agent.id);
    }
    return agent;
  }

  /**
   * A create: the pinned agent, else the one holding its uploaded blobs, else one that has the
   * model it starts `from`, else the least busy.
   */
  createTarget(options: { files: readonly unknown[]; from?: string | null; pin?: Pin }): Agent {
    const online = this.#onlineOrThrow();
    const { pin } = options;
    let agent = pin === undefined || pin === "all" ? undefined : pin[0];
    for (const digest of options.files) {
      if (agent) break;
      const id = typeof digest === "string" ? this.#blobHomes.get(digest) : undefined;
      agent = online.find((a) => a.id === id);
    }
    if (!agent && options.from) agent = withModel(online, options.from)[0];
    return agent ?? leastBusy(online);
  }

  /** Copy or delete: every online agent that has the model, or those of them pinned. */
  holders(model: string, options: { pin?: Pin } = {}): Agent[] {
    const { pin } = options;
    let agents = withModel(this.#online(), model);
    if (pin !== undefined && pin !== "all") agents = agents.filter((a) => pin.includes(a));
    if (!agents.length) throw new NoAgentError(MESSAGES.modelNotInstalled(model), 404);
    return agents;
  }

  /** Notes that the blob `digest` went to `agentId` (through this coordinator or another). */
  rememberBlob(digest: string, agentId: string): void {
    this.#blobHomes.set(digest, agentId);
    if (this.#blobHomes.size > BLOB_HOMES_LIMIT) {
      this.#blobHomes.delete(this.#blobHomes.keys().next().value!);
    }
  }
}
