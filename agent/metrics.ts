/**
 * Machine metrics for heartbeats: CPU and memory use, and GPUs from the vendors' tools.
 *
 * CPU: on Linux, the busy share of the time between two reads of `/proc/stat`. Elsewhere (macOS,
 * Windows) there is no such file: the one-minute load average divided by the cores stands in,
 * capped at 100; Windows reports a load average of 0, so its CPU use reads 0.
 *
 * GPUs: `nvidia-smi` (Linux, Windows), `rocm-smi` (Linux) and, on macOS, `system_profiler` for the
 * names only. A tool that is not installed is skipped silently and never tried again.
 *
 * Disk: free and total bytes of the disk holding Ollama's models (`OLLAMA_MODELS`, else
 * `~/.ollama/models`), so the coordinator does not place a model where it cannot fit. `df -Pk`
 * on Linux and macOS (a child process costs the idle agent no resident memory, where `node:fs`'s
 * `statfs` would add about 8 MB), Node's `statfs` on Windows, which has no `df`.
 */
import type { GpuInfo } from "@oc/shared";
import type { Logger } from "./log.ts";
import { silentLogger } from "./log.ts";

/** Cumulative CPU time counters, in ticks. */
export interface CpuTimes {
  idle: number;
  total: number;
}

/** Pure: the aggregate `cpu` line of `/proc/stat`; null when there is none. */
export function parseProcStat(text: string): CpuTimes | null {
  const line = text.split("\n").find((l) => /^cpu\s/.test(l));
  if (!line) return null;
  const n = line.trim().split(/\s+/).slice(1).map(Number);
  if (n.length < 4 || n.some((v) => !Number.isFinite(v))) return null;
  // user nice system idle iowait irq softirq steal; guest time is already inside user.
  const [user, nice, system, idle, iowait = 0, irq = 0, softirq = 0, steal = 0] = n;
  return {
    idle: idle + iowait,
    total: user + nice + system + idle + iowait + irq + softirq + steal,
  };
}

function clampPercent(value: number): number {
  if (!Number.isFinite(value)) return 0;
  return Math.round(Math.min(100, Math.max(0, value)) * 10) / 10;
}

/** Pure: busy percentage between two `/proc/stat` reads (0 when no time passed). */
export function cpuUsagePercent(prev: CpuTimes, next: CpuTimes): number {
  const total = next.total - prev.total;
  if (total <= 0) return 0;
  return clampPercent(((total - (next.idle - prev.idle)) / total) * 100);
}

/** Pure: the stand-in CPU percentage where `/proc/stat` is missing: load average per core. */
export function loadAverageUsage(load1: number, cores: number): number {
  if (cores <= 0) return 0;
  return clampPercent((load1 / cores) * 100);
}

/** Samples CPU use; each call covers the time since the previous one. */
export interface CpuSampler {
  sample(): number;
}

/** Options of {@linkcode createCpuSampler}, for tests and other systems. */
export interface CpuSamplerOptions {
  /** Returns `/proc/stat`'s text, or null where it does not exist. */
  readProcStat?: () => string | null;
  loadavg?: () => number[];
  cores?: number;
}

function readProcStatFile(): string | null {
  try {
    return Deno.readTextFileSync("/proc/stat");
  } catch {
    return null;
  }
}

/** Number of logical CPU cores. */
export function cpuCores(): number {
  return Math.max(1, navigator.hardwareConcurrency || 1);
}

/** Creates a {@linkcode CpuSampler}; the first sample covers the time since creation. */
export function createCpuSampler(options: CpuSamplerOptions = {}): CpuSampler {
  const read = options.readProcStat ?? readProcStatFile;
  const loadavg = options.loadavg ?? (() => Deno.loadavg());
  const cores = options.cores ?? cpuCores();
  const first = read();
  let prev = first === null ? null : parseProcStat(first);
  return {
    sample() {
      if (prev !== null) {
        const text = read();
        const next = text === null ? null : parseProcStat(text);
        if (next) {
          const usage = cpuUsagePercent(prev, next);
          prev = next;
          return usage;
        }
      }
      try {
        return loadAverageUsage(loadavg()[0] ?? 0, cores);
      } catch {
        return 0;
      }
    },
  };
}

