/**
 * Wire messages between the agent and the coordinator, and the coordinator's management API.
 * One zod schema per message; the TypeScript types are inferred from them.
 */
import { z } from "zod";

const name = z.string().trim().min(1).max(253);
const count = z.number().int().min(0).max(1_000_000);
const bytes = z.number().int().min(0).max(2 ** 53 - 1);
const percent = z.number().min(0).max(100);

/** Details Ollama reports for a model (`/api/tags`, `/api/ps`). */
export const ModelDetails = z.object({
  format: z.string().max(64).optional(),
  family: z.string().max(128).optional(),
  families: z.array(z.string().max(128)).max(32).nullish(),
  parameter_size: z.string().max(64).optional(),
  quantization_level: z.string().max(64).optional(),
}).partial();
export type ModelDetails = z.infer<typeof ModelDetails>;

/** A model installed on an agent's disk, as in Ollama's `/api/tags`. */
export const InstalledModel = z.object({
  name,
  digest: z.string().max(128).optional(),
  size: bytes.optional(),
  modified_at: z.string().max(64).optional(),
  details: ModelDetails.optional(),
});
export type InstalledModel = z.infer<typeof InstalledModel>;

/** A model loaded in memory on an agent, as in Ollama's `/api/ps`. */
export const LoadedModel = z.object({
  name,
  digest: z.string().max(128).optional(),
  size: bytes.optional(),
  size_vram: bytes.optional(),
  expires_at: z.string().max(64).optional(),
  context_length: count.optional(),
  details: ModelDetails.optional(),
});
export type LoadedModel = z.infer<typeof LoadedModel>;

/** One GPU as the agent sampled it. */
export const GpuInfo = z.object({
  name: z.string().max(256),
  vendor: z.enum(["nvidia", "amd", "apple", "other"]).optional(),
  utilization: percent.optional(),
  memory_used: bytes.optional(),
  memory_total: bytes.optional(),
  temperature: z.number().min(-100).max(300).optional(),
});
export type GpuInfo = z.infer<typeof GpuInfo>;

const models = z.array(InstalledModel).max(10_000);
const loadedModels = z.array(LoadedModel).max(1_000);
const gpus = z.array(GpuInfo).max(64);

/** `POST /api/agents`: an agent announces itself. */
export const RegisterRequest = z.object({
  machine_name: name.max(128),
  ip_address: z.string().trim().min(1).max(253),
  ollama_version: z.string().trim().min(1).max(64),
  ollama_port: z.number().int().min(1).max(65535),
  agent_version: z.string().max(64).optional(),
  os: z.string().max(64).optional(),
  parallel: z.number().int().min(1).max(1024).optional(),
  cpu_cores: z.number().int().min(1).max(4096).optional(),
  memory_total: bytes.optional(),
  models: models.optional(),
  loaded_models: loadedModels.optional(),
  gpus: gpus.optional(),
});
export type RegisterRequest = z.infer<typeof RegisterRequest>;

/** Reply to `POST /api/agents`. `agent_secret` authenticates this agent's heartbeats. */
export const RegisterResponse = z.object({
  agent_id: z.string(),
  status: z.enum(["registered", "updated"]),
  agent_secret: z.string().optional(),
  heartbeat_interval: z.number().optional(),
});
export type RegisterResponse = z.infer<typeof RegisterResponse>;

/** `POST /api/health`: a heartbeat with the agent's latest metrics. */
export const HealthRequest = z.object({
  agent_id: z.uuid(),
  cpu_usage: percent,
  memory_usage: percent,
  active_requests: count,
  memory_used: bytes.optional(),
  memory_total: bytes.optional(),
  ollama_up: z.boolean().optional(),
  ollama_version: z.string().max(64).optional(),
  parallel: z.number().int().min(1).max(1024).optional(),
  gpus: gpus.optional(),
  models: models.optional(),
  loaded_models: loadedModels.optional(),
});
export type HealthRequest = z.infer<typeof HealthRequest>;

/** Reply to `POST /api/health`: commands the coordinator wants the agent to carry out. */
export const HealthResponse = z.object({
  ok: z.literal(true),
  commands: z.array(z.lazy(() => AgentCommand)).optional(),
});
export type HealthResponse = z.infer<typeof HealthResponse>;

/** A command the coordinator hands to an agent on its next heartbeat. */
export const AgentCommand = z.object({
  id: z.string(),
  type: z.enum(["pull", "delete"]),
  model: name,
});
export type AgentCommand = z.infer<typeof AgentCommand>;

/** `PATCH /api/agents/:id`: what an admin may change. */
export const AgentPatch = z.object({
  display_name: z.string().trim().max(128).nullable().optional(),
  labels: z.array(z.string().trim().min(1).max(64).regex(/^[\w.:\/=-]+$/)).max(32).optional(),
  weight: z.number().min(0).max(100).optional(),
  drain: z.boolean().optional(),
}).strict().refine((p) => Object.keys(p).length > 0, "Nothing to change");
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
  command_id: z.string().min(1).max(64),
  status: z.string().max(256),
  digest: z.string().max(128).optional(),
  total: bytes.optional(),
  completed: bytes.optional(),
  done: z.boolean().optional(),
  error: z.string().max(1024).optional(),
});
export type CommandProgress = z.infer<typeof CommandProgress>;
