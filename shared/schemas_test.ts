import assert from "node:assert/strict";
import { describeIssues } from "./errors.ts";
import {
  AgentPatch,
  AgentStatus,
  CommandProgress,
  HealthRequest,
  HealthResponse,
  RegisterRequest,
  RegisterResponse,
} from "./schemas.ts";

interface Schema {
  safeParse(value: unknown): {
    success: boolean;
    error?: { issues: readonly { path: readonly PropertyKey[]; message: string }[] };
  };
}

const reg = {
  machine_name: "box",
  ip_address: "10.0.0.2",
  ollama_version: "0.12.6",
  ollama_port: 1,
};
const beat = {
  agent_id: "6f1c1a8e-2b7d-4c1e-9f3a-0d5e8b7c6a41",
  cpu_usage: 1,
  memory_usage: 2,
  active_requests: 0,
};

/**
 * What the coordinator answers (`describeIssues`) for bad bodies. These words were recorded with
 * zod's classic API before the schemas moved to `zod/mini`; clients and scripts may match them.
 */
const REFUSED: [Schema, unknown, string][] = [
  [RegisterRequest, "x", "Invalid input: expected object, received string"],
  [
    RegisterRequest,
    { ...reg, machine_name: undefined },
    'Invalid field "machine_name": Invalid input: expected string, received undefined',
  ],
  [
    RegisterRequest,
    { ...reg, machine_name: "   " },
    'Invalid field "machine_name": Too small: expected string to have >=1 characters',
  ],
  [
    RegisterRequest,
    { ...reg, machine_name: "m".repeat(129) },
    'Invalid field "machine_name": Too big: expected string to have <=128 characters',
  ],
  [
    RegisterRequest,
    { ...reg, ollama_port: "11434" },
    'Invalid field "ollama_port": Invalid input: expected number, received string',
  ],
  [
    RegisterRequest,
    { ...reg, ollama_port: 0 },
    'Invalid field "ollama_port": Too small: expected number to be >=1',
  ],
  [
    RegisterRequest,
    { ...reg, ollama_port: 1.5 },
    'Invalid field "ollama_port": Invalid input: expected int, received number',
  ],
  [
    RegisterRequest,
    { ...reg, ollama_port: 70000 },
    'Invalid field "ollama_port": Too big: expected number to be <=65535',
  ],
  [
    RegisterRequest,
    { ...reg, gpus: [{ name: "g", vendor: "intel" }] },
    'Invalid field "gpus.0.vendor": Invalid option: expected one of "nvidia"|"amd"|"apple"|"other"',
  ],
  [
    RegisterRequest,
    { ...reg, gpus: Array(65).fill({ name: "g" }) },
    'Invalid field "gpus": Too big: expected array to have <=64 items',
  ],
  [
    RegisterRequest,
    { ...reg, models: [{ size: 1 }] },
    'Invalid field "models.0.name": Invalid input: expected string, received undefined',
  ],
  [
    RegisterRequest,
    { ...reg, models: [{ name: "m", size: -1 }] },
    'Invalid field "models.0.size": Too small: expected number to be >=0',
  ],
  [
    RegisterRequest,
    { ...reg, models: [{ name: "m", details: { families: Array(33).fill("a") } }] },
    'Invalid field "models.0.details.families": Too big: expected array to have <=32 items',
  ],
  [
    HealthRequest,
    { ...beat, cpu_usage: 101 },
    'Invalid field "cpu_usage": Too big: expected number to be <=100',
  ],
  [
    HealthRequest,
    { ...beat, cpu_usage: -1 },
    'Invalid field "cpu_usage": Too small: expected number to be >=0',
  ],
  [HealthRequest, { ...beat, agent_id: "abc" }, 'Invalid field "agent_id": Invalid UUID'],
  [
    HealthRequest,
    { ...beat, active_requests: 1.5 },
    'Invalid field "active_requests": Invalid input: expected int, received number',
  ],
  [
    HealthRequest,
    { ...beat, cpu_usage: undefined },
    'Invalid field "cpu_usage": Invalid input: expected number, received undefined',
  ],
  [
    HealthRequest,
    { ...beat, ollama_up: "yes" },
    'Invalid field "ollama_up": Invalid input: expected boolean, received string',
  ],
  [
    HealthRequest,
    { ...beat, loaded_models: [{ name: "m", context_length: 1_000_001 }] },
    'Invalid field "loaded_models.0.context_length": Too big: expected number to be <=1000000',
  ],
  [AgentPatch, {}, "Nothing to change"],
  [AgentPatch, { foo: 1 }, 'Unrecognized key: "foo"'],
  [AgentPatch, { drain: true, foo: 1 }, 'Unrecognized key: "foo"'],
  [
    AgentPatch,
    { labels: ["a b"] },
    'Invalid field "labels.0": Invalid string: must match pattern /^[\\w.:\\/=-]+$/',
  ],
  [
    AgentPatch,
    { labels: ["  "] },
    'Invalid field "labels.0": Too small: expected string to have >=1 characters',
  ],
  [AgentPatch, { weight: 101 }, 'Invalid field "weight": Too big: expected number to be <=100'],
  [
    AgentPatch,
    { drain: "yes" },
    'Invalid field "drain": Invalid input: expected boolean, received string',
  ],
  [
    AgentPatch,
    { display_name: "d".repeat(129) },
    'Invalid field "display_name": Too big: expected string to have <=128 characters',
  ],
  [AgentPatch, [], "Invalid input: expected object, received array"],
  [
    CommandProgress,
    { command_id: "", status: "s" },
    'Invalid field "command_id": Too small: expected string to have >=1 characters',
  ],
  [
    CommandProgress,
    { command_id: "c", status: "s".repeat(257) },
    'Invalid field "status": Too big: expected string to have <=256 characters',
  ],
  [
    RegisterResponse,
    { agent_id: "a", status: "gone" },
    'Invalid field "status": Invalid option: expected one of "registered"|"updated"',
  ],
  [
    HealthResponse,
    { ok: true, commands: [{ id: "c1", type: "copy", model: "m" }] },
    'Invalid field "commands.0.type": Invalid option: expected one of "pull"|"delete"',
  ],
  [HealthResponse, { ok: false }, 'Invalid field "ok": Invalid input: expected true'],
  [AgentStatus, "gone", 'Invalid option: expected one of "online"|"offline"|"draining"'],
];

