import assert from "node:assert/strict";
import {
  type CommandRunner,
  cpuUsagePercent,
  createCpuSampler,
  createDiskSampler,
  createGpuSampler,
  createMetricsSampler,
  existingAncestor,
  gpuToolsFor,
  loadAverageUsage,
  memoryFromInfo,
  ollamaModelsDir,
  parseDf,
  parseNvidiaSmi,
  parseProcStat,
  parseRocmSmi,
  parseSystemProfiler,
  sampleMemory,
} from "./metrics.ts";

const MIB = 1024 * 1024;

const PROC_STAT_1 = `cpu  2395 0 1365 69861 61 0 16 7 0 0
cpu0 1033 0 591 35218 4 0 4 3 0 0
cpu1 1361 0 773 34642 57 0 12 4 0 0
intr 106776 0 0 0
ctxt 231830
`;
const PROC_STAT_2 = `cpu  2595 0 1465 70061 61 0 16 7 0 0
cpu0 1133 0 641 35318 4 0 4 3 0 0
`;

Deno.test("metrics - parses the aggregate cpu line of /proc/stat", () => {
  assert.deepEqual(parseProcStat(PROC_STAT_1), {
    idle: 69861 + 61,
    total: 2395 + 1365 + 69861 + 61 + 16 + 7,
  });
  assert.equal(parseProcStat("intr 1 2 3\n"), null);
  assert.equal(parseProcStat(""), null);
});

Deno.test("metrics - cpu usage is the busy share between two reads", () => {
  const a = parseProcStat(PROC_STAT_1)!;
  const b = parseProcStat(PROC_STAT_2)!;
  // 300 busy ticks (200 user + 100 system) out of 500.
  assert.equal(cpuUsagePercent(a, b), 60);
  assert.equal(cpuUsagePercent(a, a), 0);
});

Deno.test("metrics - cpu sampler uses /proc/stat deltas and falls back to load average", () => {
  const reads = [PROC_STAT_1, PROC_STAT_2];
  const linux = createCpuSampler({ readProcStat: () => reads.shift() ?? null });
  assert.equal(linux.sample(), 60);
  const mac = createCpuSampler({ readProcStat: () => null, loadavg: () => [1.5, 1, 1], cores: 4 });
  assert.equal(mac.sample(), 37.5);
  const windows = createCpuSampler({ readProcStat: () => null, loadavg: () => [0, 0, 0] });
  assert.equal(windows.sample(), 0);
  assert.equal(loadAverageUsage(16, 4), 100);
  assert.equal(loadAverageUsage(1, 0), 0);
});

Deno.test("metrics - memory used is total minus available", () => {
  assert.deepEqual(memoryFromInfo({ total: 1000, available: 250 }), {
    total: 1000,
    used: 750,
    usage: 75,
  });
  assert.deepEqual(memoryFromInfo({ total: 0, available: 0 }), { total: 0, used: 0, usage: 0 });
  const real = sampleMemory();
  assert.ok(real.total > 0 && real.used <= real.total);
});

Deno.test("metrics - parses nvidia-smi csv output, MiB to bytes", () => {
  const text = "NVIDIA GeForce RTX 4090, 37, 20480, 24564, 61\n" +
    "Tesla T4, [N/A], 0, 15360, [N/A]\r\n\n";
  assert.deepEqual(parseNvidiaSmi(text), [
    {
      name: "NVIDIA GeForce RTX 4090",
      vendor: "nvidia",
      utilization: 37,
      memory_used: 20480 * MIB,
      memory_total: 24564 * MIB,
      temperature: 61,
    },
    { name: "Tesla T4", vendor: "nvidia", memory_used: 0, memory_total: 15360 * MIB },
  ]);
  assert.deepEqual(parseNvidiaSmi("garbage"), []);
});

