/** Small HTTP helpers shared by the coordinator's routes. */
import { z } from "zod";
import { describeIssues, ollamaError } from "@oc/shared";
import { MESSAGES } from "./messages.ts";

/** Largest management API body accepted (the agent's model lists make up most of it). */
export const MANAGEMENT_BODY_LIMIT = 1024 * 1024;

/** Reads at most `limit` bytes of a body; returns null when it is larger. */
export async function readLimited(
  req: Request,
  limit: number,
): Promise<Uint8Array<ArrayBuffer> | null> {
  const length = req.headers.get("content-length");
  if (length !== null) {
    if (Number(length) > limit) {
      await req.body?.cancel().catch(() => {});
      return null;
    }
    // With a declared length the server already bounds the body: one native read. (Touching
    // `req.body` first would wrap it in a stream and make `arrayBuffer` read it chunk by chunk.)
    return new Uint8Array(await req.arrayBuffer());
  }
  if (!req.body) return new Uint8Array();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for await (const chunk of req.body) {
    size += chunk.byteLength;
    if (size > limit) return null;
    chunks.push(chunk);
  }
  if (chunks.length === 1) return new Uint8Array(chunks[0]);
  const out = new Uint8Array(size);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.byteLength;
  }
  return out;
}

/** A parsed body, or the error response to send instead. */
export type Parsed<T> = { ok: true; data: T } | { ok: false; response: Response };

/** Reads, size-limits, parses and validates a JSON body against `schema` (classic or mini). */
export async function readJson<S extends z.core.$ZodType>(
  req: Request,
  schema: S,
  limit = MANAGEMENT_BODY_LIMIT,
): Promise<Parsed<z.output<S>>> {
  const bytes = await readLimited(req, limit);
  if (bytes === null) {
    return { ok: false, response: ollamaError(413, MESSAGES.bodyTooLarge(limit)) };
  }
  let value: unknown;
  try {
    value = JSON.parse(new TextDecoder().decode(bytes));
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
