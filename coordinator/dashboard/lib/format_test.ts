import assert from "node:assert/strict";
import { fmtWindow } from "./format.ts";

Deno.test("format - windows of time read as the cards show them", () => {
  assert.equal(fmtWindow(10), "10 s");
  assert.equal(fmtWindow(60), "1 min");
  assert.equal(fmtWindow(300), "5 min");
  assert.equal(fmtWindow(7200), "2 h");
});