Deno.test("schemas - bad input is described in the same words as before zod/mini", () => {
  for (const [schema, input, message] of REFUSED) {
    const result = schema.safeParse(input);
    assert.equal(result.success, false, JSON.stringify(input));
    assert.equal(describeIssues(result.error!.issues), message);
  }
});

Deno.test("schemas - valid input is trimmed and stripped of unknown fields, but for models", () => {
  const registered = RegisterRequest.parse({
    ...reg,
    machine_name: "  box  ",
    models: [{ name: " m ", details: { families: null, extra: 1 } }],
    extra: 1,
  });
  assert.deepEqual(registered, {
    ...reg,
    machine_name: "box",
    // Model objects keep what Ollama sent, fields of a later Ollama too.
    models: [{ name: "m", details: { families: null, extra: 1 } }],
  });
  assert.deepEqual(
    AgentPatch.parse({ display_name: " Box ", labels: [" gpu "], weight: 2, drain: true }),
    { display_name: "Box", labels: ["gpu"], weight: 2, drain: true },
  );
  assert.deepEqual(AgentPatch.parse({ display_name: null }), { display_name: null });
  assert.deepEqual(
    HealthResponse.parse({ ok: true, commands: [{ id: "c1", type: "pull", model: " llama3.2 " }] }),
    { ok: true, commands: [{ id: "c1", type: "pull", model: "llama3.2" }] },
  );
  assert.deepEqual(
    RegisterResponse.parse({ agent_id: "a", status: "updated", heartbeat_interval: 5, x: 1 }),
    { agent_id: "a", status: "updated", heartbeat_interval: 5 },
  );
});
