import assert from "node:assert/strict";
import { Bus, type BusMessage } from "./bus.ts";

Deno.test("bus - wants tells whether anyone listens to a type, as subscribers come and go", () => {
  const bus = new Bus();
  assert.equal(bus.wants("agent"), false);
  const events: BusMessage[] = [];
  const stopEvents = bus.subscribe((m) => events.push(m), ["event"]);
  assert.equal(bus.wants("event"), true);
  assert.equal(bus.wants("agent"), false);
  const all: BusMessage[] = [];
  const stopAll = bus.subscribe((m) => all.push(m));
  assert.equal(bus.wants("agent"), true);
  bus.publish({ type: "agent", id: "a1" });
  assert.deepEqual(all, [{ type: "agent", id: "a1" }]);
  assert.deepEqual(events, []);
  stopAll();
  stopAll(); // a second call changes nothing
  assert.equal(bus.wants("agent"), false);
  assert.equal(bus.wants("event"), true);
  stopEvents();
  assert.equal(bus.wants("event"), false);
  assert.equal(bus.size, 0);
});

Deno.test("bus - subscribing the same function again replaces its types", () => {
  const bus = new Bus();
  const fn = () => {};
  bus.subscribe(fn, ["event"]);
  const stop = bus.subscribe(fn, ["agent"]);
  assert.equal(bus.wants("event"), false);
  assert.equal(bus.wants("agent"), true);
  assert.equal(bus.size, 1);
  stop();
  assert.equal(bus.wants("agent"), false);
});

Deno.test("bus - a failing subscriber does not stop the others", () => {
  const bus = new Bus();
  const seen: string[] = [];
  const error = console.error;
  console.error = () => {};
  try {
    bus.subscribe(() => {
      throw new Error("boom");
    });
    bus.subscribe((m) => m.type === "agent_removed" && seen.push(m.id));
    bus.publish({ type: "agent_removed", id: "a1" });
  } finally {
    console.error = error;
  }
  assert.deepEqual(seen, ["a1"]);
});
