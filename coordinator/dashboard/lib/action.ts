/** The state every form and button of an island shares: an action running, its error. */
import { useState } from "preact/hooks";

/** What {@linkcode useAction} gives an island. */
export interface Action {
  /** An action is running: its buttons are disabled. */
  busy: boolean;
  /** What the last action (or a form check) said went wrong, or "". */
  error: string;
  setError(message: string): void;
  /** Runs `fn` with `busy` set and the error cleared; its failure becomes the error. */
  run(fn: () => Promise<unknown>): Promise<boolean>;
}

/** See {@linkcode Action}. */
export function useAction(): Action {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState("");
  const run = async (fn: () => Promise<unknown>): Promise<boolean> => {
    setBusy(true);
    setError("");
    try {
      await fn();
      return true;
    } catch (e) {
      setError((e as Error).message);
      return false;
    } finally {
      setBusy(false);
    }
  };
  return { busy, error, setError, run };
}