/** Memory in bytes and the used share in percent. */
export interface MemorySample {
  total: number;
  used: number;
  usage: number;
}

/** Pure: used = total - available, as a share of total. */
export function memoryFromInfo(info: { total: number; available: number }): MemorySample {
  const total = Math.max(0, Math.trunc(info.total));
  const used = Math.min(total, Math.max(0, Math.trunc(info.total - info.available)));
  return { total, used, usage: total > 0 ? clampPercent((used / total) * 100) : 0 };
}

/** The machine's memory now (`Deno.systemMemoryInfo()`). */
export function sampleMemory(): MemorySample {
  return memoryFromInfo(Deno.systemMemoryInfo());
}

const MIB = 1024 * 1024;

function num(value: unknown): number | undefined {
  if (typeof value === "number") return Number.isFinite(value) ? value : undefined;
  if (typeof value !== "string") return undefined;
  const trimmed = value.trim();
  if (!/^-?\d+(\.\d+)?$/.test(trimmed)) return undefined;
  return Number(trimmed);
}

function percent(value: unknown): number | undefined {
  const n = num(value);
  return n === undefined ? undefined : Math.min(100, Math.max(0, n));
}

function temperature(value: unknown): number | undefined {
  const n = num(value);
  return n === undefined || n < -100 || n > 300 ? undefined : n;
}

function byteCount(value: unknown, unit = 1): number | undefined {
  const n = num(value);
  return n === undefined || n < 0 ? undefined : Math.round(n * unit);
}

function gpu(info: GpuInfo): GpuInfo {
  // Drop absent fields so the wire message stays small and exact.
  return Object.fromEntries(
    Object.entries(info).filter(([, v]) => v !== undefined),
  ) as GpuInfo;
}

/**
 * Pure: `nvidia-smi --query-gpu=name,utilization.gpu,memory.used,memory.total,temperature.gpu
 * --format=csv,noheader,nounits` output. Memory is MiB; `[N/A]` values are left out.
 */
export function parseNvidiaSmi(text: string): GpuInfo[] {
  const out: GpuInfo[] = [];
  for (const line of text.split(/\r?\n/)) {
    if (!line.trim()) continue;
    const fields = line.split(",").map((f) => f.trim());
    if (fields.length < 5) continue;
    // The four numbers are last; a name with a comma keeps the rest.
    const [util, used, total, temp] = fields.slice(-4);
    const name = fields.slice(0, -4).join(", ").slice(0, 256);
    out.push(gpu({
      name,
      vendor: "nvidia",
      utilization: percent(util),
      memory_used: byteCount(used, MIB),
      memory_total: byteCount(total, MIB),
      temperature: temperature(temp),
    }));
  }
  return out;
}

/**
 * Pure: `rocm-smi --showproductname --showuse --showmeminfo vram --showtemp --json` output:
 * `{"card0": {"GPU use (%)": "3", "VRAM Total Memory (B)": "…", …}, "system": {…}}`.
 */
export function parseRocmSmi(text: string): GpuInfo[] {
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch {
    return [];
  }
  if (!data || typeof data !== "object") return [];
  const out: GpuInfo[] = [];
  const cards = Object.entries(data as Record<string, unknown>)
    .filter(([key, v]) => /^card\d+$/i.test(key) && v && typeof v === "object")
    .sort(([a], [b]) => Number(a.slice(4)) - Number(b.slice(4)));
  for (const [key, value] of cards) {
    const card = value as Record<string, unknown>;
    const pick = (...names: string[]) =>
      names.map((n) => card[n]).find((v) => typeof v === "string" && v.trim() !== "") as
        | string
        | undefined;
    const tempKey = Object.keys(card).find((k) => /^Temperature \(Sensor edge\)/.test(k)) ??
      Object.keys(card).find((k) => /^Temperature/.test(k));
    out.push(gpu({
      name: (pick("Card series", "Card Series", "Card model", "Card SKU", "Device Name") ??
        `AMD GPU ${key.slice(4)}`).trim().slice(0, 256),
      vendor: "amd",
      utilization: percent(card["GPU use (%)"]),
      memory_used: byteCount(card["VRAM Total Used Memory (B)"]),
      memory_total: byteCount(card["VRAM Total Memory (B)"]),
      temperature: tempKey ? temperature(card[tempKey]) : undefined,
    }));
  }
  return out;
}

