/**
 * The dashboard's pages, rendered on the server with Preact; their interactive parts are islands
 * hydrated in the browser and kept current by the live stream (routes/live.ts). Every page reads
 * well without JavaScript. Also the static files (CSS, island bundles) under /static.
 */
import { Hono } from "hono";
import type { Context } from "hono";
import type { VNode } from "preact";
import { renderToString } from "preact-render-to-string";
import { createHash } from "node:crypto";
import type { RequestLog } from "../telemetry/request_log.ts";
import { access } from "../http/access.ts";
import { Island, IslandsUsed } from "./components/island.tsx";
import { Layout } from "./components/layout.tsx";
import { BUNDLES_DIR, ensureIslands, islandsHash } from "./components/island_bundle.ts";
import Overview from "./islands/overview.tsx";
import AgentsTable, { type SortKey, SORTS } from "./islands/agents_table.tsx";
import AgentDetail from "./islands/agent_detail.tsx";
import ModelsView from "./islands/models_view.tsx";
import PullPanel from "./islands/pull_panel.tsx";
import AliasesPanel from "./islands/aliases_panel.tsx";
import PlacementView from "./islands/placement_view.tsx";
import RequestLogView from "./islands/request_log.tsx";
import EventLog from "./islands/event_log.tsx";
import KeysView from "./islands/keys_view.tsx";
import { agentName, fleetModelView } from "./lib/models.ts";
import { agentRow, fleetSnapshot, fleetSummary, type LiveContext } from "../api/admin/live.ts";
import { pullsOf } from "../api/admin/models.ts";
import { OLLAMA_INFERENCE } from "../api/ollama.ts";
import { OPENAI_INFERENCE } from "../api/openai.ts";
import { ANTHROPIC_INFERENCE } from "../api/anthropic.ts";
import { parseRequestFilter, toQuery } from "../api/admin/requests.ts";
import { keyRows, keyUsage } from "../api/admin/keys.ts";

/** What the pages need. */
export type DashboardContext = LiveContext & { log?: RequestLog };

/** Routes whose requests the log records, for the requests page's filter. */
const LOGGED_ROUTES = [
  ...Object.keys(OLLAMA_INFERENCE),
  ...Object.keys(OPENAI_INFERENCE),
  ...Object.keys(ANTHROPIC_INFERENCE),
];

const STATIC_DIR = new URL("./static/", import.meta.url);
let cssVersion: string | undefined;

function cssHash(): string {
  try {
    cssVersion ??= createHash("sha256").update(
      Deno.readFileSync(new URL("dashboard.css", STATIC_DIR)),
    ).digest("hex").slice(0, 10);
  } catch {
    cssVersion = "0";
  }
  return cssVersion;
}

let bundleFailure = "";

/** Starts bundling the islands (once) so the scripts are ready when the browser asks. */
function prepareIslands(): void {
  ensureIslands().then(() => bundleFailure = "").catch((e) => {
    const message = (e as Error).message;
    if (message !== bundleFailure) console.error(message);
    bundleFailure = message;
  });
}

interface PageOptions {
  title: string;
  active: string;
  topics: string[];
  agent?: string;
  status?: number;
}

function page(o: PageOptions, body: VNode): Response {
  prepareIslands();
  const used = new Set<string>();
  const html = renderToString(
    <IslandsUsed.Provider value={used}>
      <Layout
        title={o.title}
        active={o.active}
        topics={o.topics}
        agent={o.agent}
        islandsHash={islandsHash()}
        cssVersion={cssHash()}
      >
        {body}
      </Layout>
    </IslandsUsed.Provider>,
  );
  return new Response(`<!doctype html>${html}`, {
    status: o.status ?? 200,
    headers: {
      "content-type": "text/html; charset=utf-8",
      "cache-control": "no-store",
      "x-content-type-options": "nosniff",
      "referrer-policy": "same-origin",
    },
  });
}

function notFound(what: string): Response {
  return page(
    { title: "Not found", active: "", topics: [], status: 404 },
    <section class="panel narrow">
      <h1>Not found</h1>
      <p>{what}</p>
      <p>
        <a href="/dashboard">Back to the overview</a>
      </p>
    </section>,
  );
}

function agentNames(ctx: DashboardContext): Record<string, string> {
  return Object.fromEntries(ctx.registry.all().map((a) => [a.id, ctx.registry.label(a)]));
}

