/**
 * The tools the tests drive the coordinator with: the npm `ollama`, `openai` and
 * `@anthropic-ai/sdk` clients and the browser driver. Pinned here rather than in deno.json's
 * imports because `deno task` installs every package named there, and starting the coordinator
 * should fetch only what it runs.
 */
export { Ollama } from "npm:ollama@0.6.4";
export { default as OpenAI } from "npm:openai@7.57.0";
export { default as Anthropic } from "npm:@anthropic-ai/sdk@1.15.0";
export { type Browser, type BrowserContext, chromium, type Page } from "npm:playwright-core@1.65.1";
