/** The dashboard's page frame: head, navigation, the live badge and the islands' scripts. */
import type { ComponentChildren } from "preact";
import { useContext } from "preact/hooks";
import { Island, IslandsUsed } from "./island.tsx";
import LiveBadge from "../islands/live_badge.tsx";

/** The navigation, in order. */
export const NAV = [
  ["/dashboard", "Overview"],
  ["/dashboard/agents", "Agents"],
  ["/dashboard/models", "Models"],
  ["/dashboard/placement", "Placement"],
  ["/dashboard/requests", "Requests"],
  ["/dashboard/keys", "Keys"],
  ["/dashboard/events", "Events"],
] as const;

/** Props of {@linkcode Layout}. */
export interface LayoutProps {
  title: string;
  /** The navigation entry to highlight. */
  active: string;
  /** What the page's live stream carries (see routes/live.ts). */
  topics: string[];
  /** The agent whose charts the stream should carry, on an agent's page. */
  agent?: string;
  /** Island scripts are served under this hash; absent, no script is loaded. */
  islandsHash?: string;
  cssVersion?: string;
  children: ComponentChildren;
}

function IslandScripts({ hash }: { hash?: string }) {
  const used = useContext(IslandsUsed);
  if (!hash || !used) return null;
  return (
    <>
      {[...used].sort().map((name) => (
        <script key={name} type="module" src={`/static/islands/${hash}/${name}.js`} />
      ))}
    </>
  );
}

/** A full dashboard page. */
export function Layout(p: LayoutProps) {
  return (
    <html lang="en">
      <head>
        <meta charset="utf-8" />
        <meta name="viewport" content="width=device-width, initial-scale=1" />
        <meta name="color-scheme" content="light dark" />
        <title>{`${p.title} · Ollama Coordinator`}</title>
        <link rel="icon" href="/favicon.ico" sizes="32x32" />
        <link rel="stylesheet" href={`/static/dashboard.css?v=${p.cssVersion ?? "0"}`} />
      </head>
      <body data-topics={p.topics.join(",")} data-agent={p.agent}>
        <header class="top">
          <a class="brand" href="/dashboard">
            <span class="logo" aria-hidden="true">◆</span> Ollama Coordinator
          </a>
          <nav aria-label="Dashboard">
            {NAV.map(([href, label]) => (
              <a href={href} aria-current={p.active === href ? "page" : undefined}>{label}</a>
            ))}
          </nav>
          <Island name="live_badge" component={LiveBadge} props={{}} />
        </header>
        <main>{p.children}</main>
        <IslandScripts hash={p.islandsHash} />
      </body>
    </html>
  );
}
