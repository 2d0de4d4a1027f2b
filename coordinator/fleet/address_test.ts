import assert from "node:assert/strict";
import { addressProblem, ollamaBaseUrl } from "./address.ts";

Deno.test("address - plain IPs and host names are accepted", () => {
  for (
    const ok of [
      "127.0.0.1",
      "10.1.2.3",
      "192.168.1.20",
      "::1",
      "fd00::5",
      "gpu-01",
      "gpu-01.lan",
      "studio.local",
    ]
  ) {
    assert.equal(addressProblem(ok), null, ok);
  }
  assert.equal(ollamaBaseUrl("fd00::5", 11434), "http://[fd00::5]:11434");
});

Deno.test("address - metadata, link-local and disguised forms of them are refused", () => {
  for (
    const bad of [
      "169.254.169.254",
      "2852039166",
      "0xa9fea9fe",
      "169.254.43518",
      "0251.0376.0251.0376",
      "::ffff:169.254.169.254",
      "::ffff:a9fe:a9fe",
      "fe80::1",
      "metadata.google.internal",
      "0.0.0.0",
      "::",
      "224.0.0.1",
      "http://evil/",
      "evil/path",
      "user@host",
    ]
  ) {
    assert.notEqual(addressProblem(bad), null, bad);
  }
});
