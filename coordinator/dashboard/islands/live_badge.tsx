/** The header's badge: whether live updates are flowing. Every page has it. */
import { useEffect, useState } from "preact/hooks";
import { connection, listen } from "../lib/live.ts";

const LABELS = {
  static: "Static",
  connecting: "Connecting…",
  live: "Live",
  reconnecting: "Reconnecting…",
};

/** Shows the live stream's state ("Static" without JavaScript). */
export default function LiveBadge() {
  // The first render matches the server's markup; the real state follows once hydrated.
  const [hydrated, setHydrated] = useState(false);
  useEffect(() => {
    setHydrated(true);
    return listen({ on() {} });
  }, []);
  const state = hydrated ? connection.value : "static";
  return (
    <span class={`live ${state}`} role="status" title="Live updates from the coordinator">
      <span class="dot" aria-hidden="true" />
      {LABELS[state]}
    </span>
  );
}