function vendorOf(text: string): GpuInfo["vendor"] {
  const t = text.toLowerCase();
  if (t.includes("apple")) return "apple";
  if (t.includes("nvidia")) return "nvidia";
  if (t.includes("amd") || t.includes("ati")) return "amd";
  return "other";
}

/** Pure: the GPUs (names and vendors) in `system_profiler SPDisplaysDataType -json` output. */
export function parseSystemProfiler(text: string): GpuInfo[] {
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch {
    return [];
  }
  const list = (data as { SPDisplaysDataType?: unknown })?.SPDisplaysDataType;
  if (!Array.isArray(list)) return [];
  const out: GpuInfo[] = [];
  for (const entry of list) {
    if (!entry || typeof entry !== "object") continue;
    const e = entry as Record<string, unknown>;
    const name = [e.sppci_model, e._name].find((v) => typeof v === "string" && v.trim());
    if (typeof name !== "string") continue;
    const vendorText = [e.spdisplays_vendor, e.sppci_vendor, name].filter((v) =>
      typeof v === "string"
    ).join(" ");
    out.push({ name: name.trim().slice(0, 256), vendor: vendorOf(vendorText) });
  }
  return out;
}

/** Result of running a tool. */
export interface CommandOutput {
  code: number;
  stdout: string;
}

/**
 * Runs a tool and returns its exit code and standard output.
 * Throws `Deno.errors.NotFound` when the tool is not installed.
 */
export type CommandRunner = (
  command: string,
  args: string[],
  signal: AbortSignal,
) => Promise<CommandOutput>;

/** The default {@linkcode CommandRunner}: `Deno.Command` with output captured. */
export const runCommand: CommandRunner = async (command, args, signal) => {
  const out = await new Deno.Command(command, {
    args,
    stdin: "null",
    stdout: "piped",
    stderr: "null",
    signal,
  }).output();
  return { code: out.code, stdout: new TextDecoder().decode(out.stdout) };
};

interface GpuTool {
  command: string;
  args: string[];
  parse: (stdout: string) => GpuInfo[];
  /** Run once and reuse the answer (names that do not change). */
  once?: boolean;
}

const NVIDIA_SMI: GpuTool = {
  command: "nvidia-smi",
  args: [
    "--query-gpu=name,utilization.gpu,memory.used,memory.total,temperature.gpu",
    "--format=csv,noheader,nounits",
  ],
  parse: parseNvidiaSmi,
};
const ROCM_SMI: GpuTool = {
  command: "rocm-smi",
  args: ["--showproductname", "--showuse", "--showmeminfo", "vram", "--showtemp", "--json"],
  parse: parseRocmSmi,
};
const SYSTEM_PROFILER: GpuTool = {
  command: "system_profiler",
  args: ["SPDisplaysDataType", "-json"],
  parse: parseSystemProfiler,
  once: true,
};

/** The GPU tools worth trying on an operating system. */
export function gpuToolsFor(os: typeof Deno.build.os): readonly GpuTool[] {
  if (os === "darwin") return [SYSTEM_PROFILER];
  if (os === "windows") return [NVIDIA_SMI];
  return [NVIDIA_SMI, ROCM_SMI];
}

