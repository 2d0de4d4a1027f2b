/**
 * The Ollama simulator: a real HTTP server (Deno.serve) that speaks Ollama's API, native and
 * OpenAI-compatible, so tests, the demo and the benchmarks run without a GPU. Output is
 * deterministic (words picked by a hash of the prompt); speed, time to first token, load time,
 * parallel slots, the queue and faults are configurable and can change at run time.
 *
 * Library: `const sim = await startSimulator({ models: ["llama3.2"] }); … await sim.close();`
 * CLI:     `deno run --allow-net --allow-env --unstable-no-legacy-abort scripts/ollama_sim.ts --help`
 *
 * @module
 */
import { createHash } from "node:crypto";
import { parseArgs } from "node:util";
import { ollamaErrorBody, openaiErrorBody } from "../shared/errors.ts";
import { displayModelName, normalizeModelName } from "../shared/model_name.ts";

// ---------------------------------------------------------------------------------------------
// Public API

/** A model installed on the simulated server; missing fields are derived from the name. */
export interface SimModel {
  name: string;
  size?: number;
  family?: string;
  parameter_size?: string;
  quantization_level?: string;
}

/** A fault the simulated server shows until it is cleared with `{ type: "none" }`. */
export type SimFault =
  | { type: "none" }
  | { type: "refuse" }
  | { type: "busy" }
  | { type: "die_after"; chunks: number }
  | { type: "hang" };

/** Options of {@linkcode startSimulator}. */
export interface SimOptions {
  /** Listen address; default "127.0.0.1". */
  hostname?: string;
  /** Listen port; default 0 (ephemeral). */
  port?: number;
  /** Installed models; default ["llama3.2:latest", "nomic-embed-text:latest"]. */
  models?: (string | SimModel)[];
  /** Models loaded at start (they must be installed); default []. */
  loaded?: string[];
  /** Generation speed; default 500. */
  tokensPerSecond?: number;
  /** Time to first token in ms (reported as prompt_eval_duration); default 5. */
  ttftMs?: number;
  /** Time to load a model that is not in memory, paid by the first request; default 0. */
  loadMs?: number;
  /** Requests served at once per model (OLLAMA_NUM_PARALLEL); default 4. */
  parallel?: number;
  /** Requests that may wait for a slot, over all models (OLLAMA_MAX_QUEUE); default 512. */
  maxQueue?: number;
  /** Reported by /api/version and `--version`; default "0.12.6". */
  version?: string;
  /** Fault at start; default none. */
  fault?: SimFault;
  /** No request logging. */
  quiet?: boolean;
}

/**
 * Counters of HTTP requests. `requests = inFlight + completed + aborted`: a request is aborted
 * when its response did not complete (client abort, `die_after`, close). `queued` counts the
 * requests waiting for a slot now.
 */
export interface SimStats {
  requests: number;
  inFlight: number;
  aborted: number;
  completed: number;
  queued: number;
}

