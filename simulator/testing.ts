/**
 * Helpers for the simulator's own tests: a fast simulator, requests, and readers for NDJSON,
 * SSE and bodies line by line.
 *
 * @module
 */
import assert from "node:assert/strict";
import { type SimOptions, type Simulator, startSimulator } from "./server.ts";

/** Any JSON answer. */
// deno-lint-ignore no-explicit-any
export type Json = any;

/** Fast enough that waiting for output costs nothing; tests of speed override it. */
const FAST: SimOptions = { quiet: true, tokensPerSecond: 20_000, ttftMs: 0 };

/** A quiet, fast simulator with these options on top. */
export function start(opts: SimOptions = {}): Promise<Simulator> {
  return startSimulator({ ...FAST, ...opts });
}

/** POSTs a JSON body (or a string as it is). */
export function post(
  sim: Simulator,
  path: string,
  body: unknown,
  init: RequestInit = {},
) {
  return fetch(sim.url + path, {
    method: "POST",
    body: typeof body === "string" ? body : JSON.stringify(body),
    headers: { "content-type": "application/json" },
    ...init,
  });
}

/** POSTs and reads the whole answer: status, content type, text and JSON (if it parses). */
export async function postJson(sim: Simulator, path: string, body: unknown) {
  const res = await post(sim, path, body);
  const text = await res.text();
  return {
    status: res.status,
    type: res.headers.get("content-type"),
    text,
    json: parse(text),
  };
}

/** JSON.parse, or undefined. */
export function parse(text: string): Json {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/** The objects of an NDJSON body, which must end with a newline. */
export async function ndjson(res: Response): Promise<Json[]> {
  const text = await res.text();
  assert.ok(text.endsWith("\n"), "NDJSON ends with a newline");
  return text.trimEnd().split("\n").map((line) => JSON.parse(line));
}

/** SSE events' data fields. */
export async function sse(res: Response): Promise<string[]> {
  const text = await res.text();
  assert.ok(text.endsWith("\n\n"));
  return text.trimEnd().split("\n\n").map((e) => {
    assert.ok(e.startsWith("data: "), `event ${e}`);
    return e.slice("data: ".length);
  });
}

/** Reads a body line by line as it arrives. */
export function lines(res: Response) {
  const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  return {
    async next(): Promise<string | undefined> {
      while (!buffer.includes("\n")) {
        const { done, value } = await reader.read();
        if (done) return buffer === "" ? undefined : buffer;
        buffer += value;
      }
      const i = buffer.indexOf("\n");
      const line = buffer.slice(0, i);
      buffer = buffer.slice(i + 1);
      return line;
    },
    cancel: () => reader.cancel(),
  };
}

/** Waits for a condition the simulator reaches on its own (no fixed sleeps). */
export async function until(
  cond: () => boolean | Promise<boolean>,
  what: string,
): Promise<void> {
  const deadline = performance.now() + 5000;
  while (!(await cond())) {
    if (performance.now() > deadline) {
      throw new Error(`Timed out waiting for ${what}`);
    }
    await new Promise((r) => setTimeout(r, 2));
  }
}

/** Euclidean length. */
export function norm(v: number[]): number {
  return Math.hypot(...v);
}
