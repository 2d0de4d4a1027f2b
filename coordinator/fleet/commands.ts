/**
 * Commands waiting for agents (pull or delete a model). They ride on the reply to the agent's
 * next heartbeat; the agent reports progress back, which is published on the bus.
 */
import type { AgentCommand, CommandProgress } from "@oc/shared";
import type { Bus } from "../telemetry/bus.ts";

/** What happened to the queue here, for the other coordinators sharing the fleet. */
export type CommandChange =
  | { kind: "added"; agentId: string; command: AgentCommand }
  | { kind: "taken"; agentId: string; ids: string[] }
  | { kind: "progress"; agentId: string; model: string; progress: CommandProgress };

/**
 * The queue of commands per agent, and the last progress of each command. With several
 * coordinators each holds every command (an agent heartbeats to one of them): additions, hand-outs
 * and progress are told to the others through {@linkcode onChange} and applied with `remote`.
 */
export class CommandQueue {
  readonly #pending = new Map<string, AgentCommand[]>();
  readonly #bus?: Bus;
  /** Called with every change made here (not with those applied from elsewhere). */
  onChange?: (change: CommandChange) => void;
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
    this.onChange?.({ kind: "added", agentId, command: cmd });
    this.progress(agentId, { command_id: cmd.id, status: "queued" });
    return cmd;
  }

  /** Hands an agent its waiting commands (once). */
  take(agentId: string): AgentCommand[] {
    const list = this.#pending.get(agentId);
    if (!list) return [];
    this.#pending.delete(agentId);
    this.onChange?.({ kind: "taken", agentId, ids: list.map((c) => c.id) });
    return list;
  }

  /** Records and publishes an agent's progress report. */
  progress(agentId: string, p: CommandProgress): void {
    const model = this.#models.get(p.command_id) ?? "";
    this.onChange?.({ kind: "progress", agentId, model, progress: p });
    this.#record(agentId, model, p);
  }

  #record(agentId: string, model: string, p: CommandProgress): void {
    const entry = { ...p, agent_id: agentId, model };
    this.last.delete(p.command_id);
    this.last.set(p.command_id, entry);
    if (this.last.size > 500) this.last.delete(this.last.keys().next().value!);
    if (p.done || p.error) this.#models.delete(p.command_id);
    this.#bus?.publish({ type: "progress", progress: entry });
  }

  /** Applies a change another coordinator made. */
  remote(change: CommandChange): void {
    if (change.kind === "added") {
      const list = this.#pending.get(change.agentId) ?? [];
      list.push(change.command);
      this.#pending.set(change.agentId, list);
      this.#models.set(change.command.id, change.command.model);
    } else if (change.kind === "taken") {
      const left = (this.#pending.get(change.agentId) ?? []).filter((c) =>
        !change.ids.includes(c.id)
      );
      if (left.length) this.#pending.set(change.agentId, left);
      else this.#pending.delete(change.agentId);
    } else {
      if (change.model) this.#models.set(change.progress.command_id, change.model);
      this.#record(change.agentId, change.model, change.progress);
    }
  }

  /** Drops everything queued for a removed agent. */
  forget(agentId: string): void {
    this.#pending.delete(agentId);
  }
}