/** A running simulator. */
export interface Simulator {
  /** Base URL, e.g. "http://127.0.0.1:PORT". */
  readonly url: string;
  readonly port: number;
  /** Switches the fault; resolves once `refuse` stopped listening or clearing it listens again. */
  setFault(fault: SimFault): Promise<void>;
  /**
   * Changes speed, models, limits etc. at run time; streams already running pick up a new speed.
   * Hostname and port are ignored; a fault given here is applied without waiting (use setFault).
   */
  update(opts: Partial<SimOptions>): void;
  /** A snapshot of the counters. */
  readonly stats: SimStats;
  /** Stops listening, ends every request still in flight and waits for the server to finish. */
  close(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

/** Starts a simulator; it listens before the promise resolves (unless the fault is `refuse`). */
export async function startSimulator(opts: SimOptions = {}): Promise<Simulator> {
  const sim = new OllamaSimulator(opts);
  await sim.start(opts.fault ?? { type: "none" });
  return sim;
}

// ---------------------------------------------------------------------------------------------
// Deterministic text, tokens and embeddings

const VOCAB = (
  "the a model answer quickly river light stone cloud green signal garden mountain paper " +
  "engine window quiet bright simple steady ocean forest morning silver data server token " +
  "stream night careful small large open yellow orange blue music story path bridge field " +
  "winter summer valley city road shadow voice memory letter number system network graph " +
  "circle"
).split(" ");

const DEFAULT_MODELS = ["llama3.2:latest", "nomic-embed-text:latest"];
const EMBED_DIM = 8;
const DEFAULT_KEEP_ALIVE_MS = 5 * 60_000;
const FOREVER = Date.UTC(2318, 0, 1);

function fnv1a(text: string, seed = 0x811c9dc5): number {
  let h = seed >>> 0;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h;
}

function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function countTokens(text: string): number {
  return text.split(/\s+/).filter(Boolean).length;
}

interface Plan {
  tokens: string[];
  reason: "stop" | "length";
}

/** The answer to a prompt: 10–40 words ending in "." (stop), or exactly `numPredict` (length). */
function planAnswer(seedText: string, numPredict: number | undefined): Plan {
  const rand = mulberry32(fnv1a(seedText));
  const natural = 10 + Math.floor(rand() * 31);
  const limited = numPredict !== undefined && numPredict >= 0;
  const n = limited ? numPredict : natural;
  const tokens: string[] = [];
  for (let i = 0; i < n; i++) {
    const word = VOCAB[Math.floor(rand() * VOCAB.length)];
    tokens.push(i === 0 ? word[0].toUpperCase() + word.slice(1) : ` ${word}`);
  }
  if (!limited && n > 0) tokens[n - 1] += ".";
  return { tokens, reason: limited ? "length" : "stop" };
}

function tokenIds(text: string): number[] {
  return text.split(/\s+/).filter(Boolean).map((w) => fnv1a(w) % 128_000);
}

/** A unit-length vector derived from the text. */
function embedText(text: string, dim: number): number[] {
  const rand = mulberry32(fnv1a(text, 0x9e3779b9));
  const v = Array.from({ length: dim }, () => rand() * 2 - 1);
  const norm = Math.hypot(...v) || 1;
  return v.map((x) => x / norm);
}

function float32Base64(values: number[]): string {
  const bytes = new Uint8Array(values.length * 4);
  const view = new DataView(bytes.buffer);
  values.forEach((x, i) => view.setFloat32(i * 4, x, true));
  let binary = "";
  for (const b of bytes) binary += String.fromCharCode(b);
  return btoa(binary);
}

// ---------------------------------------------------------------------------------------------
// Models

interface ModelEntry {
  key: string;
  name: string;
  size: number;
  family: string;
  parameterSize: string;
  quantization: string;
  digest: string;
  modifiedAt: Date;
  embedding: boolean;
}

interface Loaded {
  entry: ModelEntry;
  ready: boolean;
  loading: Promise<void>;
  refs: number;
  expiresAt: number;
  unloadWhenIdle: boolean;
}

function sha256Hex(text: string): string {
  return createHash("sha256").update(text).digest("hex");
}

function makeEntry(model: string | SimModel, modifiedAt: Date, digest?: string): ModelEntry {
  const m = typeof model === "string" ? { name: model } : model;
  const key = normalizeModelName(m.name);
  const name = displayModelName(m.name);
  const base = name.split("/").pop()!.split(":")[0];
  const tag = name.split(":").pop() ?? "";
  const embedding = base.includes("embed") || /bert/.test(m.family ?? "");
  const family = m.family ?? (embedding ? "nomic-bert" : base.match(/^[a-z]+/)?.[0] ?? "llama");
  const tagged = tag.match(/(\d+(?:\.\d+)?)([bm])/);
  const parameterSize = m.parameter_size ??
    (tagged ? `${tagged[1]}${tagged[2].toUpperCase()}` : embedding ? "137M" : "3.2B");
  const quantization = m.quantization_level ?? (embedding ? "F16" : "Q4_K_M");
  const bytesPerParam = quantization.startsWith("F16") ? 2 : 0.6;
  const size = m.size ??
    Math.round(parameterCount(parameterSize) * bytesPerParam + (fnv1a(key) % 50_000_000));
  return {
    key,
    name,
    size,
    family,
    parameterSize,
    quantization,
    digest: digest ?? sha256Hex(key),
    modifiedAt,
    embedding,
  };
}

/** "3.2B" → 3.2e9, "137M" → 1.37e8. */
function parameterCount(parameterSize: string): number {
  const n = Number.parseFloat(parameterSize) || 0;
  return Math.round(n * (parameterSize.toUpperCase().endsWith("M") ? 1e6 : 1e9));
}

function details(e: ModelEntry) {
  return {
    parent_model: "",
    format: "gguf",
    family: e.family,
    families: [e.family],
    parameter_size: e.parameterSize,
    quantization_level: e.quantization,
  };
}

/** Ollama's keep_alive: number = seconds, string = Go duration, negative = forever. In ms. */
function parseKeepAlive(value: unknown): number | undefined {
  let ms: number | undefined;
  if (typeof value === "number" && Number.isFinite(value)) ms = value * 1000;
  else if (typeof value === "string" && value.trim() !== "") {
    const s = value.trim();
    if (/^-?\d+(\.\d+)?$/.test(s)) ms = Number(s) * 1000;
    else {
      const unit: Record<string, number> = {
        ns: 1e-6,
        us: 1e-3,
        "µs": 1e-3,
        ms: 1,
        s: 1000,
        m: 60_000,
        h: 3_600_000,
      };
      const parts = [...s.replace(/^-/, "").matchAll(/(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)/g)];
      if (parts.length === 0) return undefined;
      ms = parts.reduce((sum, p) => sum + Number(p[1]) * unit[p[2]], 0);
      if (s.startsWith("-")) ms = -ms;
    }
  }
  if (ms === undefined) return undefined;
  return ms < 0 ? Infinity : ms;
}

// ---------------------------------------------------------------------------------------------
// Slots and queue

/** Thrown when every slot is taken and the queue is full (or the `busy` fault is on). */
class BusyError extends Error {
  constructor() {
    super("server busy, please try again.  maximum pending requests exceeded");
  }
}

interface Waiter {
  key: string;
  grant: () => void;
}

class SlotPool {
  #active = new Map<string, number>();
  #waiting: Waiter[] = [];
  constructor(readonly limits: () => { parallel: number; maxQueue: number }) {}

  get queued(): number {
    return this.#waiting.length;
  }

  /** Resolves with a release function; throws BusyError, or the signal's reason on abort. */
  acquire(key: string, signal: AbortSignal): Promise<() => void> {
    signal.throwIfAborted();
    const { parallel, maxQueue } = this.limits();
    if ((this.#active.get(key) ?? 0) < parallel) {
      return Promise.resolve(this.#take(key));
    }
    if (this.#waiting.length >= maxQueue) return Promise.reject(new BusyError());
    return new Promise((resolve, reject) => {
      const waiter: Waiter = {
        key,
        grant: () => {
          signal.removeEventListener("abort", onAbort);
          resolve(this.#take(key));
        },
      };
      const onAbort = () => {
        this.#waiting.splice(this.#waiting.indexOf(waiter), 1);
        reject(signal.reason);
      };
      signal.addEventListener("abort", onAbort, { once: true });
      this.#waiting.push(waiter);
    });
  }

  /** Grants waiting requests whose model has a free slot, in arrival order. */
  pump(): void {
    const { parallel } = this.limits();
    for (let i = 0; i < this.#waiting.length;) {
      const w = this.#waiting[i];
      if ((this.#active.get(w.key) ?? 0) < parallel) {
        this.#waiting.splice(i, 1);
        w.grant();
      } else i++;
    }
  }

  #take(key: string): () => void {
    this.#active.set(key, (this.#active.get(key) ?? 0) + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.#active.set(key, this.#active.get(key)! - 1);
      this.pump();
    };
  }
}

// ---------------------------------------------------------------------------------------------
// HTTP helpers

type Api = "ollama" | "openai";

/** Per-request state: which error shape to use, the abort signal, how the response ended. */
interface Ctx {
  api: Api;
  signal: AbortSignal;
  /** The body was produced to its end. */
  done: boolean;
  /** The response will not complete (client gone, fault, close). */
  failed: boolean;
  /** The route returns a body that marks `done` itself. */
  streaming: boolean;
}

class HttpError extends Error {
  constructor(readonly status: number, message: string) {
    super(message);
  }
}

const JSON_TYPE = "application/json; charset=utf-8";

function json(body: unknown, status = 200): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": JSON_TYPE },
  });
}

function errorResponse(api: Api, status: number, message: string): Response {
  const body = api === "openai" ? openaiErrorBody(status, message) : ollamaErrorBody(message);
  return new Response(body, { status, headers: { "content-type": JSON_TYPE } });
}

async function readJson(req: Request): Promise<Record<string, unknown>> {
  const text = await req.text();
  if (text.trim() === "") throw new HttpError(400, "missing request body");
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch (e) {
    throw new HttpError(400, `invalid JSON: ${(e as Error).message}`);
  }
  if (body === null || typeof body !== "object" || Array.isArray(body)) {
    throw new HttpError(400, "request body must be a JSON object");
  }
  return body as Record<string, unknown>;
}

function str(value: unknown): string {
  return typeof value === "string" ? value : "";
}

function num(value: unknown): number | undefined {
  return typeof value === "number" && Number.isFinite(value) ? value : undefined;
}

function isoNow(): string {
  return new Date().toISOString();
}

const encoder = new TextEncoder();

/** Sleeps; rejects with the signal's reason on abort and clears its timer. */
function sleep(ms: number, signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.reject(signal.reason);
  if (ms <= 0) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal.reason);
    };
    const timer = setTimeout(() => {
      signal.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal.addEventListener("abort", onAbort, { once: true });
  });
}

function waitForAbort(signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) resolve();
    else signal.addEventListener("abort", () => resolve(), { once: true });
  });
}

/** A response that sends its headers and then drops the connection. */
function dyingResponse(ctx: Ctx, status = 200, bytes = new Uint8Array(), length = 1): Response {
  ctx.failed = true;
  return cutShort(bytes, length, status, JSON_TYPE);
}

/**
 * Deno aborts the connection, silently, when a body ends short of its Content-Length: the
 * client reads the bytes sent and then an error, as when a server process dies.
 */
function cutShort(bytes: Uint8Array, length: number, status: number, type: string): Response {
  const body = new ReadableStream<Uint8Array>({
    start(c) {
      if (bytes.length > 0) c.enqueue(bytes);
      c.close();
    },
  });
  return new Response(body, {
    status,
    headers: { "content-type": type, "content-length": String(Math.max(length, bytes.length + 1)) },
  });
}

// Loopback servers accept only local Host headers, like Ollama (which answers 403 otherwise).
function isLoopbackHost(hostname: string): boolean {
  return hostname === "localhost" || hostname === "::1" || hostname.startsWith("127.");
}

