/**
 * The dashboard in headless Chromium against real coordinators on loopback with simulated
 * agents: pages render and go live, changes arrive without a reload, actions work, and the live
 * stream comes back after a coordinator restart. Skipped only where /usr/bin/chromium is missing
 * (.ci/run installs it).
 */
import assert from "node:assert/strict";
import {
  type Browser,
  type BrowserContext,
  chromium,
  type Page,
} from "../../shared/test_clients.ts";
import { TEST_ADMIN_PASSWORD, TEST_AGENT_TOKEN, testConfig } from "../config.ts";
import { startCoordinator } from "../server.ts";
import { registration, startFleet } from "./app.ts";
import { startSimulator } from "@oc/simulator";

const CHROMIUM = "/usr/bin/chromium";
const hasChromium = (() => {
  try {
    return Deno.statSync(CHROMIUM).isFile;
  } catch {
    return false;
  }
})();

async function launch(): Promise<Browser> {
  // launch() starts from a new, empty temporary profile every time.
  return await chromium.launch({
    executablePath: CHROMIUM,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
}

/** A browser context signed in as the admin through the login form (a session and its CSRF). */
async function signIn(browser: Browser, base: string): Promise<BrowserContext> {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(`${base}/dashboard`);
  assert.match(page.url(), /\/login/);
  await page.getByLabel("Admin password").fill(TEST_ADMIN_PASSWORD);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.waitForURL(`${base}/dashboard`);
  await page.close();
  return context;
}

/** Opens a page and waits until its islands are hydrated and the live stream is open. */
async function open(
  context: BrowserContext,
  url: string,
): Promise<{ page: Page; errors: string[] }> {
  const page = await context.newPage();
  const errors: string[] = [];
  page.on("pageerror", (e) => errors.push(e.message));
  page.on("console", (m) => {
    if (m.type() === "error") errors.push(m.text());
  });
  await page.goto(url);
  await page.waitForSelector(".live.live", { timeout: 15_000 });
  // Marks this document: if the page reloaded, the mark would be gone.
  await page.evaluate(() => (globalThis as unknown as { __same: boolean }).__same = true);
  return { page, errors };
}

async function notReloaded(page: Page): Promise<void> {
  assert.equal(
    await page.evaluate(() => (globalThis as unknown as { __same?: boolean }).__same),
    true,
  );
}

function post(url: string, body: unknown, headers: Record<string, string> = {}) {
  return fetch(url, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: JSON.stringify(body),
  });
}

Deno.test({
  name: "dashboard in Chromium - pages, live updates, actions and reconnection",
  ignore: !hasChromium,
  async fn(t) {
    const browser = await launch();
    try {
      await t.step("every page renders, hydrates and goes live without errors", async () => {
        await using fleet = await startFleet([{ name: "gpu-a" }, { name: "gpu-b" }]);
        const context = await signIn(browser, fleet.url);
        const pages = [
          ["/dashboard", "Overview"],
          ["/dashboard/agents", "Agents"],
          [`/dashboard/agents/${fleet.ids["gpu-a"]}`, "gpu-a"],
          ["/dashboard/models", "Models"],
          ["/dashboard/placement", "Placement"],
          ["/dashboard/requests", "Requests"],
          ["/dashboard/keys", "API keys"],
          ["/dashboard/events", "Events"],
        ];
        for (const [path, title] of pages) {
          const { page, errors } = await open(context, fleet.url + path);
          assert.match(await page.title(), new RegExp(`^${title} · Ollama Coordinator`));
          assert.equal(
            await page.evaluate(() => document.documentElement.classList.contains("js")),
            true,
          );
          assert.deepEqual(errors, [], path);
          await page.close();
        }
      });

      await t.step(
        "a placement rule made on the page pulls with live progress until it is met",
        async () => {
          await using fleet = await startFleet([{ name: "gpu-a", pullMs: 3000 }, {
            name: "cpu-b",
          }]);
          await fetch(`${fleet.url}/api/agents/${fleet.ids["gpu-a"]}`, {
            method: "PATCH",
            headers: fleet.adminHeaders,
            body: JSON.stringify({ labels: ["gpu"] }),
          }).then((r) => r.body?.cancel());
          const context = await signIn(browser, fleet.url);
          const { page, errors } = await open(context, `${fleet.url}/dashboard/placement`);
          const form = page.getByRole("form", { name: "Placement rule" });
          await form.getByLabel("Model").fill("qwen3:0.6b");
          await form.getByLabel("Label", { exact: true }).fill("gpu");
          await form.getByRole("button", { name: "Save rule" }).click();
          const rule = page.locator('section.rule[data-model="qwen3:0.6b"]');
          // Progress arrives on the live stream while the agent pulls, then the rule is met.
          await rule.locator('tr[data-agent="gpu-a"][data-state="pulling"] progress').waitFor();
          await page.locator('section.rule[data-model="qwen3:0.6b"][data-met="true"]').waitFor({
            timeout: 20_000,
          });
          assert.equal(
            await rule.locator('tr[data-agent="gpu-a"]').getAttribute("data-state"),
            "ok",
          );
          assert.equal(await rule.locator('tr[data-agent="cpu-b"]').count(), 0);
          await notReloaded(page);
          assert.deepEqual(errors, []);
          await context.close();
        },
      );

      await t.step("a newly registered agent appears without a reload", async () => {
        await using fleet = await startFleet([{ name: "gpu-a" }]);
        const context = await signIn(browser, fleet.url);
        const { page } = await open(context, `${fleet.url}/dashboard/agents`);
        const { page: events } = await open(context, `${fleet.url}/dashboard/events`);
        await using sim = await startSimulator({ quiet: true });
        const res = await post(
          `${fleet.url}/api/agents`,
          registration({ machine_name: "late-agent", ollama_port: sim.port }),
          { authorization: `Bearer ${TEST_AGENT_TOKEN}` },
        );
        assert.equal(res.status, 201);
        const { agent_id } = await res.json();
        const row = page.locator(`tr[data-agent-id="${agent_id}"]`);
        await row.waitFor({ timeout: 5000 });
        assert.match(await row.innerText(), /late-agent/);
        assert.match(await page.locator(".filters .count").innerText(), /2 of 2 agents/);
        await notReloaded(page);
        await page.close();
        // Its registration arrives on the events page live, linking to the agent like the
        // events the page was loaded with.
        const event = events.locator("li.event", { hasText: 'Agent "late-agent" registered' });
        await event.waitFor({ timeout: 5000 });
        assert.equal(
          await event.getByRole("link", { name: "view agent" }).getAttribute("href"),
          `/dashboard/agents/${agent_id}`,
        );
        await notReloaded(events);
        await events.close();
      });

      await t.step("an agent going offline changes its status live", async () => {
        await using fleet = await startFleet([{ name: "gpu-a" }, { name: "gpu-b" }], {
          healthCheckInterval: 0.25,
          probeInterval: 0.25,
          // A refused connection fails a probe at once; the timeout only has to outlast a busy
          // machine (0.5 s once took both agents offline for a moment during the full suite).
          probeTimeout: 2,
        });
        const id = fleet.ids["gpu-b"];
        const context = await signIn(browser, fleet.url);
        const { page: overview } = await open(context, `${fleet.url}/dashboard`);
        await overview.getByText("2 of 2 agents online").waitFor({ timeout: 5000 });
        const { page } = await open(context, `${fleet.url}/dashboard/agents`);
        await page.locator(`tr[data-agent-id="${id}"][data-status="online"]`).waitFor();
        await fleet.sims["gpu-b"].setFault({ type: "refuse" });
        const row = page.locator(`tr[data-agent-id="${id}"][data-status="offline"]`);
        await row.waitFor({ timeout: 5000 });
        assert.match(await row.locator(".pill").innerText(), /offline/);
        await notReloaded(page);
        await page.close();
        // The overview's headline follows, as its cards do.
        await overview.getByText("1 of 2 agents online · 1 offline").waitFor({ timeout: 5000 });
        await notReloaded(overview);
        await overview.close();
      });

      await t.step("drain from the UI stops new requests reaching that agent", async () => {
        await using fleet = await startFleet([{ name: "gpu-a" }, { name: "gpu-b" }]);
        const id = fleet.ids["gpu-a"];
        const context = await signIn(browser, fleet.url);
        const { page } = await open(context, `${fleet.url}/dashboard/agents/${id}`);
        await page.getByRole("button", { name: "Drain" }).click();
        await page.locator('.agent-detail[data-status="draining"]').waitFor({ timeout: 5000 });
        assert.equal(fleet.coordinator.ctx.registry.get(id)!.drain, true);
        const before = fleet.sims["gpu-a"].stats.requests;
        const otherBefore = fleet.sims["gpu-b"].stats.requests;
        for (let i = 0; i < 6; i++) {
          const res = await post(`${fleet.url}/api/generate`, {
            model: "llama3.2",
            prompt: "hi",
            stream: false,
          });
          assert.equal(res.status, 200);
          assert.equal(res.headers.get("x-coordinator-agent"), "gpu-b");
          await res.body?.cancel();
        }
        assert.equal(fleet.sims["gpu-a"].stats.requests, before);
        assert.equal(fleet.sims["gpu-b"].stats.requests, otherBefore + 6);
        // And back: enabling it from the UI makes it online again.
        await page.getByRole("button", { name: "Enable" }).click();
        await page.locator('.agent-detail[data-status="online"]').waitFor({ timeout: 5000 });
        await notReloaded(page);
        await page.close();
      });

      await t.step("a pull shows its progress until it completes", async () => {
        await using fleet = await startFleet([{ name: "gpu-a" }, { name: "gpu-b" }]);
        const id = fleet.ids["gpu-b"];
        const context = await signIn(browser, fleet.url);
        const { page } = await open(context, `${fleet.url}/dashboard/models`);
        // A second listener on the same stream records every progress message the page gets.
        await page.evaluate(() =>
          new Promise<void>((resolve) => {
            const g = globalThis as unknown as { __progress: unknown[] };
            g.__progress = [];
            const es = new EventSource("/api/stream?topics=progress");
            es.addEventListener("hello", () => resolve());
            es.addEventListener("progress", (e) => g.__progress.push(...JSON.parse(e.data)));
          })
        );
        await page.getByLabel("Model", { exact: true }).fill("phi3:mini");
        await page.getByLabel("every reachable agent").uncheck();
        await page.locator(".targets").getByLabel("gpu-b", { exact: true }).check();
        await page.getByRole("button", { name: "Pull" }).click();
        const done = page.locator('li.pull[data-state="done"]');
        await done.waitFor({ timeout: 10_000 });
        assert.match(await done.innerText(), /phi3:mini[\s\S]*gpu-b[\s\S]*done/);
        assert.equal(
          await done.locator("progress").evaluate((p) => (p as HTMLProgressElement).value),
          1,
        );
        const progress = await page.evaluate(() =>
          (globalThis as unknown as {
            __progress: { agent_id: string; done: boolean; status: string }[];
          })
            .__progress
        );
        assert.ok(progress.length >= 1, "at least one progress event");
        assert.ok(progress.some((p) => p.agent_id === id && p.done && p.status === "success"));
        // The models table now shows the model on that agent, live.
        const row = page.locator('tr[data-model="phi3:mini"]');
        await row.locator(`[data-agent-id="${id}"]`).waitFor({ timeout: 5000 });
        await notReloaded(page);
        await page.close();
      });

      await t.step("an alias is added and removed on the models page", async () => {
        await using fleet = await startFleet([{ name: "gpu-a" }]);
        const aliases = fleet.coordinator.ctx.aliases;
        const context = await signIn(browser, fleet.url);
        const { page, errors } = await open(context, `${fleet.url}/dashboard/models`);
        await page.getByLabel("Alias", { exact: true }).fill("gpt-4o-mini");
        await page.getByLabel("Served by").fill("llama3.2");
        await page.getByLabel("listed in /api/tags and /v1/models").check();
        await page.getByRole("button", { name: "Save" }).click();
        const row = page.locator('tr[data-alias="gpt-4o-mini"]');
        await row.waitFor({ timeout: 5000 });
        assert.match(await row.innerText(), /gpt-4o-mini\s+llama3\.2\s+yes/);
        assert.deepEqual(aliases.resolve("gpt-4o-mini"), {
          alias: "gpt-4o-mini",
          model: "llama3.2",
          listed: true,
        });
        await page.locator(".aliases-panel").screenshot({ path: "/tmp/aliases_panel.png" });
        // A refused alias shows why.
        await page.getByLabel("Alias", { exact: true }).fill("llama3.2:latest");
        await page.getByLabel("Served by").fill("llama3.2");
        await page.getByRole("button", { name: "Save" }).click();
        await page.locator('.aliases-panel [role="alert"]').waitFor({ timeout: 5000 });
        assert.match(await page.locator('.aliases-panel [role="alert"]').innerText(), /itself/);
        page.once("dialog", (d) => void d.accept());
        await page.getByRole("button", { name: "Remove the alias gpt-4o-mini" }).click();
        await row.waitFor({ state: "detached", timeout: 5000 });
        assert.equal(aliases.resolve("gpt-4o-mini"), undefined);
        assert.deepEqual(errors.filter((e) => !/status of 400/.test(e)), []);
        await notReloaded(page);
        await page.close();
      });

      await t.step("the request log shows a request that was just made", async () => {
        await using fleet = await startFleet([{ name: "gpu-a", tokensPerSecond: 20 }]);
        const context = await signIn(browser, fleet.url);
        const { page } = await open(context, `${fleet.url}/dashboard/requests`);
        const res = await post(`${fleet.url}/api/chat`, {
          model: "llama3.2",
          messages: [{ role: "user", content: "hello" }],
          stream: false,
          options: { num_predict: 3 },
        });
        assert.equal(res.status, 200);
        await res.body?.cancel();
        // The coordinator's own id for the request (a client's id is kept beside it, never used).
        const requestId = res.headers.get("x-request-id")!;
        const row = page.locator(`tr[data-request-id="${requestId}"]`);
        await row.waitFor({ timeout: 5000 });
        const text = await row.innerText();
        assert.match(text, /\/api\/chat/);
        assert.match(text, /llama3\.2/);
        assert.match(text, /gpu-a/);
        assert.match(text, /200/);
        // Rows are in start-time order, as the page says, although they arrive as they finish:
        // a long request started first lands below a short one started after it.
        const generate = (tokens: number) =>
          post(`${fleet.url}/api/generate`, {
            model: "llama3.2",
            prompt: "hi",
            options: { num_predict: tokens },
          });
        const slow = await generate(30); // streams: its headers come with the first token
        assert.equal(slow.status, 200);
        const fast = await generate(1);
        await fast.text();
        await slow.text();
        const slowId = slow.headers.get("x-request-id")!;
        const fastId = fast.headers.get("x-request-id")!;
        await page.locator(`tr[data-request-id="${slowId}"]`).waitFor({ timeout: 5000 });
        const order = await page.locator("tr[data-request-id]").evaluateAll((rows) =>
          rows.map((r) => (r as HTMLElement).dataset.requestId)
        );
        assert.ok(order.indexOf(fastId) !== -1 && order.indexOf(fastId) < order.indexOf(slowId));
        assert.equal(order[2], requestId);
        await notReloaded(page);
        await page.close();
      });

      await t.step(
        "a key made with limits shows its refused requests live; limits change",
        async () => {
          await using fleet = await startFleet([{ name: "gpu-a" }]);
          const context = await signIn(browser, fleet.url);
          const { page, errors } = await open(context, `${fleet.url}/dashboard/keys`);
          const form = page.getByRole("form", { name: "New key" });
          await form.getByLabel("Name").fill("browser-key");
          await form.getByLabel("Requests per minute").fill("1");
          await form.getByLabel("Weight").fill("2");
          await form.getByRole("button", { name: "Create key" }).click();
          const key = await page.locator("[data-new-key] code").innerText();
          assert.match(key, /^oc_/);
          const row = page.locator("tr[data-key-id]", { hasText: "browser-key" });
          assert.match(await row.locator("[data-limits]").innerText(), /^1 req\/min$/);
          const use = () =>
            post(`${fleet.url}/api/generate`, { model: "llama3.2", prompt: "x", stream: false }, {
              authorization: `Bearer ${key}`,
            });
          const [first, second] = [await use(), await use()];
          assert.deepEqual([first.status, second.status], [200, 429]);
          await Promise.all([first.body?.cancel(), second.body?.cancel()]);
          // The request log's figures arrive without a reload, a moment after the requests end.
          await row.locator("[data-limited]", { hasText: /^1$/ }).waitFor({ timeout: 10_000 });
          assert.equal(await row.locator("[data-requests]").innerText(), "2");
          await page.screenshot({
            path: `${Deno.makeTempDirSync({ prefix: "oc-keys-" })}/keys.png`,
          });
          // Lifting the limit lets the key in again.
          await row.getByRole("button", { name: "Limits" }).click();
          const limits = page.getByRole("form", { name: "Limits of browser-key" });
          await limits.getByLabel("Requests per minute").fill("");
          await limits.getByRole("button", { name: "Save" }).click();
          await row.locator("[data-limits]", { hasText: "no limits" }).waitFor({ timeout: 5000 });
          const third = await use();
          assert.equal(third.status, 200);
          await third.body?.cancel();
          await notReloaded(page);
          assert.deepEqual(errors, []);
          await page.close();
        },
      );

      await t.step("the live stream reconnects after a coordinator restart", async () => {
        const dir = await Deno.makeTempDir({ prefix: "oc-browser-" });
        const config = testConfig({ databaseUrl: `sqlite://${dir}/coordinator.db` });
        await using sim = await startSimulator({ quiet: true });
        const register = (url: string, name: string) =>
          post(`${url}/api/agents`, registration({ machine_name: name, ollama_port: sim.port }), {
            authorization: `Bearer ${TEST_AGENT_TOKEN}`,
          })
            .then((r) => r.json()) as Promise<{ agent_id: string }>;
        let coordinator = await startCoordinator(config);
        try {
          await register(coordinator.url, "before-restart");
          const context = await signIn(browser, coordinator.url);
          const { page } = await open(context, `${coordinator.url}/dashboard/agents`);
          await coordinator.stop();
          await page.locator(".live.reconnecting").waitFor({ timeout: 5000 });
          coordinator = await startCoordinator({ ...config, port: coordinator.port });
          const { agent_id } = await register(coordinator.url, "after-restart");
          await page.locator(`tr[data-agent-id="${agent_id}"]`).waitFor({ timeout: 10_000 });
          await page.locator(".live.live").waitFor({ timeout: 5000 });
          assert.match(await page.locator(".filters .count").innerText(), /2 of 2 agents/);
          await notReloaded(page);
          await page.close();
        } finally {
          await coordinator.stop();
          await Deno.remove(dir, { recursive: true });
        }
      });
    } finally {
      await browser.close();
    }
  },
});
