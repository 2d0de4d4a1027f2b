import assert from "node:assert/strict";
import type { RegisterRequest } from "@oc/shared";
import { memoryRegistry, registration } from "../testing/app.ts";
import { Scheduler } from "./mod.ts";
import { NoAgentError } from "./no_agent.ts";
import { leastBusy, Placement, pullTarget, withModel } from "./placement.ts";

const GB = 1_000_000_000;
const DIGEST = `sha256:${"b".repeat(64)}`;

async function setup() {
  const { registry, close } = await memoryRegistry();
  const placement = new Placement(registry);
  const add = async (name: string, extra: Partial<RegisterRequest> = {}) =>
    (await registry.register(registration({ machine_name: name, models: [], ...extra }))).agent;
  return { registry, placement, add, [Symbol.asyncDispose]: close };
}

function rejects(fn: () => unknown, status: number, pattern: RegExp) {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof NoAgentError);
    assert.equal(e.status, status);
    assert.match(e.message, pattern);
    return true;
  });
}

Deno.test("placement - a pull goes where the model is missing, then the least busy, then free memory", async () => {
  await using t = await setup();
  const has = await t.add("has", { models: [{ name: "llama3.2:latest" }] });
  const busy = await t.add("busy");
  const roomy = await t.add("roomy");
  const cramped = await t.add("cramped");
  busy.inFlight = 2;
  roomy.metrics = {
    cpu_usage: 0,
    memory_usage: 0,
    active_requests: 0,
    gpus: [],
    memory_total: 64 * GB,
    memory_used: 0,
  };
  cramped.metrics = {
    cpu_usage: 0,
    memory_usage: 0,
    active_requests: 0,
    gpus: [],
    memory_total: 8 * GB,
    memory_used: 0,
  };
  assert.equal(pullTarget([has, busy, cramped, roomy], "llama3.2"), roomy);
  assert.equal(pullTarget([has, busy], "llama3.2"), busy);
  assert.deepEqual(t.placement.transferTargets("llama3.2", { verb: "pull" }), [roomy]);
  assert.deepEqual(withModel([has, busy], "llama3.2:latest"), [has]);
  assert.equal(leastBusy([busy, has]), has);
});

Deno.test("placement - pull and push honour X-Coordinator-Agent and say why nothing fits", async () => {
  await using t = await setup();
  rejects(() => t.placement.transferTargets("m", { verb: "pull" }), 503, /No agent is online/);
  const a = await t.add("a", { models: [{ name: "m:latest" }] });
  const b = await t.add("b");
  assert.deepEqual(t.placement.transferTargets("m", { verb: "pull", pin: "all" }), [a, b]);
  assert.deepEqual(t.placement.transferTargets("m", { verb: "pull", pin: [b] }), [b]);
  rejects(() => t.placement.transferTargets("m", { verb: "pull", pin: [] }), 404, /not known/);
  b.status = "offline";
  rejects(
    () => t.placement.transferTargets("m", { verb: "push", pin: [b] }),
    503,
    /Agent "b" is offline/,
  );
  assert.deepEqual(t.placement.transferTargets("m", { verb: "push" }), [a]);
  rejects(() => t.placement.transferTargets("other", { verb: "push" }), 404, /"other" not found/);
});

Deno.test("placement - a create follows its uploaded blobs, else its base model, else the least busy", async () => {
  await using t = await setup();
  const base = await t.add("base", { models: [{ name: "llama3.2:latest" }] });
  const idle = await t.add("idle");
  base.inFlight = 3;
  const home = t.placement.blobTarget(DIGEST, { upload: true });
  assert.equal(home, idle); // the least busy took the upload
  // Later checks and the create go to where the blob is, whatever the load.
  idle.inFlight = 9;
  assert.equal(t.placement.blobTarget(DIGEST, { upload: false }), idle);
  assert.equal(t.placement.createTarget({ files: [DIGEST], from: "llama3.2" }), idle);
  assert.equal(t.placement.createTarget({ files: [], from: "llama3.2" }), base);
  assert.equal(t.placement.createTarget({ files: [] }), base); // 3 in flight against 9
  assert.equal(t.placement.createTarget({ files: [DIGEST], pin: [base] }), base);
  // A blob's home that went offline is replaced by an online agent.
  idle.status = "offline";
  assert.equal(t.placement.blobTarget(DIGEST, { upload: false }), base);
  base.status = "offline";
  rejects(() => t.placement.blobTarget(DIGEST, { upload: false }), 503, /No agent is online/);
  rejects(() => t.placement.createTarget({ files: [] }), 503, /No agent is online/);
});

Deno.test("placement - copy and delete reach every holder, or the pinned ones among them", async () => {
  await using t = await setup();
  const models = [{ name: "m:latest" }];
  const a = await t.add("a", { models });
  const b = await t.add("b", { models });
  await t.add("c");
  assert.deepEqual(t.placement.holders("m"), [a, b]);
  assert.deepEqual(t.placement.holders("m", { pin: "all" }), [a, b]);
  assert.deepEqual(t.placement.holders("m", { pin: [b] }), [b]);
  rejects(() => t.placement.holders("m", { pin: [] }), 404, /model "m" not found/);
  rejects(() => t.placement.holders("x"), 404, /model "x" not found/);
});

Deno.test("scheduler - a hold counts a server-local request in the agent's load until released", async () => {
  await using t = await setup();
  const scheduler = new Scheduler(t.registry);
  const a = await t.add("a");
  const release = scheduler.hold(a);
  assert.equal(a.inFlight, 1);
  release();
  release(); // a second call changes nothing
  assert.equal(a.inFlight, 0);
  assert.ok(scheduler.placement instanceof Placement);
});