/** Samples the machine's GPUs. */
export interface GpuSampler {
  sample(): Promise<GpuInfo[]>;
  /** Tools found missing; they are not run again. */
  readonly missing: ReadonlySet<string>;
}

/** Options of {@linkcode createGpuSampler}. */
export interface GpuSamplerOptions {
  run?: CommandRunner;
  os?: typeof Deno.build.os;
  logger?: Logger;
  /** Limit of one tool run in milliseconds (default 5000). */
  timeoutMs?: number;
}

/** Creates a {@linkcode GpuSampler} for this (or the given) operating system. */
export function createGpuSampler(options: GpuSamplerOptions = {}): GpuSampler {
  const run = options.run ?? runCommand;
  const logger = options.logger ?? silentLogger;
  const tools = gpuToolsFor(options.os ?? Deno.build.os);
  const missing = new Set<string>();
  const cached = new Map<string, GpuInfo[]>();
  async function sampleTool(tool: GpuTool): Promise<GpuInfo[]> {
    if (missing.has(tool.command)) return [];
    const hit = cached.get(tool.command);
    if (hit) return hit;
    try {
      const out = await run(
        tool.command,
        tool.args,
        AbortSignal.timeout(options.timeoutMs ?? 5_000),
      );
      if (out.code !== 0) {
        logger.debug("GPU tool failed", { tool: tool.command, code: out.code });
        return [];
      }
      const gpus = tool.parse(out.stdout);
      if (tool.once) cached.set(tool.command, gpus);
      return gpus;
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) {
        missing.add(tool.command);
      } else if (
        error instanceof Deno.errors.NotCapable || error instanceof Deno.errors.PermissionDenied
      ) {
        missing.add(tool.command);
        logger.debug("GPU tool not allowed", { tool: tool.command, error });
      } else {
        logger.debug("GPU tool failed", { tool: tool.command, error });
      }
      return [];
    }
  }
  return {
    missing,
    async sample() {
      const lists = await Promise.all(tools.map(sampleTool));
      return lists.flat().slice(0, 64);
    },
  };
}

/** Free and total bytes of one disk. */
export interface DiskSample {
  free: number;
  total: number;
}

/**
 * Pure: the data line of `df -Pk PATH` (POSIX format, 1024-byte blocks): total and available
 * bytes; null when there is no such line. Read from the right, so a device name with spaces
 * still parses.
 */
export function parseDf(text: string): DiskSample | null {
  for (const line of text.trim().split(/\r?\n/).slice(1).reverse()) {
    const m = line.match(/\s(\d+)\s+(\d+)\s+(\d+)\s+(?:\d+%|-)\s+\S/);
    if (m) return { total: Number(m[1]) * 1024, free: Number(m[3]) * 1024 };
  }
  return null;
}

/** Where Ollama keeps its models: `OLLAMA_MODELS`, else `.ollama/models` in the home folder. */
export function ollamaModelsDir(
  env: (name: string) => string | undefined = (n) => Deno.env.get(n),
  os: typeof Deno.build.os = Deno.build.os,
): string {
  const set = env("OLLAMA_MODELS")?.trim();
  if (set) return set;
  const sep = os === "windows" ? "\\" : "/";
  const home = (os === "windows" ? env("USERPROFILE") : env("HOME")) ?? env("HOME") ?? ".";
  return [home.replace(/[\\/]+$/, ""), ".ollama", "models"].join(sep);
}

/** The nearest folder of `path` that exists (Ollama creates the models folder on first pull). */
export function existingAncestor(
  path: string,
  exists: (p: string) => boolean = (p) => {
    try {
      Deno.statSync(p);
      return true;
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return false;
      throw e;
    }
  },
): string {
  let p = path;
  while (!exists(p)) {
    const parent = p.replace(/[\\/]+[^\\/]*$/, "");
    if (parent === p) return p; // a relative name with nothing above it
    if (parent === "") return "/";
    if (/^[A-Za-z]:$/.test(parent)) return `${parent}\\`;
    p = parent;
  }
  return p;
}

