/** The events: registrations, status changes, drains, pulls, failures, newest first, live. */
import { useEffect, useState } from "preact/hooks";
import type { FleetEvent } from "../wire.ts";
import { api } from "../lib/api.ts";
import { fmtDateTime } from "../lib/format.ts";
import { listen } from "../lib/live.ts";

/** Props of the event log island. */
export interface EventLogProps {
  events: FleetEvent[];
  /** The agents that exist when the page is rendered, by id (with their names), for links. */
  agents: Record<string, string>;
  /** Only this agent's events. */
  agentId?: string;
  limit: number;
  /** A short list (the overview): no paging. */
  compact?: boolean;
}

const TONE: Record<string, string> = {
  registered: "good",
  enable: "good",
  pulled: "good",
  drain: "warn",
  circuit_open: "bad",
  pull_failed: "bad",
  warm: "good",
  warm_failed: "bad",
  delete_failed: "bad",
  removed: "muted",
};

function tone(e: FleetEvent): string {
  if (e.kind === "status") {
    return / is online/.test(e.message) ? "good" : / is offline/.test(e.message) ? "bad" : "warn";
  }
  return TONE[e.kind] ?? "";
}

/**
 * The agents events may link to, after live events (oldest first): an agent that an event
 * names exists, unless a later "removed" event says it is gone (its page would be a 404).
 */
export function linkable(known: ReadonlySet<string>, events: FleetEvent[]): Set<string> {
  const next = new Set(known);
  for (const e of events) {
    if (!e.agent_id) continue;
    if (e.kind === "removed") next.delete(e.agent_id);
    else next.add(e.agent_id);
  }
  return next;
}

/** A live list of events. */
export default function EventLog(props: EventLogProps) {
  const [events, setEvents] = useState(props.events);
  const [agents, setAgents] = useState<ReadonlySet<string>>(
    () => new Set(Object.keys(props.agents)),
  );
  const [more, setMore] = useState(props.events.length >= props.limit);
  const query = (extra: string) =>
    `/api/events?limit=${props.limit}${
      props.agentId ? `&agent_id=${encodeURIComponent(props.agentId)}` : ""
    }${extra}`;

  useEffect(() =>
    listen({
      on(event, data) {
        if (event !== "events") return;
        const all = data as FleetEvent[];
        setAgents((known) => linkable(known, all));
        const added = all.filter((e) => !props.agentId || e.agent_id === props.agentId).reverse();
        if (!added.length) return;
        setEvents((list) => {
          const seen = new Set(list.map((e) => e.id));
          const next = [...added.filter((e) => !seen.has(e.id)), ...list];
          return props.compact ? next.slice(0, props.limit) : next;
        });
      },
      resync: () => void api<FleetEvent[]>(query("")).then(setEvents).catch(() => {}),
    }), []);

  const older = async () => {
    const last = events[events.length - 1];
    if (!last) return;
    const page = await api<FleetEvent[]>(query(`&before=${last.id}`));
    setEvents((list) => [...list, ...page]);
    setMore(page.length >= props.limit);
  };

  const last = events[events.length - 1];
  return (
    <div>
      <ol class="events">
        {events.map((e) => (
          <li key={e.id} class={`event ${tone(e)}`} data-kind={e.kind}>
            <time dateTime={e.at}>{fmtDateTime(e.at)}</time>
            <span class="kind">{e.kind.replace("_", " ")}</span>
            <span class="message">
              {e.message}
              {e.agent_id && agents.has(e.agent_id) && !props.agentId && (
                <>
                  {" "}
                  <a href={`/dashboard/agents/${e.agent_id}`} class="small">view agent</a>
                </>
              )}
            </span>
          </li>
        ))}
        {events.length === 0 && <li class="empty">Nothing has happened yet.</li>}
      </ol>
      {!props.compact && more && last && (
        <a
          class="button"
          href={`?before=${last.id}`}
          onClick={(e) => {
            e.preventDefault();
            void older();
          }}
        >
          Older events
        </a>
      )}
    </div>
  );
}
