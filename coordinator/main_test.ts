import assert from "node:assert/strict";
import { signalCounter } from "./main.ts";
import { FakeClock } from "./testing/app.ts";

Deno.test("main - a stop signal repeated within a second counts once; a later one stops now", () => {
  const clock = new FakeClock();
  const next = signalCounter({ now: clock.now });
  assert.equal(next(), "first");
  clock.advance(10);
  assert.equal(next(), "repeat");
  clock.advance(980);
  assert.equal(next(), "repeat");
  clock.advance(10);
  assert.equal(next(), "second");
});
