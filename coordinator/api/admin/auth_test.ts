import assert from "node:assert/strict";
import { TEST_ADMIN_PASSWORD } from "../../config.ts";
import { testApp } from "../../testing/app.ts";
import { safeNext } from "./auth.tsx";

Deno.test("auth - only same-site paths survive as the place to go after signing in", () => {
  const kept: [string, string][] = [
    ["/dashboard/agents", "/dashboard/agents"],
    ["/dashboard/requests?route=%2Fapi%2Fchat#top", "/dashboard/requests?route=%2Fapi%2Fchat#top"],
    ["/dashboard/../api/agents", "/api/agents"],
    ["/dashboard/é", "/dashboard/%C3%A9"],
  ];
  for (const [next, expected] of kept) assert.equal(safeNext(next), expected, next);
  for (
    const next of [
      undefined,
      "",
      "dashboard",
      "https://evil.example/",
      "//evil.example",
      "/\\evil.example",
      "/\t/evil.example",
      "/\n/evil.example",
      "/dashboard\r\nSet-Cookie: x=1",
      "/\u0000",
      "/%0d%0a/x\\y",
    ]
  ) {
    assert.equal(safeNext(next), "/dashboard", JSON.stringify(next));
  }
});

Deno.test("auth - a sign-in with a hostile next redirects to the dashboard, never elsewhere", async () => {
  const t = await testApp();
  const signIn = (next: string) =>
    t.request("/login", {
      method: "POST",
      body: new URLSearchParams({ password: TEST_ADMIN_PASSWORD, next }),
    });
  for (const next of ["/\t/evil.example", "/dashboard\r\nSet-Cookie: x=1", "/\\evil.example"]) {
    const res = await signIn(next);
    assert.equal(res.status, 303, JSON.stringify(next));
    assert.equal(res.headers.get("location"), "/dashboard", JSON.stringify(next));
  }
  assert.equal((await signIn("/dashboard/models")).headers.get("location"), "/dashboard/models");
  // The login page carries the cleaned value in its form.
  const page = await (await t.request("/login?next=%2F%09%2Fevil.example")).text();
  assert.match(page, /name="next" value="\/dashboard"/);
  await t.close();
});

Deno.test("auth - a sign-in form from this site's own origin is accepted behind a TLS proxy", async () => {
  const t = await testApp();
  const signIn = (origin: string, host: string) =>
    t.request("http://gpu-box:8080/login", {
      method: "POST",
      body: new URLSearchParams({ password: TEST_ADMIN_PASSWORD }),
      headers: { origin, host },
    });
  // The proxy speaks https to the browser and http to the coordinator: the host decides.
  assert.equal((await signIn("https://gpu-box.local", "gpu-box.local")).status, 303);
  assert.equal((await signIn("http://gpu-box:8080", "gpu-box:8080")).status, 303);
  assert.equal((await signIn("https://evil.example", "gpu-box:8080")).status, 403);
  await t.close();
});
