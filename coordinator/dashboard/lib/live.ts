/**
 * The page's one live connection: an EventSource on `/api/stream` shared by every island on
 * the page. The topics (and the agent, on an agent's page) come from `<body data-topics
 * data-agent>`, which the server sets per page.
 *
 * After every (re)connection each listener's `resync` runs, so state missed while the stream
 * was down (a coordinator restart, a laptop asleep) is fetched again; the browser reconnects by
 * itself after the `retry:` the server sends, and a stream the browser gave up on is reopened.
 */
import { signal } from "@preact/signals";

/** The connection's state, for the live badge. */
export const connection = signal<"connecting" | "live" | "reconnecting">("connecting");

/** The current time, ticking once a second while some island shows relative times. */
export const now = signal(Date.now());

/** A subscriber: `on` gets every message, `resync` runs after each (re)connection. */
export interface Listener {
  on(event: string, data: unknown): void;
  resync?(): void;
}

const EVENTS = ["agents", "removed", "events", "requests", "progress", "stats"];
const listeners = new Set<Listener>();
let source: EventSource | undefined;
let ticking = false;

/** Adds a listener and opens the connection if needed; returns the function that removes it. */
export function listen(l: Listener): () => void {
  listeners.add(l);
  queueMicrotask(connect);
  return () => listeners.delete(l);
}

/** Starts the once-a-second clock used for "12 s ago". */
export function tick(): void {
  if (ticking) return;
  ticking = true;
  setInterval(() => now.value = Date.now(), 1000);
}

function dispatch(event: string, data: unknown): void {
  for (const l of listeners) {
    try {
      l.on(event, data);
    } catch (e) {
      console.error(`Live update "${event}" failed:`, e);
    }
  }
}

function connect(): void {
  if (source || typeof EventSource === "undefined") return;
  const { topics, agent } = document.body.dataset;
  const query = new URLSearchParams();
  if (topics) query.set("topics", topics);
  if (agent) query.set("agent", agent);
  const es = new EventSource(`/api/stream?${query}`);
  source = es;
  es.addEventListener("hello", () => {
    connection.value = "live";
    for (const l of listeners) l.resync?.();
  });
  for (const name of EVENTS) {
    es.addEventListener(name, (e) => dispatch(name, JSON.parse((e as MessageEvent).data)));
  }
  es.onerror = () => {
    connection.value = "reconnecting";
    // CLOSED: the browser will not retry (an error status); open a new stream a bit later.
    if (es.readyState === EventSource.CLOSED) {
      source = undefined;
      setTimeout(connect, 5000);
    }
  };
}

/**
 * An agent list after one live message: `agents` rows replace or join the list by id, `removed`
 * ids leave it; any other message leaves it as it is (the same array).
 */
export function applyAgentMessage<T extends { id: string }>(
  list: T[],
  event: string,
  data: unknown,
): T[] {
  if (event === "agents") {
    const next = [...list];
    for (const r of data as T[]) {
      const i = next.findIndex((a) => a.id === r.id);
      if (i === -1) next.push(r);
      else next[i] = r;
    }
    return next;
  }
  if (event === "removed") {
    const ids = new Set(data as string[]);
    return list.filter((a) => !ids.has(a.id));
  }
  return list;
}