function allowedHostHeader(host: string | null): boolean {
  if (!host) return true;
  let h = host.toLowerCase();
  if (h.startsWith("[")) h = h.slice(1, h.indexOf("]"));
  else if (h.split(":").length === 2) h = h.split(":")[0];
  if (h === "" || h === "localhost" || h === "::1" || h === "::" || h.startsWith("fe80:")) {
    return true;
  }
  if (/^(fc|fd)[0-9a-f]{2}:/.test(h)) return true;
  const v4 = h.match(/^(\d+)\.(\d+)\.(\d+)\.(\d+)$/);
  if (v4) {
    const [a, b] = [Number(v4[1]), Number(v4[2])];
    return a === 127 || a === 10 || a === 0 || (a === 172 && b >= 16 && b < 32) ||
      (a === 192 && b === 168) || (a === 169 && b === 254);
  }
  if (/\.(localhost|local|internal)$/.test(h)) return true;
  try {
    const granted = Deno.permissions.querySync({ name: "sys", kind: "hostname" }).state;
    if (granted === "granted" && h === Deno.hostname().toLowerCase()) return true;
  } catch {
    // No way to learn the machine's name: treat it as not local.
  }
  return false;
}

// ---------------------------------------------------------------------------------------------
// Inference output shapes

/** What the final object reports; durations in ns. */
interface Summary {
  text: string;
  reason: "stop" | "length";
  promptTokens: number;
  evalCount: number;
  totalNs: number;
  loadNs: number;
  promptEvalNs: number;
  evalNs: number;
}

/** How one API writes a generation: stream chunks, final chunks and the non-streaming body. */
interface Shape {
  contentType: string;
  /** Number of chunks written after the tokens. */
  finalCount: number;
  chunk(token: string, index: number): string;
  final(s: Summary): string[];
  whole(s: Summary): unknown;
}

function durations(s: Summary) {
  const out: Record<string, number> = {
    total_duration: s.totalNs,
    load_duration: s.loadNs,
    prompt_eval_count: s.promptTokens,
    prompt_eval_duration: s.promptEvalNs,
    eval_count: s.evalCount,
    eval_duration: s.evalNs,
  };
  // Ollama omits zero values.
  for (const k of Object.keys(out)) if (out[k] === 0) delete out[k];
  return out;
}

function generateShape(model: string, context: number[]): Shape {
  const line = (o: unknown) => JSON.stringify(o) + "\n";
  return {
    contentType: "application/x-ndjson",
    finalCount: 1,
    chunk: (token) => line({ model, created_at: isoNow(), response: token, done: false }),
    final: (s) => [line({ model, created_at: isoNow(), ...finalGenerate(s, context, "") })],
    whole: (s) => ({ model, created_at: isoNow(), ...finalGenerate(s, context, s.text) }),
  };
}

function finalGenerate(s: Summary, context: number[], response: string) {
  return {
    response,
    done: true,
    done_reason: s.reason,
    context: [...context, ...tokenIds(s.text)],
    ...durations(s),
  };
}

function chatShape(model: string): Shape {
  const line = (o: unknown) => JSON.stringify(o) + "\n";
  const msg = (content: string) => ({ role: "assistant", content });
  return {
    contentType: "application/x-ndjson",
    finalCount: 1,
    chunk: (token) => line({ model, created_at: isoNow(), message: msg(token), done: false }),
    final: (s) => [
      line({
        model,
        created_at: isoNow(),
        message: msg(""),
        done: true,
        done_reason: s.reason,
        ...durations(s),
      }),
    ],
    whole: (s) => ({
      model,
      created_at: isoNow(),
      message: msg(s.text),
      done: true,
      done_reason: s.reason,
      ...durations(s),
    }),
  };
}

function usage(s: Summary) {
  return {
    prompt_tokens: s.promptTokens,
    completion_tokens: s.evalCount,
    total_tokens: s.promptTokens + s.evalCount,
  };
}

function openaiShape(kind: "chat" | "text", model: string, includeUsage: boolean): Shape {
  const id = `${kind === "chat" ? "chatcmpl" : "cmpl"}-${Math.floor(Math.random() * 1000)}`;
  const created = Math.floor(Date.now() / 1000);
  const object = kind === "chat" ? "chat.completion.chunk" : "text_completion";
  const head = { id, object, created, model, system_fingerprint: "fp_ollama" };
  const event = (o: unknown) => `data: ${JSON.stringify(o)}\n\n`;
  const choice = (token: string | null, index: number, finish: string | null) =>
    kind === "chat"
      ? {
        index: 0,
        delta: token === null
          ? {}
          : index === 0
          ? { role: "assistant", content: token }
          : { content: token },
        finish_reason: finish,
      }
      : { text: token ?? "", index: 0, finish_reason: finish };
  return {
    contentType: "text/event-stream",
    finalCount: includeUsage ? 3 : 2,
    chunk: (token, i) => event({ ...head, choices: [choice(token, i, null)] }),
    final: (s) => [
      event({ ...head, choices: [choice(null, -1, s.reason)] }),
      ...(includeUsage ? [event({ ...head, choices: [], usage: usage(s) })] : []),
      "data: [DONE]\n\n",
    ],
    whole: (s) => ({
      id,
      object: kind === "chat" ? "chat.completion" : "text_completion",
      created,
      model,
      system_fingerprint: "fp_ollama",
      choices: [
        kind === "chat"
          ? {
            index: 0,
            message: { role: "assistant", content: s.text },
            finish_reason: s.reason,
          }
          : { text: s.text, index: 0, finish_reason: s.reason, logprobs: null },
      ],
      usage: usage(s),
    }),
  };
}

// ---------------------------------------------------------------------------------------------
// The simulator

interface Settings {
  tokensPerSecond: number;
  ttftMs: number;
  loadMs: number;
  parallel: number;
  maxQueue: number;
  version: string;
  quiet: boolean;
}

type Handler = (req: Request, ctx: Ctx) => Promise<Response> | Response;

interface InferRequest {
  entry: ModelEntry;
  keepAliveMs: number | undefined;
  plan: Plan;
  promptTokens: number;
  stream: boolean;
  shape: Shape;
}

class OllamaSimulator implements Simulator {
  #hostname: string;
  #port: number;
  #settings: Settings;
  #models = new Map<string, ModelEntry>();
  #loaded = new Map<string, Loaded>();
  #slots: SlotPool;
  #fault: SimFault = { type: "none" };
  #server: Deno.HttpServer<Deno.NetAddr> | undefined;
  #finishing: Promise<void>[] = [];
  #kill = new AbortController();
  #streams = new Set<() => void>();
  #counts = { requests: 0, inFlight: 0, aborted: 0, completed: 0 };
  #closed = false;
  #routes: Record<string, Partial<Record<string, Handler>>>;

