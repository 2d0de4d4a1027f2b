import assert from "node:assert/strict";
import { FakeClock, memoryRegistry, registration } from "../testing/app.ts";
import { type Lease, type NoAgentError, Scheduler } from "./mod.ts";
import { FairShare } from "./fair.ts";

const MODEL = "llama3.2";
const LOADED = [{ name: "llama3.2:latest" }];

async function setup(
  options: { queueMaxLength?: number; weights?: Record<string, number>; slots?: number } = {},
) {
  const clock = new FakeClock();
  const { registry, close } = await memoryRegistry({ now: clock.now });
  const scheduler = new Scheduler(registry, {
    now: clock.now,
    random: () => 0,
    queueMaxLength: options.queueMaxLength,
    weightOf: (t) => options.weights?.[t] ?? 1,
  });
  await registry.register(
    registration({ machine_name: "only", parallel: options.slots ?? 1, loaded_models: LOADED }),
  );
  return { clock, scheduler, close };
}

/** Lets pending promise callbacks run (a lease reaches its waiter in a microtask). */
const settle = () => new Promise((r) => setTimeout(r, 0));

/**
 * With one slot taken, queues a request for each of `tenants` (in order), then hands the slot
 * on one request at a time; resolves to the keys in the order they got it.
 */
async function turns(scheduler: Scheduler, tenants: string[]): Promise<string[]> {
  let current = await scheduler.acquire(MODEL);
  const granted: { tenant: string; lease: Lease }[] = [];
  const all = tenants.map((tenant) =>
    scheduler.acquire(MODEL, { tenant }).then((lease) => granted.push({ tenant, lease }))
  );
  for (let i = 0; i < tenants.length; i++) {
    scheduler.release(current, { result: "ok" });
    await settle();
    current = granted[i].lease;
  }
  scheduler.release(current, { result: "ok" });
  await Promise.all(all);
  return granted.map((g) => g.tenant);
}

Deno.test("fair share - two busy keys get slots in proportion to their weights", async () => {
  const { scheduler, close } = await setup({ weights: { heavy: 3, light: 1 } });
  const asked = Array.from({ length: 12 }, () => ["light", "heavy"]).flat();
  const order = await turns(scheduler, asked);
  assert.deepEqual(
    order.slice(0, 16).join(","),
    "light,heavy,heavy,heavy,light,heavy,heavy,heavy,light,heavy,heavy,heavy,light,heavy,heavy,heavy",
  );
  await close();
});

Deno.test("fair share - a light key's burst goes ahead of a flood's backlog, once per idle spell", async () => {
  const { scheduler, close } = await setup();
  // The flood has kept the queue busy for 10 turns before the light key sends 16 at once.
  const asked = [...Array(40).fill("flood")];
  let current = await scheduler.acquire(MODEL);
  const granted: { tenant: string; lease: Lease }[] = [];
  const all = asked.map((tenant) =>
    scheduler.acquire(MODEL, { tenant }).then((lease) => granted.push({ tenant, lease }))
  );
  const hand = async (n: number) => {
    for (let i = 0; i < n; i++) {
      scheduler.release(current, { result: "ok" });
      await settle();
      current = granted[granted.length - 1].lease;
    }
  };
  await hand(10);
  const light = Array.from(
    { length: 16 },
    () =>
      scheduler.acquire(MODEL, { tenant: "light" }).then((lease) =>
        granted.push({ tenant: "light", lease })
      ),
  );
  await hand(24);
  const after = granted.slice(10, 34).map((g) => g.tenant);
  // Its burst credit (8 turns) first, then turns alternate like any two busy keys.
  assert.deepEqual(after.slice(0, 9), Array(9).fill("light"), after.join(","));
  const rest = after.slice(9, 23);
  assert.ok(rest.filter((t) => t === "light").length <= 8, after.join(","));
  assert.ok(rest.filter((t) => t === "flood").length >= 6, after.join(","));
  await hand(granted.length < 56 ? 56 - granted.length : 0);
  scheduler.release(current, { result: "ok" });
  await Promise.all([...all, ...light]);
  await close();
});

Deno.test("fair share - in a full queue each key keeps its weighted share of the places", async () => {
  const { scheduler, close } = await setup({ queueMaxLength: 4 });
  const holder = await scheduler.acquire(MODEL, { tenant: "flood" });
  const outcomes = new Map<string, string>();
  const ask = (name: string, tenant: string) =>
    scheduler.acquire(MODEL, { tenant }).then(
      (lease) => (outcomes.set(name, "served"), lease),
      (e: NoAgentError) => (outcomes.set(name, `${e.status}`), undefined),
    );
  const floods = ["f1", "f2", "f3", "f4"].map((n) => ask(n, "flood"));
  // Alone, the flood may fill the queue; one more is the queue being full (503).
  await ask("f5", "flood");
  assert.equal(outcomes.get("f5"), "503");
  // Another key takes the place of the flood's newest request, which gets 429 at once.
  const l1 = ask("l1", "light");
  await settle();
  assert.equal(outcomes.get("f4"), "429");
  // Two keys: two places each. The flood holds three, so it is over its share: 429.
  await ask("f6", "flood");
  assert.equal(outcomes.get("f6"), "429");
  const l2 = ask("l2", "light");
  await settle();
  assert.equal(outcomes.get("f3"), "429");
  await ask("l3", "light");
  assert.equal(outcomes.get("l3"), "429");
  assert.deepEqual(Object.values(scheduler.queueDepths()), [4]);
  // Turns: the light key has not been served yet, so it goes first.
  scheduler.release(holder, { result: "ok" });
  const first = await l1;
  assert.equal(outcomes.get("l1"), "served");
  scheduler.release(first!, { result: "ok" });
  // Then the flood's oldest, then the light key again: turns alternate.
  const second = await floods[0];
  assert.equal(outcomes.get("l2"), undefined);
  scheduler.release(second!, { result: "ok" });
  scheduler.release((await l2)!, { result: "ok" });
  scheduler.release((await floods[1])!, { result: "ok" });
  assert.deepEqual(scheduler.queueDepths(), {});
  await close();
});