Deno.test("metrics - parses rocm-smi json output", () => {
  const text = JSON.stringify({
    card1: {
      "Card series": "Radeon RX 7900 XTX",
      "Card model": "0x744c",
      "Temperature (Sensor junction) (C)": "48.0",
      "Temperature (Sensor edge) (C)": "41.0",
      "GPU use (%)": "12",
      "VRAM Total Memory (B)": "25753026560",
      "VRAM Total Used Memory (B)": "1073741824",
    },
    card0: { "GPU use (%)": "0", "VRAM Total Memory (B)": "17163091968" },
    system: { "Driver version": "6.8.0" },
  });
  assert.deepEqual(parseRocmSmi(text), [
    { name: "AMD GPU 0", vendor: "amd", utilization: 0, memory_total: 17163091968 },
    {
      name: "Radeon RX 7900 XTX",
      vendor: "amd",
      utilization: 12,
      memory_used: 1073741824,
      memory_total: 25753026560,
      temperature: 41,
    },
  ]);
  assert.deepEqual(parseRocmSmi("not json"), []);
});

Deno.test("metrics - parses system_profiler display names and vendors", () => {
  const text = JSON.stringify({
    SPDisplaysDataType: [
      {
        _name: "kHW_AppleM1ProItem",
        sppci_model: "Apple M1 Pro",
        spdisplays_vendor: "sppci_vendor_Apple",
        sppci_cores: "16",
      },
      { _name: "AMD Radeon Pro 5500M", spdisplays_vendor: "sppci_vendor_amd" },
      { _name: "Intel UHD Graphics 630", spdisplays_vendor: "Intel" },
    ],
  });
  assert.deepEqual(parseSystemProfiler(text), [
    { name: "Apple M1 Pro", vendor: "apple" },
    { name: "AMD Radeon Pro 5500M", vendor: "amd" },
    { name: "Intel UHD Graphics 630", vendor: "other" },
  ]);
  assert.deepEqual(parseSystemProfiler("{}"), []);
});

Deno.test("metrics - a missing GPU tool is skipped and never run again", async () => {
  const calls: string[] = [];
  const run: CommandRunner = (command) => {
    calls.push(command);
    if (command === "nvidia-smi") {
      return Promise.resolve({ code: 0, stdout: "Tesla T4, 5, 100, 15360, 40\n" });
    }
    return Promise.reject(new Deno.errors.NotFound(`${command} not found`));
  };
  const sampler = createGpuSampler({ run, os: "linux" });
  const first = await sampler.sample();
  const second = await sampler.sample();
  assert.equal(first.length, 1);
  assert.deepEqual(second, first);
  assert.deepEqual(calls, ["nvidia-smi", "rocm-smi", "nvidia-smi"]);
  assert.deepEqual([...sampler.missing], ["rocm-smi"]);
});

Deno.test("metrics - a failing GPU tool yields no GPUs but is tried again", async () => {
  let calls = 0;
  const run: CommandRunner = () => {
    calls++;
    return Promise.resolve({ code: 9, stdout: "NVIDIA-SMI has failed" });
  };
  const sampler = createGpuSampler({ run, os: "windows" });
  assert.deepEqual(await sampler.sample(), []);
  assert.deepEqual(await sampler.sample(), []);
  assert.equal(calls, 2);
  assert.equal(sampler.missing.size, 0);
});

Deno.test("metrics - macOS GPU names are read once", async () => {
  let calls = 0;
  const run: CommandRunner = () => {
    calls++;
    return Promise.resolve({
      code: 0,
      stdout: JSON.stringify({ SPDisplaysDataType: [{ sppci_model: "Apple M2" }] }),
    });
  };
  const sampler = createGpuSampler({ run, os: "darwin" });
  assert.deepEqual(await sampler.sample(), [{ name: "Apple M2", vendor: "apple" }]);
  assert.deepEqual(await sampler.sample(), [{ name: "Apple M2", vendor: "apple" }]);
  assert.equal(calls, 1);
  assert.deepEqual(gpuToolsFor("darwin").map((t) => t.command), ["system_profiler"]);
  assert.deepEqual(gpuToolsFor("linux").map((t) => t.command), ["nvidia-smi", "rocm-smi"]);
});

Deno.test("metrics - the real machine samples within the wire limits", async () => {
  const sampler = createMetricsSampler();
  const m = await sampler.sample();
  assert.ok(m.cpu_usage >= 0 && m.cpu_usage <= 100);
  assert.ok(m.memory_usage >= 0 && m.memory_usage <= 100);
  assert.ok(m.memory_total > 0);
  assert.ok(Array.isArray(m.gpus));
});