  constructor(opts: SimOptions) {
    this.#hostname = opts.hostname ?? "127.0.0.1";
    this.#port = opts.port ?? 0;
    this.#settings = {
      tokensPerSecond: 500,
      ttftMs: 5,
      loadMs: 0,
      parallel: 4,
      maxQueue: 512,
      version: "0.12.6",
      quiet: false,
    };
    this.#slots = new SlotPool(() => this.#settings);
    // The fault is applied by start(), once the server listens.
    const { fault: _fault, ...rest } = opts;
    this.update({ ...rest, models: opts.models ?? DEFAULT_MODELS });
    // HEAD gets GET's headers: Deno drops the body and keeps its Content-Length.
    const root: Handler = () =>
      new Response("Ollama is running", {
        headers: { "content-type": "text/plain; charset=utf-8" },
      });
    const version: Handler = () => json({ version: this.#settings.version });
    const tags: Handler = () => json({ models: this.#tags() });
    this.#routes = {
      "/": { GET: root, HEAD: root },
      "/api/version": { GET: version, HEAD: version },
      "/api/tags": { GET: tags, HEAD: tags },
      "/api/ps": { GET: () => json({ models: this.#ps() }) },
      "/api/show": { POST: (r) => this.#show(r) },
      "/api/generate": { POST: (r, c) => this.#generate(r, c) },
      "/api/chat": { POST: (r, c) => this.#chat(r, c) },
      "/api/embed": { POST: (r, c) => this.#embed(r, c, "embed") },
      "/api/embeddings": { POST: (r, c) => this.#embed(r, c, "embeddings") },
      "/api/pull": { POST: (r, c) => this.#pull(r, c) },
      "/api/delete": { DELETE: (r) => this.#delete(r) },
      "/api/copy": { POST: (r) => this.#copy(r) },
      "/v1/chat/completions": { POST: (r, c) => this.#openaiChat(r, c) },
      "/v1/completions": { POST: (r, c) => this.#openaiCompletion(r, c) },
      "/v1/embeddings": { POST: (r, c) => this.#openaiEmbeddings(r, c) },
      "/v1/models": { GET: () => json({ object: "list", data: this.#openaiModels() }) },
    };
  }

  get url(): string {
    let host = this.#hostname;
    if (host === "0.0.0.0" || host === "") host = "127.0.0.1";
    else if (host === "::") host = "[::1]";
    else if (host.includes(":")) host = `[${host}]`;
    return `http://${host}:${this.#port}`;
  }

  get port(): number {
    return this.#port;
  }

  get stats(): SimStats {
    return { ...this.#counts, queued: this.#slots.queued };
  }

  async start(fault: SimFault): Promise<void> {
    this.#listen();
    await this.setFault(fault);
  }

  async setFault(fault: SimFault): Promise<void> {
    if (fault.type === "die_after" && !(Number.isInteger(fault.chunks) && fault.chunks >= 0)) {
      throw new RangeError(
        `Cannot set fault die_after: chunks must be a whole number >= 0, got ${fault.chunks}`,
      );
    }
    const wasRefusing = this.#fault.type === "refuse";
    this.#fault = fault;
    if (this.#closed) return;
    if (fault.type === "refuse" && !wasRefusing) await this.#stopListening();
    else if (fault.type !== "refuse" && wasRefusing) await this.#listenAgain();
  }

  update(opts: Partial<SimOptions>): void {
    const s = this.#settings;
    const positive = (name: string, v: number | undefined, min: number) => {
      if (v === undefined) return undefined;
      if (!Number.isFinite(v) || v < min || (name === "tokensPerSecond" && v === 0)) {
        throw new RangeError(`Cannot configure simulator: ${name} is out of range, got ${v}`);
      }
      return v;
    };
    s.tokensPerSecond = positive("tokensPerSecond", opts.tokensPerSecond, 0) ??
      s.tokensPerSecond;
    s.ttftMs = positive("ttftMs", opts.ttftMs, 0) ?? s.ttftMs;
    s.loadMs = positive("loadMs", opts.loadMs, 0) ?? s.loadMs;
    s.parallel = positive("parallel", opts.parallel, 1) ?? s.parallel;
    s.maxQueue = positive("maxQueue", opts.maxQueue, 0) ?? s.maxQueue;
    s.version = opts.version ?? s.version;
    s.quiet = opts.quiet ?? s.quiet;
    if (opts.models) {
      const now = Date.now();
      const next = new Map<string, ModelEntry>();
      opts.models.forEach((m, i) => {
        // Listed first = newest, as /api/tags sorts by modified_at.
        const entry = makeEntry(m, new Date(now - i * 1000));
        next.set(entry.key, entry);
      });
      this.#models = next;
      for (const key of this.#loaded.keys()) if (!next.has(key)) this.#loaded.delete(key);
    }
    if (opts.loaded) {
      for (const [key, l] of this.#loaded) if (l.ready && l.refs === 0) this.#loaded.delete(key);
      for (const name of opts.loaded) {
        const entry = this.#models.get(normalizeModelName(name));
        if (!entry) {
          throw new RangeError(`Cannot load model "${name}": it is not installed`);
        }
        this.#loaded.set(entry.key, {
          entry,
          ready: true,
          loading: Promise.resolve(),
          refs: 0,
          expiresAt: Date.now() + DEFAULT_KEEP_ALIVE_MS,
          unloadWhenIdle: false,
        });
      }
    }
    if (opts.fault) void this.setFault(opts.fault).catch(() => {});
    this.#slots.pump();
  }

  async close(): Promise<void> {
    if (this.#closed) return await Promise.all(this.#finishing).then(() => {});
    this.#closed = true;
    this.#kill.abort(new Error("Simulator closed"));
    for (const kill of this.#streams) kill();
    if (this.#server) this.#finishing.push(this.#server.shutdown());
    this.#server = undefined;
    await Promise.all(this.#finishing);
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  // --- listening ------------------------------------------------------------------------------

  #listen(): void {
    const server = Deno.serve({
      hostname: this.#hostname,
      port: this.#port,
      onListen: () => {},
    }, (req, info) => this.#handle(req, info));
    this.#server = server;
    this.#port = server.addr.port;
  }

  async #stopListening(): Promise<void> {
    const server = this.#server;
    this.#server = undefined;
    if (!server) return;
    this.#finishing.push(server.shutdown());
    // shutdown() closes the listener on a later turn of the event loop; wait until it refuses.
    const host = new URL(this.url).hostname.replace(/^\[|\]$/g, "");
    for (let i = 0; i < 400; i++) {
      try {
        const conn = await Deno.connect({ hostname: host, port: this.#port });
        conn.close();
      } catch {
        return;
      }
      await new Promise((r) => setTimeout(r, 5));
    }
  }

  async #listenAgain(): Promise<void> {
    for (let i = 0;; i++) {
      try {
        this.#listen();
        return;
      } catch (e) {
        if (!(e instanceof Deno.errors.AddrInUse) || i >= 400) throw e;
        await new Promise((r) => setTimeout(r, 5));
      }
    }
  }

  // --- request handling ---------------------------------------------------------------------

  async #handle(req: Request, info: Deno.ServeHandlerInfo): Promise<Response> {
    const started = performance.now();
    const url = new URL(req.url);
    const api: Api = url.pathname.startsWith("/v1/") ? "openai" : "ollama";
    const ctx: Ctx = {
      api,
      signal: AbortSignal.any([req.signal, this.#kill.signal]),
      done: false,
      failed: false,
      streaming: false,
    };
    this.#counts.requests++;
    this.#counts.inFlight++;
    // Without --unstable-no-legacy-abort the signal also fires after a completed response;
    // by then `done` is set, so only a real abort counts.
    ctx.signal.addEventListener("abort", () => {
      if (!ctx.done) ctx.failed = true;
    }, { once: true });
    let status = 0;
    const settle = () => {
      this.#counts.inFlight--;
      if (ctx.failed || !ctx.done) this.#counts.aborted++;
      else this.#counts.completed++;
      if (!this.#settings.quiet) {
        const ms = (performance.now() - started).toFixed(1);
        const end = ctx.failed || !ctx.done ? " (aborted)" : "";
        console.error(`[sim] ${status} | ${ms}ms | ${req.method} ${url.pathname}${end}`);
      }
    };
    info.completed.then(settle, settle);
    let res: Response;
    try {
      res = await this.#route(req, url, ctx);
    } catch (e) {
      if (e instanceof HttpError) res = errorResponse(api, e.status, e.message);
      else if (e instanceof BusyError) res = errorResponse(api, 503, e.message);
      else if (ctx.signal.aborted) res = dyingResponse(ctx);
      else res = errorResponse(api, 500, (e as Error).message ?? String(e));
    }
    if (!ctx.streaming) ctx.done = true;
    status = res.status;
    return res;
  }

  #route(req: Request, url: URL, ctx: Ctx): Promise<Response> | Response {
    if (isLoopbackHost(this.#hostname) && !allowedHostHeader(req.headers.get("host"))) {
      return new Response(null, { status: 403 });
    }
    if (this.#fault.type === "hang") {
      return waitForAbort(ctx.signal).then(() => dyingResponse(ctx));
    }
    let path = url.pathname;
    if (path.length > 1 && path.endsWith("/")) path = path.slice(0, -1);
    let methods = this.#routes[path];
    if (!methods && path.startsWith("/v1/models/")) {
      const name = decodeURIComponent(path.slice("/v1/models/".length));
      methods = { GET: () => this.#openaiModel(name) };
    }
    if (!methods) return errorResponse(ctx.api, 404, "404 page not found");
    const handler = methods[req.method];
    if (!handler) {
      const res = errorResponse(ctx.api, 405, "405 method not allowed");
      res.headers.set("allow", Object.keys(methods).join(", "));
      return res;
    }
    return handler(req, ctx);
  }

  #find(raw: string): ModelEntry | undefined {
    return raw.trim() === "" ? undefined : this.#models.get(normalizeModelName(raw));
  }

  #requireModel(raw: string, what: "generate" | "chat" | "embed"): ModelEntry {
    if (raw.trim() === "") throw new HttpError(400, "model is required");
    const entry = this.#find(raw);
    if (!entry) throw new HttpError(404, `model "${raw}" not found, try pulling it first`);
    if (entry.embedding && what !== "embed") {
      throw new HttpError(400, `"${raw}" does not support ${what}`);
    }
    return entry;
  }

  // --- memory: loading, keep_alive, /api/ps -------------------------------------------------

  #purgeExpired(): void {
    const now = Date.now();
    for (const [key, l] of this.#loaded) {
      if (l.ready && l.refs === 0 && l.expiresAt <= now) this.#loaded.delete(key);
    }
  }

  /** Loads the model if needed and takes a reference; returns the ns spent waiting for it. */
  async #useModel(entry: ModelEntry, signal: AbortSignal): Promise<number> {
    const started = performance.now();
    this.#purgeExpired();
    let l = this.#loaded.get(entry.key);
    if (!l) {
      const loading = sleep(this.#settings.loadMs, this.#kill.signal);
      l = {
        entry,
        ready: false,
        loading,
        refs: 0,
        expiresAt: Infinity,
        unloadWhenIdle: false,
      };
      const loaded = l;
      this.#loaded.set(entry.key, l);
      loading.then(() => {
        loaded.ready = true;
        loaded.expiresAt = Date.now() + DEFAULT_KEEP_ALIVE_MS;
      }, () => {
        if (this.#loaded.get(entry.key) === loaded) this.#loaded.delete(entry.key);
      });
    }
    l.refs++;
    try {
      if (!l.ready) await Promise.race([l.loading, waitForAbort(signal)]);
      signal.throwIfAborted();
    } catch (e) {
      l.refs--;
      throw e;
    }
    return Math.max(1000, Math.round((performance.now() - started) * 1e6));
  }

  /** Drops a reference; keep_alive sets when the model leaves memory (0 = when idle). */
  #releaseModel(entry: ModelEntry, keepAliveMs: number | undefined): void {
    const l = this.#loaded.get(entry.key);
    if (!l) return;
    l.refs = Math.max(0, l.refs - 1);
    if (keepAliveMs === 0) l.unloadWhenIdle = true;
    else {
      l.unloadWhenIdle = false;
      l.expiresAt = keepAliveMs === Infinity
        ? FOREVER
        : Date.now() + (keepAliveMs ?? DEFAULT_KEEP_ALIVE_MS);
    }
    if (l.refs === 0 && l.unloadWhenIdle) this.#loaded.delete(entry.key);
  }

  #ps() {
    this.#purgeExpired();
    return [...this.#loaded.values()].filter((l) => l.ready).map((l) => ({
      name: l.entry.name,
      model: l.entry.name,
      size: l.entry.size,
      digest: l.entry.digest,
      details: details(l.entry),
      expires_at: new Date(Math.min(l.expiresAt, FOREVER)).toISOString(),
      size_vram: l.entry.size,
      context_length: 4096,
    }));
  }

  #tags() {
    return [...this.#models.values()]
      .sort((a, b) => b.modifiedAt.getTime() - a.modifiedAt.getTime())
      .map((e) => ({
        name: e.name,
        model: e.name,
        modified_at: e.modifiedAt.toISOString(),
        size: e.size,
        digest: e.digest,
        details: details(e),
      }));
  }

  async #show(req: Request): Promise<Response> {
    const body = await readJson(req);
    const raw = str(body.model) || str(body.name);
    if (raw.trim() === "") throw new HttpError(400, "model is required");
    const e = this.#find(raw);
    if (!e) throw new HttpError(404, `model '${raw}' not found`);
    const arch = e.family.replace(/-/g, "");
    return json({
      license: "",
      modelfile: `# Modelfile generated by "ollama show"\nFROM ${e.name}\n`,
      parameters: e.embedding ? "" : 'stop                           "<|eot_id|>"',
      template: e.embedding ? "{{ .Prompt }}" : "{{ .System }}\n{{ .Prompt }}",
      details: details(e),
      model_info: {
        "general.architecture": arch,
        "general.parameter_count": parameterCount(e.parameterSize),
        [`${arch}.context_length`]: 4096,
        [`${arch}.embedding_length`]: EMBED_DIM,
      },
      capabilities: e.embedding ? ["embedding"] : ["completion"],
      modified_at: e.modifiedAt.toISOString(),
    });
  }

  // --- generation -----------------------------------------------------------------------------

  async #generate(req: Request, ctx: Ctx): Promise<Response> {
    const body = await readJson(req);
    const raw = str(body.model);
    const entry = this.#requireModel(raw, "generate");
    const keepAliveMs = parseKeepAlive(body.keep_alive);
    const prompt = str(body.prompt);
    if (prompt === "") {
      const reason = await this.#loadOnly(entry, keepAliveMs, ctx);
      return json({
        model: raw,
        created_at: isoNow(),
        response: "",
        done: true,
        done_reason: reason,
      });
    }
    const system = str(body.system);
    const seed = system ? `${system}\n${prompt}` : prompt;
    return await this.#infer(ctx, {
      entry,
      keepAliveMs,
      plan: planAnswer(seed, numPredict(body.options)),
      promptTokens: Math.max(1, countTokens(seed)),
      stream: body.stream !== false,
      shape: generateShape(raw, tokenIds(seed)),
    });
  }

  async #chat(req: Request, ctx: Ctx): Promise<Response> {
    const body = await readJson(req);
    const raw = str(body.model);
    const entry = this.#requireModel(raw, "chat");
    const keepAliveMs = parseKeepAlive(body.keep_alive);
    const messages = Array.isArray(body.messages) ? body.messages : [];
    if (messages.length === 0) {
      const reason = await this.#loadOnly(entry, keepAliveMs, ctx);
      return json({
        model: raw,
        created_at: isoNow(),
        message: { role: "assistant", content: "" },
        done: true,
        done_reason: reason,
      });
    }
    const seed = messageText(messages);
    return await this.#infer(ctx, {
      entry,
      keepAliveMs,
      plan: planAnswer(seed, numPredict(body.options)),
      promptTokens: countTokens(seed) + messages.length,
      stream: body.stream !== false,
      shape: chatShape(raw),
    });
  }

  /** An empty prompt loads the model (or unloads it with keep_alive 0) and answers at once. */
  async #loadOnly(
    entry: ModelEntry,
    keepAliveMs: number | undefined,
    ctx: Ctx,
  ): Promise<"load" | "unload"> {
    if (this.#fault.type === "busy") throw new BusyError();
    if (keepAliveMs === 0) {
      const l = this.#loaded.get(entry.key);
      if (l) {
        l.unloadWhenIdle = true;
        if (l.refs === 0) this.#loaded.delete(entry.key);
      }
      return "unload";
    }
    await this.#useModel(entry, ctx.signal);
    this.#releaseModel(entry, keepAliveMs);
    return "load";
  }

  /** Takes a slot, loads the model, then writes the paced answer in the request's shape. */
  async #infer(ctx: Ctx, r: InferRequest): Promise<Response> {
    const started = performance.now();
    const fault = this.#fault;
    if (fault.type === "busy") throw new BusyError();
    const releaseSlot = await this.#slots.acquire(r.entry.key, ctx.signal);
    let loadNs: number;
    try {
      loadNs = await this.#useModel(r.entry, ctx.signal);
    } catch (e) {
      releaseSlot();
      throw e;
    }
    const release = once(() => {
      releaseSlot();
      this.#releaseModel(r.entry, r.keepAliveMs);
    });
    const run = new AbortController();
    const signal = AbortSignal.any([ctx.signal, run.signal]);
    const ttftMs = this.#settings.ttftMs;
    let evalNs = 0;
    const summary = (): Summary => {
      const promptEvalNs = Math.round(ttftMs * 1e6);
      const measured = Math.round((performance.now() - started) * 1e6);
      return {
        text: r.plan.tokens.join(""),
        reason: r.plan.reason,
        promptTokens: r.promptTokens,
        evalCount: r.plan.tokens.length,
        loadNs,
        promptEvalNs,
        evalNs: Math.round(evalNs),
        totalNs: Math.max(measured, loadNs + promptEvalNs + Math.round(evalNs)),
      };
    };
    const settings = this.#settings;
    // Token i is due at ttft + the sum of 1/tps so far; tps is read per token, so update()
    // changes the speed of streams already running.
    async function* chunks(): AsyncGenerator<string> {
      try {
        await sleep(ttftMs, signal);
        let due = performance.now();
        for (let i = 0; i < r.plan.tokens.length; i++) {
          if (i > 0) {
            const step = 1000 / settings.tokensPerSecond;
            due += step;
            const wait = due - performance.now();
            if (wait >= 1) await sleep(wait, signal);
            else signal.throwIfAborted();
          }
          evalNs += 1e9 / settings.tokensPerSecond;
          yield r.shape.chunk(r.plan.tokens[i], i);
        }
        release();
        for (const c of r.shape.final(summary())) yield c;
      } finally {
        release();
      }
    }
    const source = chunks();
    if (!r.stream) {
      try {
        // Drain the token chunks for their pacing; the body is written whole at the end.
        for await (const _ of source) { /* paced */ }
      } finally {
        release();
      }
      const bytes = encoder.encode(JSON.stringify(r.shape.whole(summary())));
      if (fault.type === "die_after") {
        return dyingResponse(ctx, 200, bytes.slice(0, bytes.length >> 1), bytes.length);
      }
      return new Response(bytes, { headers: { "content-type": JSON_TYPE } });
    }
    const total = r.plan.tokens.length + r.shape.finalCount;
    const dieAt = fault.type === "die_after" && fault.chunks < total ? fault.chunks : undefined;
    return await this.#stream(ctx, source, run, r.shape.contentType, dieAt);
  }

  /**
   * Streams the chunks, sending headers with the first one (as Ollama does). With `dieAt` the
   * connection drops after that many chunks.
   */
  async #stream(
    ctx: Ctx,
    source: AsyncGenerator<string>,
    run: AbortController,
    contentType: string,
    dieAt?: number,
  ): Promise<Response> {
    let first: IteratorResult<string>;
    try {
      first = await source.next();
    } catch (e) {
      await source.return(undefined);
      throw e;
    }
    ctx.streaming = true;
    let sent = 0;
    let controller!: ReadableStreamDefaultController<Uint8Array>;
    let ended = false;
    const end = () => {
      ended = true;
      this.#streams.delete(kill);
      run.abort();
      void source.return(undefined).catch(() => {});
    };
    const kill = () => {
      if (ended) return;
      ctx.failed = true;
      end();
      // Erroring the body aborts the connection; Deno logs the reason, so keep it to one line.
      const reason = new Error("Simulator closed");
      reason.stack = "Ollama simulator closed with a response in flight: connection aborted";
      controller.error(reason);
    };
    this.#streams.add(kill);
    const enqueue = (chunk: string): boolean => {
      controller.enqueue(encoder.encode(chunk));
      sent++;
      if (dieAt !== undefined && sent >= dieAt) {
        ctx.failed = true;
        end();
        controller.close();
        return false;
      }
      return true;
    };
    const body = new ReadableStream<Uint8Array>({
      start: (c) => {
        controller = c;
        if (dieAt === 0) {
          ctx.failed = true;
          end();
          c.close();
        } else if (first.done) {
          ctx.done = true;
          end();
          c.close();
        } else enqueue(first.value);
      },
      pull: async (c) => {
        if (ended) return;
        try {
          const next = await source.next();
          if (ended) return;
          if (next.done) {
            ctx.done = true;
            end();
            c.close();
          } else enqueue(next.value);
        } catch (e) {
          if (ended) return;
          ctx.failed = true;
          end();
          c.error(e);
        }
      },
      cancel: () => {
        if (!ctx.done) ctx.failed = true;
        end();
      },
    });
    const headers: Record<string, string> = { "content-type": contentType };
    if (dieAt !== undefined) headers["content-length"] = String(1 << 30);
    return new Response(body, { headers });
  }

  // --- embeddings -----------------------------------------------------------------------------

  /** Takes a slot and loads the model like a generation; returns vectors and timings. */
  async #embedVectors(
    ctx: Ctx,
    entry: ModelEntry,
    inputs: string[],
    keepAliveMs: number | undefined,
    dim: number,
  ) {
    const started = performance.now();
    if (this.#fault.type === "busy") throw new BusyError();
    const releaseSlot = await this.#slots.acquire(entry.key, ctx.signal);
    try {
      const loadNs = await this.#useModel(entry, ctx.signal);
      this.#releaseModel(entry, keepAliveMs);
      const embeddings = inputs.map((t) => embedText(t, dim));
      const promptTokens = inputs.reduce((n, t) => n + Math.max(1, countTokens(t)), 0);
      const totalNs = Math.max(loadNs, Math.round((performance.now() - started) * 1e6));
      return { embeddings, loadNs, totalNs, promptTokens };
    } finally {
      releaseSlot();
    }
  }

  #maybeDie(ctx: Ctx, body: unknown): Response {
    const bytes = encoder.encode(JSON.stringify(body));
    if (this.#fault.type === "die_after") {
      return dyingResponse(ctx, 200, bytes.slice(0, bytes.length >> 1), bytes.length);
    }
    return new Response(bytes, { headers: { "content-type": JSON_TYPE } });
  }

  async #embed(req: Request, ctx: Ctx, route: "embed" | "embeddings"): Promise<Response> {
    const body = await readJson(req);
    const raw = str(body.model);
    const entry = this.#requireModel(raw, "embed");
    const keepAliveMs = parseKeepAlive(body.keep_alive);
    const dim = dimensions(body.dimensions);
    if (route === "embeddings") {
      const prompt = str(body.prompt);
      if (prompt === "") return json({ embedding: [] });
      const r = await this.#embedVectors(ctx, entry, [prompt], keepAliveMs, dim);
      return this.#maybeDie(ctx, { embedding: r.embeddings[0] });
    }
    const input = body.input;
    const inputs = typeof input === "string"
      ? [input]
      : Array.isArray(input) && input.every((x) => typeof x === "string")
      ? input as string[]
      : input === undefined
      ? []
      : undefined;
    if (!inputs) throw new HttpError(400, "invalid input type");
    const r = await this.#embedVectors(ctx, entry, inputs, keepAliveMs, dim);
    return this.#maybeDie(ctx, {
      model: raw,
      embeddings: r.embeddings,
      total_duration: r.totalNs,
      load_duration: r.loadNs,
      prompt_eval_count: r.promptTokens,
    });
  }

  // --- models on disk: pull, delete, copy -----------------------------------------------------

  async #pull(req: Request, ctx: Ctx): Promise<Response> {
    const body = await readJson(req);
    const raw = str(body.model) || str(body.name);
    if (raw.trim() === "") throw new HttpError(400, "model is required");
    const existing = this.#find(raw);
    const entry = existing ?? makeEntry(raw, new Date());
    const layer = sha256Hex(`layer:${entry.key}`);
    const total = entry.size;
    const steps = [
      { status: "pulling manifest" },
      ...[0, 0.25, 0.5, 0.75, 1].map((f) => ({
        status: `pulling ${layer.slice(0, 12)}`,
        digest: `sha256:${layer}`,
        total,
        completed: Math.round(total * f),
      })),
      { status: "verifying sha256 digest" },
      { status: "writing manifest" },
      { status: "success" },
    ];
    const install = () => {
      if (!this.#models.has(entry.key)) {
        entry.modifiedAt = this.#newestTime();
        this.#models.set(entry.key, entry);
      }
    };
    const fault = this.#fault;
    if (body.stream === false) {
      install();
      return this.#maybeDie(ctx, { status: "success" });
    }
    const run = new AbortController();
    async function* lines(): AsyncGenerator<string> {
      for (const step of steps) {
        if (step.status === "success") install();
        yield JSON.stringify(step) + "\n";
        await sleep(0, AbortSignal.any([ctx.signal, run.signal]));
      }
    }
    const dieAt = fault.type === "die_after" && fault.chunks < steps.length
      ? fault.chunks
      : undefined;
    return await this.#stream(ctx, lines(), run, "application/x-ndjson", dieAt);
  }

  async #delete(req: Request): Promise<Response> {
    const body = await readJson(req);
    const raw = str(body.model) || str(body.name);
    if (raw.trim() === "") throw new HttpError(400, "model is required");
    const entry = this.#find(raw);
    if (!entry) throw new HttpError(404, `model '${raw}' not found`);
    this.#models.delete(entry.key);
    this.#loaded.delete(entry.key);
    return new Response(null, { status: 200 });
  }

  /** Now, but strictly newer than every installed model, so /api/tags order never ties. */
  #newestTime(): Date {
    let newest = 0;
    for (const e of this.#models.values()) newest = Math.max(newest, e.modifiedAt.getTime());
    return new Date(Math.max(Date.now(), newest + 1));
  }

  async #copy(req: Request): Promise<Response> {
    const body = await readJson(req);
    const source = str(body.source);
    const destination = str(body.destination);
    if (source.trim() === "" || destination.trim() === "") {
      throw new HttpError(400, "source and destination are required");
    }
    const from = this.#find(source);
    if (!from) throw new HttpError(404, `model "${source}" not found`);
    const copy = makeEntry(
      {
        name: destination,
        size: from.size,
        family: from.family,
        parameter_size: from.parameterSize,
        quantization_level: from.quantization,
      },
      this.#newestTime(),
      from.digest,
    );
    this.#models.set(copy.key, copy);
    return new Response(null, { status: 200 });
  }

  // --- OpenAI-compatible routes ----------------------------------------------------------------

  async #openaiChat(req: Request, ctx: Ctx): Promise<Response> {
    const body = await readJson(req);
    const raw = str(body.model);
    const entry = this.#requireModel(raw, "chat");
    const messages = Array.isArray(body.messages) ? body.messages : [];
    if (messages.length === 0) throw new HttpError(400, "[] is too short - 'messages'");
    const seed = messageText(messages);
    const stream = body.stream === true;
    return await this.#infer(ctx, {
      entry,
      keepAliveMs: undefined,
      plan: planAnswer(seed, openaiMaxTokens(body)),
      promptTokens: countTokens(seed) + messages.length,
      stream,
      shape: openaiShape("chat", raw, stream && includeUsage(body)),
    });
  }

  async #openaiCompletion(req: Request, ctx: Ctx): Promise<Response> {
    const body = await readJson(req);
    const raw = str(body.model);
    const entry = this.#requireModel(raw, "generate");
    const prompt = Array.isArray(body.prompt) ? body.prompt.map(str).join("\n") : str(body.prompt);
    const stream = body.stream === true;
    return await this.#infer(ctx, {
      entry,
      keepAliveMs: undefined,
      plan: planAnswer(prompt, openaiMaxTokens(body)),
      promptTokens: Math.max(1, countTokens(prompt)),
      stream,
      shape: openaiShape("text", raw, stream && includeUsage(body)),
    });
  }