Deno.test("fair share - weights give a key more places in a full queue", () => {
  const fair = new FairShare({ weightOf: (t) => (t === "big" ? 3 : 1) });
  const flood = Array(8).fill("small");
  assert.deepEqual(fair.whenFull(flood, "big", 8), {
    kind: "push_out",
    victim: "small",
    places: 2,
  });
  // Six of eight places for the key of weight 3: at six it is over its share.
  const mixed = [...Array(2).fill("small"), ...Array(6).fill("big")];
  assert.deepEqual(fair.whenFull(mixed, "big", 8), { kind: "over_share", places: 6 });
  // More keys than places: nobody is over a share of one, so the queue is simply full.
  assert.deepEqual(fair.whenFull(["a", "b"], "c", 2), { kind: "full" });
  assert.deepEqual(fair.whenFull([], "c", 0), { kind: "full" });
});

Deno.test("fair share - keys idle past the credit are forgotten, and their turns do not change", () => {
  const fair = new FairShare({ burst: 8 });
  // A thousand keys each served once (keys made and revoked over months), then one busy key.
  for (let i = 0; i < 1000; i++) fair.served(`k${i}`);
  for (let i = 0; i < 5000; i++) fair.served("busy");
  assert.ok(fair.remembered < 100, `${fair.remembered} keys remembered`);
  // An old key comes back with the idle credit, as one never seen does.
  assert.equal(fair.tag("k1"), fair.tag("never-seen"));
  assert.ok(fair.tag("k1") < fair.tag("busy"));
});

/** p95 of `xs` (the value below which 95 % fall). */
function p95(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(s.length * 0.95))];
}

/**
 * A discrete-event run on the fake clock: one agent with 2 slots, every request 100 ms. The
 * light key sends bursts of 8 every second; with `flood`, another key keeps 20 requests going
 * (a refused one tries again 50 ms later). Resolves to the light key's queue waits and what
 * the flood got.
 */
async function queueWaits(flood: boolean) {
  const SERVICE_MS = 100;
  const { scheduler, clock, close } = await setup({ queueMaxLength: 16, slots: 2 });
  const t0 = clock.ms;
  const events: { at: number; seq: number; run: () => void }[] = [];
  let seq = 0;
  const at = (t: number, run: () => void) => events.push({ at: t, seq: seq++, run });
  const light: number[] = [];
  const got = { served: 0, refused429: 0, refused503: 0, lightRefused: 0 };
  let flooding = flood;
  const request = (tenant: string, then: (retryMs: number) => void) => {
    scheduler.acquire(MODEL, { tenant }).then((lease) => {
      if (tenant === "light") light.push(lease.queuedMs);
      else got.served++;
      at(clock.ms + SERVICE_MS, () => {
        scheduler.release(lease, { result: "ok" });
        then(0);
      });
    }, (e: NoAgentError) => {
      if (tenant === "light") got.lightRefused++;
      else if (e.status === 429) got.refused429++;
      else got.refused503++;
      then(50);
    });
  };
  const floodLoop = () => {
    if (flooding) request("flood", (retryMs) => at(clock.ms + retryMs, floodLoop));
  };
  if (flood) { for (let i = 0; i < 20; i++) at(t0, floodLoop); }
  for (let burst = 0; burst < 10; burst++) {
    at(t0 + 550 + burst * 1000, () => {
      for (let i = 0; i < 8; i++) request("light", () => {});
    });
  }
  while (events.length) {
    events.sort((a, b) => a.at - b.at || a.seq - b.seq);
    const e = events.shift()!;
    clock.ms = e.at;
    if (clock.ms > t0 + 11_000) flooding = false;
    e.run();
    await settle();
  }
  await close();
  return { light, ...got };
}

Deno.test("fair share - with a key flooding, another key's p95 queue wait stays within 2x of alone", async () => {
  const alone = await queueWaits(false);
  const flooded = await queueWaits(true);
  assert.equal(alone.light.length, 80);
  assert.equal(flooded.light.length, 80);
  assert.equal(flooded.lightRefused, 0);
  // The flood kept both slots busy between bursts and was pushed out of the queue's places.
  assert.ok(flooded.served > 120, `flood served ${flooded.served}`);
  assert.ok(flooded.refused429 > 0);
  const [a, f] = [p95(alone.light), p95(flooded.light)];
  assert.equal(a, 300);
  assert.ok(f <= 2 * a, `p95 queue wait alone ${a} ms, with a flood ${f} ms`);
});