Deno.test("metrics - parses df -Pk output into free and total bytes", () => {
  const text = "Filesystem     1024-blocks     Used Available Capacity Mounted on\n" +
    "/dev/vda         264212084 23875988  82514924      23% /\n";
  assert.deepEqual(parseDf(text), { total: 264212084 * 1024, free: 82514924 * 1024 });
  // macOS names a volume with spaces; a pseudo file system shows no capacity.
  const mac = "Filesystem 1024-blocks Used Available Capacity Mounted on\n" +
    "map auto home 0 0 0 - /System/Volumes/Data/home\n" +
    "/dev/disk3s5 Data 971350180 612345678 340000000 65% /System/Volumes/Data\n";
  assert.deepEqual(parseDf(mac), { total: 971350180 * 1024, free: 340000000 * 1024 });
  assert.equal(parseDf("df: /x: No such file or directory\n"), null);
  assert.equal(parseDf(""), null);
});

Deno.test("metrics - the models folder is OLLAMA_MODELS, else .ollama/models at home", () => {
  const env = (vars: Record<string, string>) => (n: string) => vars[n];
  assert.equal(ollamaModelsDir(env({ OLLAMA_MODELS: "/data/models", HOME: "/h" })), "/data/models");
  assert.equal(ollamaModelsDir(env({ HOME: "/home/ada/" }), "linux"), "/home/ada/.ollama/models");
  assert.equal(
    ollamaModelsDir(env({ USERPROFILE: "C:\\Users\\ada" }), "windows"),
    "C:\\Users\\ada\\.ollama\\models",
  );
});

Deno.test("metrics - a models folder not made yet is measured at its nearest existing parent", () => {
  const there = new Set(["/home/ada", "/"]);
  assert.equal(existingAncestor("/home/ada/.ollama/models", (p) => there.has(p)), "/home/ada");
  assert.equal(existingAncestor("/nowhere/at/all", (p) => there.has(p)), "/");
  assert.equal(existingAncestor("C:\\Users\\x\\.ollama", () => false), "C:\\");
  assert.equal(existingAncestor("models", () => false), "models");
  // On this machine, for real.
  assert.equal(existingAncestor(Deno.cwd() + "/no/such/folder"), Deno.cwd());
});

Deno.test("metrics - the disk sampler runs df at most every interval and stops when df is missing", async () => {
  let clock = 0;
  const calls: string[][] = [];
  const out = "Filesystem 1024-blocks Used Available Capacity Mounted on\n" +
    "/dev/sda1 1000 400 600 40% /\n";
  const disk = createDiskSampler({
    dir: "/",
    os: "linux",
    now: () => clock,
    everyMs: 30_000,
    run: (command, args) => {
      calls.push([command, ...args]);
      return Promise.resolve({ code: 0, stdout: out });
    },
  });
  assert.deepEqual(await disk.sample(), { free: 600 * 1024, total: 1000 * 1024 });
  clock = 29_999;
  await disk.sample();
  assert.equal(calls.length, 1);
  clock = 30_000;
  await disk.sample();
  assert.deepEqual(calls, [["df", "-Pk", "/"], ["df", "-Pk", "/"]]);

  let tries = 0;
  const none = createDiskSampler({
    dir: "/",
    os: "linux",
    everyMs: 0,
    run: () => {
      tries++;
      return Promise.reject(new Deno.errors.NotFound("df"));
    },
  });
  assert.equal(await none.sample(), undefined);
  assert.equal(await none.sample(), undefined);
  assert.equal(tries, 1);
});

Deno.test("metrics - the disk of a real folder has free space, reported with the metrics", async () => {
  const disk = createDiskSampler({ dir: Deno.cwd() });
  const real = await disk.sample();
  assert.ok(real && real.total > 0 && real.free > 0 && real.free <= real.total);
  const sampler = createMetricsSampler({
    gpu: { missing: new Set(), sample: () => Promise.resolve([]) },
    disk: { sample: () => Promise.resolve({ free: 7, total: 9 }) },
  });
  const m = await sampler.sample();
  assert.deepEqual([m.disk_free, m.disk_total], [7, 9]);
  const blind = await createMetricsSampler({
    gpu: { missing: new Set(), sample: () => Promise.resolve([]) },
    disk: { sample: () => Promise.resolve(undefined) },
  }).sample();
  assert.ok(!("disk_free" in blind));
});