  async #openaiEmbeddings(req: Request, ctx: Ctx): Promise<Response> {
    const body = await readJson(req);
    const raw = str(body.model);
    const entry = this.#requireModel(raw, "embed");
    const input = body.input;
    let inputs: string[];
    if (typeof input === "string") inputs = [input];
    else if (Array.isArray(input) && input.length > 0) {
      // Token arrays are accepted too; their ids stand for the text.
      inputs = input.every((x) => typeof x === "number")
        ? [input.join(" ")]
        : input.map((x) => (Array.isArray(x) ? x.join(" ") : String(x)));
    } else throw new HttpError(400, "invalid input");
    const r = await this.#embedVectors(ctx, entry, inputs, undefined, dimensions(body.dimensions));
    const base64 = body.encoding_format === "base64";
    return this.#maybeDie(ctx, {
      object: "list",
      data: r.embeddings.map((embedding, index) => ({
        object: "embedding",
        embedding: base64 ? float32Base64(embedding) : embedding,
        index,
      })),
      model: raw,
      usage: { prompt_tokens: r.promptTokens, total_tokens: r.promptTokens },
    });
  }

  #openaiModels() {
    return this.#tags().map((t) => openaiModel(t.name, t.modified_at));
  }

  #openaiModel(raw: string): Response {
    const e = this.#find(raw);
    if (!e) throw new HttpError(404, `model "${raw}" not found`);
    return json(openaiModel(raw, e.modifiedAt.toISOString(), e.name));
  }
}

