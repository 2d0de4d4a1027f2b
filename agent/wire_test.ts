import assert from "node:assert/strict";
import * as shared from "@oc/shared";
import * as wire from "./wire.ts";

/** True only when `A` and `B` are the same type. */
type Same<A, B> = (<T>() => T extends A ? 1 : 2) extends (<T>() => T extends B ? 1 : 2) ? true
  : false;

// Compile-time: what the agent's schemas produce is exactly the shared type.
type Out<S> = S extends { _zod: { output: infer O } } ? O : never;
const sameTypes: [
  Same<Out<typeof wire.InstalledModel>, shared.InstalledModel>,
  Same<Out<typeof wire.LoadedModel>, shared.LoadedModel>,
  Same<Out<typeof wire.RegisterResponse>, shared.RegisterResponse>,
  Same<Out<typeof wire.HealthResponse>, shared.HealthResponse>,
  Same<Out<typeof wire.AgentCommand>, shared.AgentCommand>,
] = [true, true, true, true, true];

const long = (n: number) => "x".repeat(n);

const details = [
  {},
  { format: "gguf", family: "llama", families: null, parameter_size: "3.2B" },
  { families: ["llama", "clip"], quantization_level: "Q4_K_M", parent_model: "" },
  { families: Array(33).fill("a") },
  { format: long(65) },
  { family: 3 },
];

const models = [
  { name: "llama3.2:latest" },
  { name: "  padded  ", size: 2019393189, digest: "a80c4f17acd5", modified_at: "2025-01-01" },
  { name: "m", model: "m", size: 1.5 },
  { name: "m", size: -1 },
  { name: "m", size: 2 ** 53 },
  { name: "" },
  { name: "   " },
  { name: long(253) },
  { name: long(254) },
  { name: "m", digest: long(129) },
  { name: "m", expires_at: "2025-01-01T00:00:00Z", size_vram: 10, context_length: 4096 },
  { name: "m", context_length: 1_000_001 },
  { size: 1 },
  null,
  "llama3.2",
  ...details.map((d) => ({ name: "m", details: d })),
];

const registerReplies = [
  { agent_id: "a", status: "registered" },
  { agent_id: "a", status: "updated", agent_secret: "s", heartbeat_interval: 5, extra: 1 },
  { agent_id: "a", status: "gone" },
  { status: "registered" },
  { agent_id: 1, status: "registered" },
  {},
];

const healthReplies = [
  { ok: true },
  { ok: true, commands: [] },
  { ok: true, commands: [{ id: "c1", type: "pull", model: " llama3.2 " }] },
  { ok: true, commands: [{ id: "c1", type: "copy", model: "m" }] },
  { ok: true, commands: [{ id: "c1", type: "delete", model: "" }] },
  { ok: false },
  { commands: [] },
];

function agree(
  label: string,
  mine: { safeParse(v: unknown): { success: boolean; data?: unknown } },
  theirs: { safeParse(v: unknown): { success: boolean; data?: unknown } },
  inputs: unknown[],
): void {
  for (const input of inputs) {
    const a = mine.safeParse(input);
    const b = theirs.safeParse(input);
    assert.deepEqual(
      { success: a.success, data: a.data },
      { success: b.success, data: b.data },
      `${label} disagrees with @oc/shared on ${JSON.stringify(input)}`,
    );
  }
}

Deno.test("wire - the agent's schemas have the shared types", () => {
  assert.deepEqual(sameTypes, [true, true, true, true, true]);
});

Deno.test("wire - the agent's schemas accept and produce what the shared schemas do", () => {
  agree("ModelDetails", wire.ModelDetails, shared.ModelDetails, details);
  agree("InstalledModel", wire.InstalledModel, shared.InstalledModel, models);
  agree("LoadedModel", wire.LoadedModel, shared.LoadedModel, models);
  agree("RegisterResponse", wire.RegisterResponse, shared.RegisterResponse, registerReplies);
  agree("HealthResponse", wire.HealthResponse, shared.HealthResponse, healthReplies);
});
