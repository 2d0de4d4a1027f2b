/**
 * The words clients read when something goes wrong, in one table: the same fault gets the same
 * message on every route. Messages that copy Ollama's own (`model is required`, `model "x" not
 * found, try pulling it first`) keep its lower-case wording, because clients and tests match on
 * them; the coordinator's own messages are in sentence case.
 *
 * This module imports nothing, so any layer (scheduler, proxy, routes) may use it.
 */

/** Client-facing error messages, by fault. */
export const MESSAGES = {
  // The request itself.
  bodyTooLarge: (limit: number) => `Request body is larger than ${limit} bytes`,
  bodyUnreadable: "Cannot read the request body: the upload is malformed or was cut",
  bodyTooSlow: (seconds: number) => `Request body did not arrive within ${seconds} s`,
  /** A body that is not JSON, on the Ollama and OpenAI routes (Ollama's wording). */
  invalidJson: "invalid JSON in request body",
  /** A body that is not JSON, on the management API. */
  invalidManagementJson: "Request body is not valid JSON",
  modelRequired: "model is required",
  fieldRequired: (field: string) => `${field} is required`,
  invalidDigest: (digest: string) => `invalid digest "${digest.slice(0, 80)}"`,
  clientClosed: "Client closed the request",
  clientClosedWhileQueued: "Client closed the request while it was queued",
  apiKeyRequired: "A valid API key is required (Authorization: Bearer <key> or x-api-key: <key>)",

  // Which agent serves it.
  noAgentOnline: "No agent is online to serve requests",
  unknownAgent: "The agent named in X-Coordinator-Agent is not known",
  agentOffline: (name: string) => `Agent "${name}" is offline`,
  requestedAgentOffline: "The requested agent is not online",
  /** A model no agent has, for inference (Ollama's wording). */
  modelNotFound: (model: string) => `model "${model}" not found, try pulling it first`,
  /** A model no agent has, for copy, delete, push and `/v1/models/:model`. */
  modelNotInstalled: (model: string) => `model "${model}" not found`,
  modelPinnedOffline: (model: string, label: string) =>
    `model "${model}" is pinned to agents labelled "${label}", and none of them is online`,
  allUnavailable: (model: string) =>
    `All agents with model "${model}" failed or are unavailable; please try again`,
  queueFull: (model: string) => `Server busy, please try again: the queue for "${model}" is full`,
  queueTimeout: (model: string) =>
    `Server busy, please try again: no slot for "${model}" freed in time`,

  // Per-key quotas and fair share (429 with Retry-After).
  rateLimited: (limit: string, seconds: number) =>
    `Rate limit reached for this API key: ${limit}; try again in ${seconds} s`,
  tooManyAtOnce: (limit: number, shared: string) =>
    `Too many requests at once for this API key: at most ${limit}${shared}; try again when one ends`,
  queueShare: (model: string, places: number) =>
    `Too many requests queued for this API key: it holds its share of the queue for "${model}" (${places} ${
      places === 1 ? "place" : "places"
    }); try again shortly`,

  // What the agents answered.
  allFailed: (model: string, why: string) => `All agents failed to serve "${model}": ${why}`,
  agentUnreachable: (name: string) => `agent "${name}" is unreachable`,
  agentFailed: (name: string, why: string) => `agent "${name}" failed: ${why}`,
  answerTooLarge: (name: string, limit: number) =>
    `agent "${name}" answered with more than ${limit} bytes; the answer was dropped`,

  // Admin rules.
  noPlacementRule: (model: string) => `Model "${model}" has no placement rule`,

  // The coordinator itself.
  shuttingDown: "The coordinator is shutting down",
  loopDetected:
    "Loop detected: this request already passed through this coordinator (an agent's address points back at it)",
  tooManyHops: (max: number) =>
    `Loop detected: this request passed through more than ${max} coordinators`,
  internal: "Internal server error",
  methodNotAllowed: (method: string, path: string) => `Method ${method} is not allowed on ${path}`,
  /** Ollama's own answer to an unknown path. */
  pathNotFound: "404 page not found",
  unknownV1Path: (path: string) => `Unknown path ${path}`,
} as const;