function openaiModel(id: string, modifiedAt: string, name = id) {
  const parts = normalizeModelName(name).split("/");
  return {
    id,
    object: "model",
    created: Math.floor(Date.parse(modifiedAt) / 1000),
    owned_by: parts[parts.length - 2],
  };
}

function once(fn: () => void): () => void {
  let called = false;
  return () => {
    if (called) return;
    called = true;
    fn();
  };
}

function messageText(messages: unknown[]): string {
  return messages.map((m) => {
    const content = (m as { content?: unknown })?.content;
    if (typeof content === "string") return content;
    // OpenAI content parts: [{type:"text", text}]
    if (Array.isArray(content)) return content.map((p) => str(p?.text)).join(" ");
    return "";
  }).join("\n");
}

function numPredict(options: unknown): number | undefined {
  const n = num((options as { num_predict?: unknown } | undefined)?.num_predict);
  return n === undefined ? undefined : Math.floor(n);
}

function openaiMaxTokens(body: Record<string, unknown>): number | undefined {
  const n = num(body.max_completion_tokens) ?? num(body.max_tokens);
  return n === undefined ? undefined : Math.floor(n);
}

function includeUsage(body: Record<string, unknown>): boolean {
  return (body.stream_options as { include_usage?: unknown } | undefined)?.include_usage === true;
}

