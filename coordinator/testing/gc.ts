/**
 * A full garbage collection on demand, for tests that check what a long-lived object (an open
 * stream) keeps alive: hold the candidate in a `WeakRef`, drop the test's own references, call
 * {@linkcode collectGarbage}, then expect `deref()` to be undefined.
 *
 * @module
 */
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";

// `--expose-gc` set at run time shows `gc` in contexts created afterwards.
setFlagsFromString("--expose-gc");
const gc = runInNewContext("gc") as () => void;

/** Collects all garbage, after the current job ends (until then WeakRef targets stay alive). */
export async function collectGarbage(): Promise<void> {
  await new Promise((r) => setTimeout(r, 0));
  gc();
}
