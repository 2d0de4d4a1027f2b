/** What the coordinator and the agent both use: wire schemas, errors and model names. */
export * from "./schemas.ts";
export * from "./errors.ts";
export * from "./model_name.ts";
export * from "./sleep.ts";