function dimensions(value: unknown): number {
  const n = num(value);
  return n !== undefined && n >= 1 && n <= 4096 ? Math.floor(n) : EMBED_DIM;
}

// ---------------------------------------------------------------------------------------------
// Command line

/** Parses OLLAMA_HOST as `ollama serve` does: `host:port`, `host`, `:port`, `http://host:port`. */
export function parseOllamaHost(value: string | undefined): { hostname: string; port: number } {
  const fallback = { hostname: "127.0.0.1", port: 11434 };
  let s = (value ?? "").trim();
  if (s === "") return fallback;
  let defaultPort = 11434;
  const scheme = s.indexOf("://");
  if (scheme !== -1) {
    const proto = s.slice(0, scheme).toLowerCase();
    if (proto === "http") defaultPort = 80;
    if (proto === "https") defaultPort = 443;
    s = s.slice(scheme + 3);
  }
  s = s.split("/")[0];
  let hostname: string;
  let port: string;
  const v6 = s.match(/^\[([^\]]*)\](?::(\d*))?$/);
  if (v6) [hostname, port] = [v6[1], v6[2] ?? ""];
  else if ((s.match(/:/g) ?? []).length === 1) [hostname, port] = s.split(":");
  else [hostname, port] = [s, ""];
  const n = port === "" ? defaultPort : Number(port);
  if (!Number.isInteger(n) || n < 0 || n > 65535) return fallback;
  // An empty host with a port listens on every interface, as Go's net.Listen(":port") does.
  if (hostname === "") hostname = port === "" ? "127.0.0.1" : "0.0.0.0";
  return { hostname, port: n };
}

