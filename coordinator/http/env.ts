/** The types every route and middleware of the coordinator's HTTP app shares. */

/** What one request carries from middleware to handler (Hono `Variables`). */
export interface RequestVariables {
  /** The request's id: in the `X-Request-Id` answer header and the request log. */
  requestId: string;
  /** The client API key a client route was called with, once client keys are on. */
  tenant?: string;
  /** The agent whose secret an agent route was called with. */
  agentId?: string;
}

/**
 * The Hono environment of the coordinator's app: `new Hono<AppEnv>()`, `c.get("requestId")`.
 * Read the variables with `c.get`: Hono's `c.var` copies all of them into a new object on every
 * read.
 */
export interface AppEnv {
  /** What `Deno.serve` passes along with each request (tests may pass a peer address). */
  Bindings: { remoteAddr?: { hostname: string } };
  Variables: RequestVariables;
}
