/**
 * Commands waiting for agents (pull or delete a model). They ride on the reply to the agent's
 * next heartbeat; the agent reports progress back, which is published on the bus.
 */
import type { AgentCommand, CommandProgress } from "@oc/shared";
import type { Bus } from "../telemetry/bus.ts";

/** The queue of commands per agent, and the last progress of each command. */
export class CommandQueue {
  readonly #pending = new Map<string, AgentCommand[]>();
  readonly #bus?: Bus;
  /** Last progress per command id, so a page opened late still sees where a pull is. */
  readonly last = new Map<string, CommandProgress & { agent_id: string; model: string }>();
  readonly #models = new Map<string, string>();

  constructor(bus?: Bus) {
    this.#bus = bus;
  }

  /** Queues a command for an agent; returns it. */
  add(agentId: string, type: AgentCommand["type"], model: string): AgentCommand {
    const cmd: AgentCommand = { id: crypto.randomUUID(), type, model };
    const list = this.#pending.get(agentId) ?? [];
    list.push(cmd);
    this.#pending.set(agentId, list);
    this.#models.set(cmd.id, model);
    this.progress(agentId, { command_id: cmd.id, status: "queued" });
    return cmd;
  }

  /** Hands an agent its waiting commands (once). */
  take(agentId: string): AgentCommand[] {
    const list = this.#pending.get(agentId);
    if (!list) return [];
    this.#pending.delete(agentId);
    return list;
  }

  /** Records and publishes an agent's progress report. */
  progress(agentId: string, p: CommandProgress): void {
    const model = this.#models.get(p.command_id) ?? "";
    const entry = { ...p, agent_id: agentId, model };
    this.last.delete(p.command_id);
    this.last.set(p.command_id, entry);
    if (this.last.size > 500) this.last.delete(this.last.keys().next().value!);
    if (p.done || p.error) this.#models.delete(p.command_id);
    this.#bus?.publish({ type: "progress", progress: entry });
  }

  /** Drops everything queued for a removed agent. */
  forget(agentId: string): void {
    this.#pending.delete(agentId);
  }
}
