import assert from "node:assert/strict";
import { ModelSettingList, type SettingsStore } from "./pins.ts";

function memorySettings(): SettingsStore & { values: Map<string, string>; refuse: boolean } {
  const values = new Map<string, string>();
  return {
    values,
    refuse: false,
    setting: (key) => values.get(key),
    async setSetting(key, value) {
      await Promise.resolve();
      if (this.refuse) throw new Error("disk full");
      values.set(key, value);
    },
  };
}

Deno.test("model setting list - found by normalised name, stored first, kept when a change fails", async () => {
  const store = memorySettings();
  const list = new ModelSettingList<{ model: string; n: number }>("s", {
    store,
    nameOf: (e) => e.model,
  });
  await list.put({ model: "Llama3.2", n: 1 });
  await list.put({ model: "qwen3:0.6b", n: 2 });
  await list.put({ model: "llama3.2:latest", n: 3 });
  assert.deepEqual(list.list().map((e) => e.n), [3, 2]);
  assert.equal(list.get("registry.ollama.ai/library/llama3.2:latest")?.n, 3);

  store.refuse = true;
  await assert.rejects(list.put({ model: "phi4", n: 4 }), /disk full/);
  await assert.rejects(list.remove("qwen3:0.6b"), /disk full/);
  assert.deepEqual(list.list().map((e) => e.n), [3, 2]);
  store.refuse = false;

  // Another coordinator's change arrives; a setting that does not parse changes nothing.
  const other = new ModelSettingList<{ model: string; n: number }>("s", {
    store,
    nameOf: (e) => e.model,
  });
  assert.equal(await other.remove("QWEN3:0.6b"), true);
  list.reload();
  assert.deepEqual(list.list().map((e) => e.n), [3]);
  store.values.set("s", "[{");
  assert.throws(() => list.reload(), SyntaxError);
  assert.deepEqual(list.list().map((e) => e.n), [3]);
});