/** Samples the free space of the models' disk. */
export interface DiskSampler {
  /** The last reading (taken again at most every `everyMs`); undefined when it cannot be read. */
  sample(): Promise<DiskSample | undefined>;
}

/** Options of {@linkcode createDiskSampler}. */
export interface DiskSamplerOptions {
  /** The folder whose disk is measured; default {@linkcode ollamaModelsDir}. */
  dir?: string;
  run?: CommandRunner;
  os?: typeof Deno.build.os;
  /** Least time between two readings (default 30 s): free space changes slowly. */
  everyMs?: number;
  now?: () => number;
  logger?: Logger;
}

async function statfsDisk(dir: string): Promise<DiskSample> {
  // Loaded only where there is no `df` (Windows): `node:fs` costs resident memory.
  const { statfs } = await import("node:fs/promises");
  const s = await statfs(dir);
  return { free: s.bavail * s.bsize, total: s.blocks * s.bsize };
}

/** Creates a {@linkcode DiskSampler}. A disk that cannot be read is not tried again. */
export function createDiskSampler(options: DiskSamplerOptions = {}): DiskSampler {
  const run = options.run ?? runCommand;
  const os = options.os ?? Deno.build.os;
  const everyMs = options.everyMs ?? 30_000;
  const now = options.now ?? Date.now;
  const logger = options.logger ?? silentLogger;
  let last: { at: number; value: DiskSample | undefined } | undefined;
  let broken = false;
  const read = async (): Promise<DiskSample | undefined> => {
    const dir = existingAncestor(options.dir ?? ollamaModelsDir(undefined, os));
    if (os === "windows") return await statfsDisk(dir);
    const out = await run("df", ["-Pk", dir], AbortSignal.timeout(5_000));
    return out.code === 0 ? parseDf(out.stdout) ?? undefined : undefined;
  };
  return {
    async sample() {
      if (broken) return undefined;
      if (last && now() - last.at < everyMs) return last.value;
      let value: DiskSample | undefined;
      try {
        value = await read();
      } catch (error) {
        if (
          error instanceof Deno.errors.NotFound || error instanceof Deno.errors.NotCapable ||
          error instanceof Deno.errors.PermissionDenied
        ) {
          broken = true;
          logger.debug("Cannot read the models' disk space", { error });
        }
      }
      last = { at: now(), value };
      return value;
    },
  };
}

/** What a heartbeat reports about the machine. */
export interface SystemMetrics {
  cpu_usage: number;
  memory_usage: number;
  memory_used: number;
  memory_total: number;
  gpus: GpuInfo[];
  /** Free bytes on the models' disk, when it could be read. */
  disk_free?: number;
  disk_total?: number;
}

/** Samples CPU, memory and GPUs together. */
export interface MetricsSampler {
  sample(): Promise<SystemMetrics>;
}

/** Options of {@linkcode createMetricsSampler}. */
export interface MetricsSamplerOptions {
  cpu?: CpuSampler;
  gpu?: GpuSampler;
  memory?: () => MemorySample;
  disk?: DiskSampler;
  logger?: Logger;
}

/** Creates a {@linkcode MetricsSampler} from the machine's own samplers unless others are given. */
export function createMetricsSampler(options: MetricsSamplerOptions = {}): MetricsSampler {
  const cpu = options.cpu ?? createCpuSampler();
  const gpu = options.gpu ?? createGpuSampler({ logger: options.logger });
  const memory = options.memory ?? sampleMemory;
  const disk = options.disk ?? createDiskSampler({ logger: options.logger });
  return {
    async sample() {
      const mem = memory();
      const [gpus, space] = await Promise.all([gpu.sample(), disk.sample()]);
      return {
        cpu_usage: cpu.sample(),
        memory_usage: mem.usage,
        memory_used: mem.used,
        memory_total: mem.total,
        gpus,
        ...(space ? { disk_free: space.free, disk_total: space.total } : {}),
      };
    },
  };
}
