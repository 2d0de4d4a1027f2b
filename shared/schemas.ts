/**
 * Wire messages between the agent and the coordinator, and the coordinator's management API.
 * One zod schema per message; the TypeScript types are inferred from them.
 *
 * Written with `zod/mini` so the agent can import these schemas too: mini schemas carry a few
 * methods (`safeParse`, `parse`, `check`) where zod's classic ones carry every method, which cost
 * the idle agent about 11 MB of resident memory. The coordinator uses them as it would classic
 * ones (`safeParse`, `z.infer`, `z.compile`, `z.safeParse`); to build a larger schema from them,
 * use `zod/mini`'s functions (`z.extend`, `z.optional`, …) or wrap them in classic schemas.
 */
import * as z from "zod/mini";
import en from "zod/v4/locales/en.js";

// zod's classic API installs its English messages when its first schema is made; mini does not.
// The coordinator sends these messages to clients, so they must not depend on which module was
// loaded first. (`z.config()`, not `z.core.globalConfig`: the latter keeps every locale in the
// agent's bundle.)
if (!z.config().localeError) z.config(en());

// Each check mirrors the classic method it replaces (`.min()` is `gte`, `.int()` an `int` check
// on a number), so the error messages keep their words (schemas_test.ts).
const text = (max: number, options: { min?: number; trim?: boolean } = {}) =>
  z.string().check(
    ...(options.trim ? [z.trim()] : []),
    ...(options.min === undefined ? [] : [z.minLength(options.min)]),
    z.maxLength(max),
  );
const integer = (min: number, max: number) => z.number().check(z.int(), z.gte(min), z.lte(max));
const name = text(253, { min: 1, trim: true });
const count = integer(0, 1_000_000);
const bytes = integer(0, 2 ** 53 - 1);
const percent = z.number().check(z.gte(0), z.lte(100));

// Model objects are loose: every field an agent's Ollama sends reaches clients of `/api/tags` and
// `/api/ps`, including fields a later Ollama adds (`parent_model`, `remote_host`, …). The body
// limit of the management API bounds what they can hold.

/** Details Ollama reports for a model (`/api/tags`, `/api/ps`). */
export const ModelDetails = z.partial(z.looseObject({
  format: z.optional(text(64)),
  family: z.optional(text(128)),
  families: z.nullish(z.array(text(128)).check(z.maxLength(32))),
  parameter_size: z.optional(text(64)),
  quantization_level: z.optional(text(64)),
}));
export type ModelDetails = z.infer<typeof ModelDetails>;

/** A model installed on an agent's disk, as in Ollama's `/api/tags`. */
export const InstalledModel = z.looseObject({
  name,
  digest: z.optional(text(128)),
  size: z.optional(bytes),
  modified_at: z.optional(text(64)),
  details: z.optional(ModelDetails),
});
export type InstalledModel = z.infer<typeof InstalledModel>;

/** A model loaded in memory on an agent, as in Ollama's `/api/ps`. */
export const LoadedModel = z.looseObject({
  name,
  digest: z.optional(text(128)),
  size: z.optional(bytes),
  size_vram: z.optional(bytes),
  expires_at: z.optional(text(64)),
  context_length: z.optional(count),
  details: z.optional(ModelDetails),
});
export type LoadedModel = z.infer<typeof LoadedModel>;

/** One GPU as the agent sampled it. */
export const GpuInfo = z.object({
  name: text(256),
  vendor: z.optional(z.enum(["nvidia", "amd", "apple", "other"])),
  utilization: z.optional(percent),
  memory_used: z.optional(bytes),
  memory_total: z.optional(bytes),
  temperature: z.optional(z.number().check(z.gte(-100), z.lte(300))),
});
export type GpuInfo = z.infer<typeof GpuInfo>;

const models = z.array(InstalledModel).check(z.maxLength(10_000));
const loadedModels = z.array(LoadedModel).check(z.maxLength(1_000));
const gpus = z.array(GpuInfo).check(z.maxLength(64));

/** `POST /api/agents`: an agent announces itself. */
export const RegisterRequest = z.object({
  machine_name: name.check(z.maxLength(128)),
  ip_address: text(253, { min: 1, trim: true }),
  ollama_version: text(64, { min: 1, trim: true }),
  ollama_port: integer(1, 65535),
  agent_version: z.optional(text(64)),
  os: z.optional(text(64)),
  parallel: z.optional(integer(1, 1024)),
  cpu_cores: z.optional(integer(1, 4096)),
  memory_total: z.optional(bytes),
  models: z.optional(models),
  loaded_models: z.optional(loadedModels),
  gpus: z.optional(gpus),
});
export type RegisterRequest = z.infer<typeof RegisterRequest>;