/** Parses `none`, `refuse`, `busy`, `hang` or `die_after:N`. */
export function parseFault(value: string): SimFault {
  const v = value.trim().toLowerCase();
  if (v === "none" || v === "refuse" || v === "busy" || v === "hang") return { type: v };
  const m = v.match(/^die_after[:=](\d+)$/);
  if (m) return { type: "die_after", chunks: Number(m[1]) };
  throw new TypeError(
    `Cannot parse fault "${value}": expected none, refuse, busy, hang or die_after:N`,
  );
}

const HELP = `Ollama simulator: speaks Ollama's API without a GPU.

Usage: ollama_sim.ts [serve] [options]

Options (flags win over environment variables):
  --host H          listen address, same forms as OLLAMA_HOST (env OLLAMA_HOST; 127.0.0.1:11434)
  --port N          listen port
  --models a,b      installed models (SIM_MODELS; llama3.2:latest,nomic-embed-text:latest)
  --loaded a,b      models in memory at start (SIM_LOADED)
  --tps N           tokens per second (SIM_TPS; 500)
  --ttft MS         time to first token (SIM_TTFT_MS; 5)
  --load MS         model load time (SIM_LOAD_MS; 0)
  --parallel N      slots per model (SIM_PARALLEL, then OLLAMA_NUM_PARALLEL; 4)
  --max-queue N     waiting requests before 503 (SIM_MAX_QUEUE, then OLLAMA_MAX_QUEUE; 512)
  --fault F         none | refuse | busy | hang | die_after:N (SIM_FAULT; none)
  --quiet           no request log, no start-up line
  -v, --version     print "ollama version is X"
  -h, --help        this help
`;

/** Builds the simulator options from CLI arguments and environment variables. */
export function cliOptions(
  args: string[],
  env: (name: string) => string | undefined,
): SimOptions & { help?: boolean; printVersion?: boolean } {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      host: { type: "string" },
      port: { type: "string" },
      models: { type: "string" },
      loaded: { type: "string" },
      tps: { type: "string" },
      ttft: { type: "string" },
      load: { type: "string" },
      parallel: { type: "string" },
      "max-queue": { type: "string" },
      fault: { type: "string" },
      quiet: { type: "boolean" },
      version: { type: "boolean", short: "v" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (positionals.length > 1 || (positionals[0] !== undefined && positionals[0] !== "serve")) {
    throw new TypeError(`Cannot run "${positionals.join(" ")}": only "serve" is simulated`);
  }
  const number = (flag: string, value: string | undefined, integer = false) => {
    if (value === undefined || value === "") return undefined;
    const n = Number(value);
    if (!Number.isFinite(n) || n < 0 || (integer && !Number.isInteger(n))) {
      throw new RangeError(`Cannot use ${flag} "${value}": expected a number >= 0`);
    }
    return n;
  };
  const list = (value: string | undefined) =>
    value === undefined ? undefined : value.split(",").map((s) => s.trim()).filter(Boolean);
  const { hostname, port } = parseOllamaHost(values.host ?? env("OLLAMA_HOST"));
  const fault = values.fault ?? env("SIM_FAULT");
  return {
    help: values.help,
    printVersion: values.version,
    hostname,
    port: number("--port", values.port, true) ?? port,
    models: list(values.models ?? env("SIM_MODELS")),
    loaded: list(values.loaded ?? env("SIM_LOADED")),
    tokensPerSecond: number("--tps", values.tps ?? env("SIM_TPS")),
    ttftMs: number("--ttft", values.ttft ?? env("SIM_TTFT_MS")),
    loadMs: number("--load", values.load ?? env("SIM_LOAD_MS")),
    parallel: number(
      "--parallel",
      values.parallel ?? env("SIM_PARALLEL") ?? env("OLLAMA_NUM_PARALLEL"),
      true,
    ),
    maxQueue: number(
      "--max-queue",
      values["max-queue"] ?? env("SIM_MAX_QUEUE") ?? env("OLLAMA_MAX_QUEUE"),
      true,
    ),
    fault: fault === undefined ? undefined : parseFault(fault),
    quiet: values.quiet,
  };
}

async function main(): Promise<void> {
  let opts: ReturnType<typeof cliOptions>;
  try {
    opts = cliOptions(Deno.args, (name) => Deno.env.get(name));
  } catch (e) {
    console.error(`Error: ${(e as Error).message}\n\n${HELP}`);
    Deno.exit(2);
  }
  if (opts.help) {
    console.log(HELP);
    return;
  }
  if (opts.printVersion) {
    console.log(`ollama version is ${opts.version ?? "0.12.6"}`);
    return;
  }
  const { help: _h, printVersion: _v, ...simOptions } = opts;
  // Drop undefined values so the defaults apply.
  const clean = Object.fromEntries(
    Object.entries(simOptions).filter(([, v]) => v !== undefined),
  ) as SimOptions;
  let sim: Simulator;
  try {
    sim = await startSimulator(clean);
  } catch (e) {
    console.error(
      `Error: Cannot listen on ${clean.hostname}:${clean.port}: ${(e as Error).message}`,
    );
    Deno.exit(1);
  }
  if (!clean.quiet) {
    console.error(
      `[sim] Listening on ${sim.url.replace("http://", "")} (version ${clean.version ?? "0.12.6"})`,
    );
  }
  const stop = async () => {
    await sim.close();
    Deno.exit(0);
  };
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    try {
      Deno.addSignalListener(signal, () => void stop());
    } catch {
      // SIGTERM cannot be listened to on Windows.
    }
  }
}

if (import.meta.main) await main();
