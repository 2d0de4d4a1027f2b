/** The scheduler's one error: no agent can be given for a request. */

/**
 * Why no agent could be given: maps to an HTTP status for the client (429: the API key holds its
 * share of a full queue).
 */
export class NoAgentError extends Error {
  override name = "NoAgentError";
  constructor(
    message: string,
    readonly status: 404 | 429 | 503,
    readonly retryAfter?: number,
  ) {
    super(message);
  }
}
