/** Small HTTP helpers shared by the coordinator's routes. */
import { z } from "zod";
import { describeIssues, ollamaError } from "@oc/shared";
import { BodyError, readBody } from "./body.ts";
import { MESSAGES } from "./messages.ts";

/** Largest management API body accepted (the agent's model lists make up most of it). */
export const MANAGEMENT_BODY_LIMIT = 1024 * 1024;

const decoder = new TextDecoder();

/** A parsed body, or the error response to send instead. */
export type Parsed<T> = { ok: true; data: T } | { ok: false; response: Response };

/** Reads, size-limits, parses and validates a JSON body against `schema` (classic or mini). */
export async function readJson<S extends z.core.$ZodType>(
  req: Request,
  schema: S,
  limit = MANAGEMENT_BODY_LIMIT,
): Promise<Parsed<z.output<S>>> {
  let bytes;
  try {
    bytes = await readBody(req, { limit });
  } catch (error) {
    if (!(error instanceof BodyError)) throw error;
    return { ok: false, response: ollamaError(error.status, error.message) };
  }
  let value: unknown;
  try {
    value = JSON.parse(decoder.decode(bytes));
  } catch {
    return { ok: false, response: ollamaError(400, MESSAGES.invalidManagementJson) };
  }
  const result = z.safeParse(schema, value);
  if (!result.success) {
    return { ok: false, response: ollamaError(400, describeIssues(result.error.issues)) };
  }
  return { ok: true, data: result.data };
}

/** A JSON response with the given status. */
export function json(value: unknown, status = 200, headers?: HeadersInit): Response {
  const h = new Headers(headers);
  h.set("content-type", "application/json; charset=utf-8");
  return new Response(JSON.stringify(value), { status, headers: h });
}