/** Reply to `POST /api/agents`. `agent_secret` authenticates this agent's heartbeats. */
export const RegisterResponse = z.object({
  agent_id: z.string(),
  status: z.enum(["registered", "updated"]),
  agent_secret: z.optional(z.string()),
  heartbeat_interval: z.optional(z.number()),
});
export type RegisterResponse = z.infer<typeof RegisterResponse>;

/** `POST /api/health`: a heartbeat with the agent's latest metrics. */
export const HealthRequest = z.object({
  agent_id: z.uuid(),
  cpu_usage: percent,
  memory_usage: percent,
  active_requests: count,
  memory_used: z.optional(bytes),
  memory_total: z.optional(bytes),
  ollama_up: z.optional(z.boolean()),
  ollama_version: z.optional(text(64)),
  parallel: z.optional(integer(1, 1024)),
  gpus: z.optional(gpus),
  /** Free bytes on the disk that holds Ollama's models (`OLLAMA_MODELS`), for placement. */
  disk_free: z.optional(bytes),
  /** Size in bytes of that disk. */
  disk_total: z.optional(bytes),
  models: z.optional(models),
  loaded_models: z.optional(loadedModels),
});
export type HealthRequest = z.infer<typeof HealthRequest>;

/** A command the coordinator hands to an agent on its next heartbeat. */
export const AgentCommand = z.object({
  id: z.string(),
  type: z.enum(["pull", "delete"]),
  model: name,
});
export type AgentCommand = z.infer<typeof AgentCommand>;

/** Reply to `POST /api/health`: commands the coordinator wants the agent to carry out. */
export const HealthResponse = z.object({
  ok: z.literal(true),
  commands: z.optional(z.array(AgentCommand)),
});
export type HealthResponse = z.infer<typeof HealthResponse>;

/** `PATCH /api/agents/:id`: what an admin may change. */
export const AgentPatch = z.strictObject({
  display_name: z.optional(z.nullable(text(128, { trim: true }))),
  labels: z.optional(
    z.array(text(64, { min: 1, trim: true }).check(z.regex(/^[\w.:\/=-]+$/)))
      .check(z.maxLength(32)),
  ),
  weight: z.optional(z.number().check(z.gte(0), z.lte(100))),
  drain: z.optional(z.boolean()),
}).check(z.refine((p) => Object.keys(p).length > 0, "Nothing to change"));
export type AgentPatch = z.infer<typeof AgentPatch>;

/** The three states an agent can be in, as the API reports them. */
export const AgentStatus = z.enum(["online", "offline", "draining"]);
export type AgentStatus = z.infer<typeof AgentStatus>;

/** The latest metrics an agent reported. */
export interface AgentMetrics {
  cpu_usage: number;
  memory_usage: number;
  active_requests: number;
  memory_used?: number;
  memory_total?: number;
  /** Free bytes on the disk holding Ollama's models, when the agent reports it. */
  disk_free?: number;
  disk_total?: number;
  gpus: GpuInfo[];
}

/** An agent as `GET /api/agents` shows it. Never sent to Ollama clients. */
export interface AgentView {
  id: string;
  machine_name: string;
  display_name: string | null;
  labels: string[];
  ip_address: string;
  ollama_version: string;
  ollama_port: number;
  agent_version: string | null;
  status: AgentStatus;
  status_reason: string | null;
  weight: number;
  parallel: number;
  in_flight: number;
  registered_at: string;
  last_seen: string;
  metrics: AgentMetrics | null;
  models: InstalledModel[];
  loaded_models: LoadedModel[];
}

/** `POST /api/agents/:id/progress`: an agent reports how a command is going. */
export const CommandProgress = z.object({
  command_id: text(64, { min: 1 }),
  status: text(256),
  digest: z.optional(text(128)),
  total: z.optional(bytes),
  completed: z.optional(bytes),
  done: z.optional(z.boolean()),
  error: z.optional(text(1024)),
});
export type CommandProgress = z.infer<typeof CommandProgress>;
