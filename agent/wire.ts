/**
 * The few wire messages the agent reads, as `zod/mini` schemas: Ollama's model list entries and
 * the coordinator's replies. Everything the agent sends is typed by `@oc/shared`'s types and
 * validated by the coordinator.
 *
 * Why not import `@oc/shared`'s schemas: they use zod's classic API, whose schema objects carry
 * every method and cost a few MB of resident memory in a program that should stay under 60 MB
 * while idle (issue #5). These copies must accept and produce exactly what the shared schemas
 * do; `wire_test.ts` checks both the inferred types and the parse results against them.
 */
import * as z from "zod/mini";
import type {
  AgentCommand as AgentCommandType,
  HealthResponse as HealthResponseType,
  InstalledModel as InstalledModelType,
  LoadedModel as LoadedModelType,
  ModelDetails as ModelDetailsType,
  RegisterResponse as RegisterResponseType,
} from "@oc/shared";

const name = z.string().check(z.trim(), z.minLength(1), z.maxLength(253));
const count = z.int().check(z.gte(0), z.lte(1_000_000));
const bytes = z.int().check(z.gte(0), z.lte(2 ** 53 - 1));
const text = (max: number) => z.string().check(z.maxLength(max));

/** Details Ollama reports for a model (`/api/tags`, `/api/ps`). */
export const ModelDetails = z.partial(z.object({
  format: z.optional(text(64)),
  family: z.optional(text(128)),
  families: z.nullish(z.array(text(128)).check(z.maxLength(32))),
  parameter_size: z.optional(text(64)),
  quantization_level: z.optional(text(64)),
}));
/** ModelDetails, as `@oc/shared` defines it. */
export type ModelDetails = ModelDetailsType;

/** A model installed on Ollama's disk, in the wire shape (Ollama's extra fields dropped). */
export const InstalledModel = z.object({
  name,
  digest: z.optional(text(128)),
  size: z.optional(bytes),
  modified_at: z.optional(text(64)),
  details: z.optional(ModelDetails),
});
/** InstalledModel, as `@oc/shared` defines it. */
export type InstalledModel = InstalledModelType;

/** A model loaded in Ollama's memory, in the wire shape. */
export const LoadedModel = z.object({
  name,
  digest: z.optional(text(128)),
  size: z.optional(bytes),
  size_vram: z.optional(bytes),
  expires_at: z.optional(text(64)),
  context_length: z.optional(count),
  details: z.optional(ModelDetails),
});
/** LoadedModel, as `@oc/shared` defines it. */
export type LoadedModel = LoadedModelType;

/** Reply to `POST /api/agents`. */
export const RegisterResponse = z.object({
  agent_id: z.string(),
  status: z.enum(["registered", "updated"]),
  agent_secret: z.optional(z.string()),
  heartbeat_interval: z.optional(z.number()),
});
/** RegisterResponse, as `@oc/shared` defines it. */
export type RegisterResponse = RegisterResponseType;

/** A command the coordinator hands to the agent on a heartbeat. */
export const AgentCommand = z.object({
  id: z.string(),
  type: z.enum(["pull", "delete"]),
  model: name,
});
/** AgentCommand, as `@oc/shared` defines it. */
export type AgentCommand = AgentCommandType;

/** Reply to `POST /api/health`. */
export const HealthResponse = z.object({
  ok: z.literal(true),
  commands: z.optional(z.array(AgentCommand)),
});
/** HealthResponse, as `@oc/shared` defines it. */
export type HealthResponse = HealthResponseType;
