import assert from "node:assert/strict";

const ROOT = new URL("../", import.meta.url);

Deno.test({
  name: "demo - Ctrl-C stops it quietly: no warnings for the requests that were running",
  ignore: Deno.build.os === "windows",
  fn: async () => {
    // Its own process group, as a shell gives a foreground job: Ctrl-C signals the whole group.
    const demo = new Deno.Command(Deno.execPath(), {
      args: ["run", "--allow-all", "scripts/demo.ts", "--port", "0", "--rps", "20"],
      cwd: ROOT,
      detached: true,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    let output = "";
    const append = () => new WritableStream<string>({ write: (s) => void (output += s) });
    const read = Promise.all([
      demo.stdout.pipeThrough(new TextDecoderStream()).pipeTo(append()),
      demo.stderr.pipeThrough(new TextDecoderStream()).pipeTo(append()),
    ]);
    let exited = false;
    const status = demo.status.finally(() => exited = true);
    try {
      const deadline = Date.now() + 90_000;
      while (!output.includes("Press Ctrl-C") && !exited && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 100));
      }
      assert.ok(output.includes("Press Ctrl-C"), output);
      // A few seconds of traffic: at 20 requests a second, several are running at any moment.
      await new Promise((r) => setTimeout(r, 3000));
      Deno.kill(-demo.pid, "SIGINT");
      const { code } = await status;
      await read;
      assert.equal(code, 0, output);
      assert.ok(output.includes("Stopping the demo"), output);
      const noisy = output.split("\n").filter((l) => / (WARN|ERROR) /.test(l));
      assert.deepEqual(noisy, []);
    } finally {
      if (!exited) {
        try {
          Deno.kill(-demo.pid, "SIGKILL");
        } catch { /* already gone */ }
      }
      await status;
    }
  },
});
