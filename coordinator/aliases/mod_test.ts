import assert from "node:assert/strict";
import { AliasError, MAX_ALIASES, ModelAliases, withListedAliases } from "./mod.ts";

/** Settings in memory, as the security store keeps them. */
function settings() {
  const map = new Map<string, string>();
  return {
    map,
    setting: (k: string) => map.get(k),
    setSetting: (k: string, v: string) => {
      map.set(k, v);
      return Promise.resolve();
    },
  };
}

Deno.test("aliases - resolve by Ollama's name rules, stored in the settings, reloaded", async () => {
  const store = settings();
  const aliases = new ModelAliases(store);
  assert.equal(aliases.resolve("gpt-4o-mini"), undefined);
  await aliases.set("gpt-4o-mini", "llama3.2:3b");
  await aliases.set("Claude-Sonnet-4-5", "qwen3:0.6b", { listed: true });
  assert.deepEqual(aliases.resolve("GPT-4o-mini:latest"), {
    alias: "gpt-4o-mini",
    model: "llama3.2:3b",
    listed: false,
  });
  assert.equal(aliases.resolve("claude-sonnet-4-5")?.model, "qwen3:0.6b");
  assert.equal(aliases.resolve("llama3.2:3b"), undefined);
  assert.match(store.map.get(ModelAliases.SETTING)!, /gpt-4o-mini/);

  // Another coordinator sharing the store sees them once it reloads.
  const other = new ModelAliases(store);
  assert.equal(other.list().length, 2);
  await aliases.set("gpt-4o-mini", "llama3.2:1b");
  assert.equal(other.resolve("gpt-4o-mini")?.model, "llama3.2:3b");
  other.reload();
  assert.equal(other.resolve("gpt-4o-mini")?.model, "llama3.2:1b");

  assert.equal(await aliases.remove("GPT-4O-MINI"), true);
  assert.equal(await aliases.remove("gpt-4o-mini"), false);
  assert.deepEqual(aliases.list().map((a) => a.alias), ["Claude-Sonnet-4-5"]);
});

Deno.test("aliases - loops, chains and too many are refused, changing nothing", async () => {
  const store = settings();
  const aliases = new ModelAliases(store);
  await assert.rejects(aliases.set("llama3.2", "llama3.2:latest"), AliasError);
  await aliases.set("fast", "llama3.2:3b");
  await assert.rejects(aliases.set("faster", "fast"), /"fast" is an alias itself/);
  await assert.rejects(aliases.set("llama3.2:3b", "qwen3"), /alias "fast" leads to it/);
  assert.deepEqual(aliases.list().map((a) => a.alias), ["fast"]);
  for (let i = aliases.list().length; i < MAX_ALIASES; i++) await aliases.set(`a${i}`, "m");
  await assert.rejects(aliases.set("one-more", "m"), /there are 1000 already/);
  // Changing one that exists is still allowed at the limit.
  await aliases.set("fast", "qwen3");
  assert.equal(aliases.resolve("fast")?.model, "qwen3");
});

Deno.test("aliases - a store that cannot take the change leaves the aliases as they were", async () => {
  const aliases = new ModelAliases({
    setting: () => undefined,
    setSetting: () => Promise.reject(new Error("database is down")),
  });
  await assert.rejects(aliases.set("gpt-4o-mini", "llama3.2"), /database is down/);
  assert.equal(aliases.resolve("gpt-4o-mini"), undefined);
});

Deno.test("aliases - listed aliases appear in a model list as copies of their model", async () => {
  const aliases = new ModelAliases(settings());
  await aliases.set("gpt-4o-mini", "llama3.2:3b", { listed: true });
  await aliases.set("hidden", "llama3.2:3b");
  await aliases.set("nowhere", "absent:1b", { listed: true });
  const models = [{ name: "llama3.2:3b", model: "llama3.2:3b", size: 3 }];
  assert.deepEqual(withListedAliases(models, aliases), [
    { name: "llama3.2:3b", model: "llama3.2:3b", size: 3 },
    { name: "gpt-4o-mini", model: "gpt-4o-mini", size: 3 },
  ]);
  assert.equal(withListedAliases(models, undefined), models);
});