/** The dashboard pages, mounted at /dashboard (for admins). */
export function dashboardRoutes(ctx: DashboardContext): Hono {
  const app = new Hono();

  app.get("/", access.admin, async () => {
    const summary = fleetSummary(ctx);
    return page(
      { title: "Overview", active: "/dashboard", topics: ["stats", "events"] },
      <>
        <Island
          name="overview"
          component={Overview}
          props={{ summary, series: ctx.stats.series("5m") }}
        />
        <section class="panel">
          <div class="section-head">
            <h2>Recent events</h2>
            <a href="/dashboard/events">All events</a>
          </div>
          <Island
            name="event_log"
            component={EventLog}
            props={{
              events: await ctx.registry.events({ limit: 8 }),
              agents: agentNames(ctx),
              limit: 8,
              compact: true,
            }}
          />
        </section>
      </>,
    );
  });

  app.get("/agents", access.admin, (c) => {
    const sort = (c.req.query("sort") ?? "name") as SortKey;
    const snapshot = fleetSnapshot(ctx);
    return page(
      { title: "Agents", active: "/dashboard/agents", topics: ["agents", "stats"] },
      <>
        <div class="page-head">
          <h1>Agents</h1>
          <p class="muted">Every machine that registered, with its health and load.</p>
        </div>
        <Island
          name="agents_table"
          component={AgentsTable}
          props={{
            agents: snapshot.agents,
            figures: snapshot.figures,
            sort: sort in SORTS ? sort : "name",
            desc: c.req.query("dir") === "desc",
            q: (c.req.query("q") ?? "").slice(0, 200),
            status: ["online", "offline", "draining"].includes(c.req.query("status") ?? "")
              ? c.req.query("status")!
              : "",
            serverNow: ctx.now(),
          }}
        />
      </>,
    );
  });

  app.get("/agents/:id", access.admin, async (c) => {
    const agent = ctx.registry.get(c.req.param("id"));
    if (!agent) return notFound("No agent has this id. It may have been removed.");
    const row = agentRow(ctx, agent);
    const pulls = pullsOf(ctx).list().filter((p) => p.agent_id === agent.id).slice(0, 20);
    return page(
      {
        title: agentName(row),
        active: "/dashboard/agents",
        topics: ["agents", "stats", "events", "progress"],
        agent: agent.id,
      },
      <>
        <Island
          name="agent_detail"
          component={AgentDetail}
          props={{
            agent: row,
            figures: ctx.stats.agent(agent.id),
            series: ctx.stats.agentSeries(agent.id, "5m"),
            serverNow: ctx.now(),
          }}
        />
        <div class="grid2">
          <section class="panel">
            <h2>Pull a model onto this agent</h2>
            <Island
              name="pull_panel"
              component={PullPanel}
              props={{
                agents: [{ id: agent.id, name: agentName(row), status: agent.status }],
                pulls,
              }}
            />
          </section>
          <section class="panel">
            <h2>Recent events</h2>
            <Island
              name="event_log"
              component={EventLog}
              props={{
                events: await ctx.registry.events({ limit: 10, agentId: agent.id }),
                agents: agentNames(ctx),
                agentId: agent.id,
                limit: 10,
                compact: true,
              }}
            />
          </section>
        </div>
      </>,
    );
  });

  app.get("/models", access.admin, () => {
    const { agents } = fleetSnapshot(ctx);
    return page(
      { title: "Models", active: "/dashboard/models", topics: ["agents", "progress"] },
      <>
        <div class="page-head">
          <h1>Models</h1>
          <p class="muted">Every model across the fleet: where it is installed and loaded.</p>
        </div>
        <section class="panel">
          <h2>Pull a model</h2>
          <Island
            name="pull_panel"
            component={PullPanel}
            props={{
              agents: agents.map((a) => ({ id: a.id, name: agentName(a), status: a.status })),
              pulls: pullsOf(ctx).list().slice(0, 20),
            }}
          />
        </section>
        <Island name="models_view" component={ModelsView} props={{ agents }} />
        <section class="panel">
          <h2>Aliases</h2>
          <p class="muted">
            Names that tools hard-code, served by a model of the fleet: a request for the alias goes
            to its model, and the answer names the alias.
          </p>
          <Island
            name="aliases_panel"
            component={AliasesPanel}
            props={{
              aliases: ctx.aliases.list(),
              models: fleetModelView(agents).map((m) => m.name),
            }}
          />
        </section>
      </>,
    );
  });

  app.get("/placement", access.admin, () =>
    page(
      { title: "Placement", active: "/dashboard/placement", topics: ["agents", "progress"] },
      <>
        <div class="page-head">
          <h1>Placement</h1>
          <p class="muted">
            Where each model should be. The coordinator pulls it where it is missing, onto machines
            that join later too, keeps it loaded where asked, and deletes it only where a rule says
            never.
          </p>
        </div>
        <Island
          name="placement_view"
          component={PlacementView}
          props={{ status: ctx.placement.status() }}
        />
      </>,
    ));

  app.get("/requests", access.admin, async (c) => {
    const parsed = parseRequestFilter(c.req.query());
    const filter = parsed.ok ? parsed.filter : { limit: 100 };
    const rows = await ctx.log?.query(toQuery({ ...filter, limit: Math.min(filter.limit, 500) })) ??
      [];
    return page(
      { title: "Requests", active: "/dashboard/requests", topics: ["requests"] },
      <>
        <div class="page-head">
          <h1>Requests</h1>
          <p class="muted">
            The most recent requests by start time, newest first; each appears once it has finished.
          </p>
        </div>
        {!parsed.ok && <p class="error" role="alert">{parsed.error}</p>}
        <Island
          name="request_log"
          component={RequestLogView}
          props={{
            rows,
            filter: {
              model: filter.model,
              agent_id: filter.agent_id,
              status: filter.status,
              route: filter.route,
              limit: Math.min(filter.limit, 500),
            },
            agents: ctx.registry.all().map((a) => ({ id: a.id, name: ctx.registry.label(a) })),
            routes: LOGGED_ROUTES,
          }}
        />
      </>,
    );
  });

  app.get("/keys", access.admin, async () => {
    const [keys, usage] = await Promise.all([keyRows(ctx), keyUsage(ctx, "1h")]);
    return page(
      { title: "API keys", active: "/dashboard/keys", topics: ["requests"] },
      <Island
        name="keys_view"
        component={KeysView}
        props={{ keys, usage, serverNow: ctx.now() }}
      />,
    );
  });

  app.get("/events", access.admin, async (c) => {
    const before = c.req.query("before");
    const agentId = c.req.query("agent_id") || undefined;
    const limit = 50;
    return page(
      { title: "Events", active: "/dashboard/events", topics: ["events"] },
      <>
        <div class="page-head">
          <h1>Events</h1>
          <p class="muted">
            Registrations, status changes, drains, pulls and failures, newest first.
          </p>
        </div>
        <section class="panel">
          <Island
            name="event_log"
            component={EventLog}
            props={{
              events: await ctx.registry.events({
                limit,
                agentId,
                beforeId: before && /^\d{1,15}$/.test(before) ? Number(before) : undefined,
              }),
              agents: agentNames(ctx),
              agentId,
              limit,
            }}
          />
        </section>
      </>,
    );
  });

  // "/dashboard/" and other unknown pages: the overview without the slash, else a 404 page.
  app.get("*", access.admin, (c: Context) => {
    if (c.req.path === "/dashboard/") return c.redirect("/dashboard", 308);
    return notFound(`There is no dashboard page at ${c.req.path.slice(0, 200)}.`);
  });

  return app;
}

