import assert from "node:assert/strict";
import { hostname } from "node:os";
import { addressProblem, mayBeThisMachine, ollamaBaseUrl, sameOllama } from "./address.ts";

Deno.test("address - plain IPs and host names are accepted", () => {
  for (
    const ok of [
      "127.0.0.1",
      "10.1.2.3",
      "192.168.1.20",
      "100.101.102.103", // Tailscale's range is not a metadata range
      "::1",
      "fd00::5",
      "fd00:ec2::1",
      "2001:db8::7",
      "::ffff:10.0.0.1",
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

Deno.test("address - every spelling of a metadata address is refused, by canonical form", () => {
  for (
    const bad of [
      // IPv4-mapped, fully written or partly compressed.
      "0:0:0:0:0:ffff:a9fe:a9fe",
      "0:0:0:0:0:FFFF:169.254.169.254",
      "0::ffff:169.254.169.254",
      "[0:0::ffff:a9fe:a9fe]",
      // IPv4-translated (RFC 6145) and IPv4-compatible.
      "::ffff:0:a9fe:a9fe",
      "::a9fe:a9fe",
      "::169.254.169.254",
      // NAT64 (RFC 6052, RFC 8215), 6to4 and Teredo carrying the metadata address.
      "64:ff9b::a9fe:a9fe",
      "64:ff9b::169.254.169.254",
      "64:ff9b:1:a9fe:a9:fe00::",
      "2002:a9fe:a9fe::1",
      "2001:0:a9fe:a9fe::1",
      "2001:0:4136:e378:8000:63bf:5601:5601",
      // AWS's IPv6 metadata address, however written; GCP's and Scaleway's.
      "fd00:ec2::254",
      "fd00:ec2:0::254",
      "fd00:0ec2:0000:0000:0000:0000:0000:0254",
      "FD00:EC2::254",
      "fd20:ce::254",
      "fd00:42::42",
      // Alibaba, and Oracle's older address; those names and forms of them.
      "100.100.100.200",
      "::ffff:100.100.100.200",
      "192.0.0.192",
      // Other clouds' metadata names.
      "metadata",
      "METADATA.google.internal",
      "metadata.goog",
      "instance-data",
      "instance-data.ec2.internal",
      "metadata.tencentyun.com",
      "metadata.packet.net",
      "metadata.platformequinix.com",
      // A zone id is no address a URL can carry.
      "fe80::1%eth0",
      "fd00::1%25eth0",
    ]
  ) {
    assert.notEqual(addressProblem(bad), null, bad);
  }
});

Deno.test("address - the base URL is the canonical form that was checked", () => {
  assert.equal(ollamaBaseUrl("0:0:0:0:0:0:0:1", 1), "http://[::1]:1");
  assert.equal(ollamaBaseUrl("[FD00:0:0::5]", 2), "http://[fd00::5]:2");
  assert.equal(ollamaBaseUrl("::ffff:10.0.0.1", 3), "http://[::ffff:a00:1]:3");
  assert.equal(ollamaBaseUrl("gpu-01", 4), "http://gpu-01:4");
});

Deno.test("address - loopback, localhost and this host's name may be this machine", () => {
  for (const local of ["127.0.0.1", "127.0.0.2", "::1", "::ffff:127.0.0.1", "localhost"]) {
    assert.ok(mayBeThisMachine(local), local);
  }
  assert.ok(mayBeThisMachine(hostname()));
  const own = Deno.networkInterfaces().find((i) =>
    i.family === "IPv4" && i.address !== "127.0.0.1"
  );
  if (own) assert.ok(mayBeThisMachine(own.address), own.address);
  assert.ok(!mayBeThisMachine("192.0.2.10"));
  assert.ok(!mayBeThisMachine("gpu-far-away.example"));
});

Deno.test("address - one Ollama: same port, and the same address or both this machine", () => {
  const at = (address: string, port = 11434) => ({ address, port });
  assert.ok(sameOllama(at("127.0.0.1"), at("localhost")));
  assert.ok(sameOllama(at("127.0.0.1"), at(hostname())));
  assert.ok(sameOllama(at("10.1.2.3"), at("10.1.2.3")));
  assert.ok(sameOllama(at("fd00::5"), at("[FD00:0:0::5]")));
  assert.ok(!sameOllama(at("127.0.0.1"), at("127.0.0.1", 11435)));
  assert.ok(!sameOllama(at("127.0.0.1"), at("192.0.2.10")));
  assert.ok(!sameOllama(at("192.0.2.10"), at("192.0.2.11")));
});
