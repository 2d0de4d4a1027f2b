import assert from "node:assert/strict";
import type { PlacementStatus } from "../wire.ts";
import {
  applyProgress,
  describeRule,
  EMPTY_FORM,
  fmtIn,
  formFromRule,
  ruleFromForm,
} from "./placement.ts";

Deno.test("placement page - a rule in words", () => {
  assert.equal(
    describeRule({
      model: "m",
      on: { count: 2, label: "gpu" },
      warm: 1,
      keep_alive: "1h",
      never_on: { label: "x" },
    }),
    'on at least 2 agents labelled "gpu", loaded on 1 (keep_alive 1h), never on "x"',
  );
  assert.equal(describeRule({ model: "m", on: { agents: ["a", "b"] } }), 'on agents "a", "b"');
  assert.equal(describeRule({ model: "m", on: { label: "gpu" } }), 'on every agent labelled "gpu"');
});

Deno.test("placement page - the form and the rule round-trip; missing fields are named", () => {
  const rules = [
    { model: "llama3.2:3b", on: { label: "gpu" }, warm: 1, keep_alive: "1h" },
    { model: "qwen3:8b", on: { count: 3, label: "big" }, never_on: { label: "laptop" } },
    { model: "phi4:latest", on: { count: 1 } },
    { model: "gemma3:4b", on: { agents: ["a", "b"] } },
  ];
  for (const rule of rules) assert.deepEqual(ruleFromForm(formFromRule(rule)), { rule });
  assert.deepEqual(ruleFromForm(EMPTY_FORM), { error: "Name the model, e.g. llama3.2:3b" });
  assert.deepEqual(ruleFromForm({ ...EMPTY_FORM, model: "m" }), {
    error: "Name the label, e.g. gpu",
  });
  assert.deepEqual(ruleFromForm({ ...EMPTY_FORM, model: "m", where: "agents" }), {
    error: "Name at least one agent",
  });
  assert.deepEqual(ruleFromForm({ ...EMPTY_FORM, model: "m", where: "count", count: "0" }), {
    error: "The count must be 1 or more",
  });
});

Deno.test("placement page - live progress moves a cell to pulling; an end asks for a refetch", () => {
  const status: PlacementStatus = {
    active: true,
    at: "2026-01-01T00:00:00Z",
    pulls: { running: 0, max: 2, max_per_agent: 1 },
    rules: [{
      rule: { model: "qwen3:8b", on: { label: "gpu" } },
      key: "registry.ollama.ai/library/qwen3:8b",
      met: false,
      drift: ["missing on a"],
      counts: { wanted: 1, ok: 0, pulling: 0, warm: 0, warm_wanted: 0, unwanted: 0 },
      agents: [{
        agent_id: "A",
        agent_name: "a",
        agent_status: "online",
        wanted: true,
        state: "missing",
        reason: "pull starting",
        loaded: false,
        warm: false,
      }],
    }],
  };
  const same = applyProgress(status, [{ agent_id: "B", model: "qwen3:8b", status: "x" }]);
  assert.equal(same.status, status, "nothing of this page: the same object");
  const moving = applyProgress(status, [
    { agent_id: "A", model: "qwen3:8b", status: "pulling 6a0", completed: 1, total: 4 },
    {
      agent_id: "A",
      model: "registry.ollama.ai/library/qwen3:8b",
      status: "pulling 6a0",
      completed: 2,
      total: 4,
    },
  ]);
  assert.equal(moving.ended, false);
  const cell = moving.status.rules[0].agents[0];
  assert.equal(cell.state, "pulling");
  assert.equal(cell.reason, undefined);
  assert.deepEqual(cell.progress, { status: "pulling 6a0", completed: 2, total: 4 });
  const done = applyProgress(moving.status, [
    { agent_id: "A", model: "qwen3:8b", status: "success", done: true },
  ]);
  assert.equal(done.ended, true);
});

Deno.test("placement page - times to come", () => {
  assert.equal(fmtIn(1500, 1000), "now");
  assert.equal(fmtIn(26_000, 1000), "in 25 s");
  assert.equal(fmtIn(241_000, 1000), "in 4 min");
  assert.equal(fmtIn(3_601_000, 1000), "in 1 h");
  assert.equal(fmtIn("nonsense", 0), "–");
});