const JS_HEADERS = {
  "content-type": "text/javascript; charset=utf-8",
  "cache-control": "public, max-age=31536000, immutable",
  "x-content-type-options": "nosniff",
};

/** The stylesheets in coordinator/dashboard/static/. */
const STYLESHEETS = ["dashboard.css", "login.css"];

let faviconBytes: Uint8Array | undefined;

/**
 * `GET /favicon.ico`: the dashboard's diamond, which browsers ask for at the root of the site
 * whatever the page links (the login page, a JSON answer opened in a tab).
 */
export async function favicon(): Promise<Response> {
  faviconBytes ??= await Deno.readFile(new URL("favicon.ico", STATIC_DIR));
  return new Response(faviconBytes.slice(), {
    headers: {
      "content-type": "image/x-icon",
      "cache-control": "public, max-age=86400",
      "x-content-type-options": "nosniff",
    },
  });
}

/** The static files, mounted at /static: public, they hold no data. */
export function staticRoutes(): Hono {
  const app = new Hono();

  // One literal route per stylesheet: a `/:file` route beside `/islands/:hash/:file` would keep
  // Hono from compiling all routes into one regular expression, its fast router.
  for (const file of STYLESHEETS) {
    app.get(
      `/${file}`,
      access.public,
      async () =>
        new Response(await Deno.readFile(new URL(file, STATIC_DIR)), {
          headers: {
            "content-type": "text/css; charset=utf-8",
            "cache-control": "public, max-age=31536000, immutable",
          },
        }),
    );
  }

  app.get("/islands/:hash/:file", access.public, async (c) => {
    const { hash, file } = c.req.param();
    if (hash !== islandsHash() || !/^[\w-]+\.js$/.test(file)) {
      return c.text("Not found", 404);
    }
    try {
      await ensureIslands();
    } catch (e) {
      return c.text(`// The islands could not be bundled: ${(e as Error).message}`, 503, {
        "content-type": "text/javascript; charset=utf-8",
        "cache-control": "no-store",
      });
    }
    try {
      return new Response(await Deno.readFile(`${BUNDLES_DIR}${hash}/${file}`), {
        headers: JS_HEADERS,
      });
    } catch {
      return c.text("Not found", 404);
    }
  });

  return app;
}
