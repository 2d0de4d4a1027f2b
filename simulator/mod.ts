/**
 * The Ollama simulator: a real HTTP server (Deno.serve) that speaks Ollama's API: native,
 * OpenAI-compatible and Anthropic's Messages API, so tests, the demo and the benchmarks run without
 * a GPU. Output is deterministic (words picked by a hash of the prompt); speed, time to first
 * token, load time, parallel slots, the queue and faults are configurable and can change at run
 * time.
 *
 * Library: `const sim = await startSimulator({ models: ["llama3.2"] }); … await sim.close();`
 * CLI:     `deno task simulator --help` (simulator/cli.ts; scripts/fake-ollama as `ollama`)
 *
 * The way a request goes: server.ts (listening, faults that refuse or hang, the route table) →
 * ollama_api.ts / openai_api.ts / anthropic_api.ts (parse, pick the shape) → inference.ts
 * (slots.ts, models.ts, tokens from text.ts paced and written in a shapes.ts shape; faults.ts cuts
 * bodies short).
 *
 * @module
 */
export { type SimOptions, type SimStats, type Simulator, startSimulator } from "./server.ts";
export type { SimModel } from "./models.ts";
export { parseFault, type SimFault } from "./faults.ts";
export { cliOptions, parseOllamaHost } from "./cli.ts";
