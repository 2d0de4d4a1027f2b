import assert from "node:assert/strict";
import { affinityKey, routingInfo } from "./parse.ts";

const bytes = (v: unknown) =>
  new TextEncoder().encode(typeof v === "string" ? v : JSON.stringify(v));
const native = { flavor: "ollama" as const, streams: true };

Deno.test("parse - model, stream default per API, and clear errors", () => {
  assert.deepEqual(routingInfo(bytes({ model: " llama3.2 " }), native), {
    model: "llama3.2",
    field: "model",
    stream: true,
    affinity: undefined,
  });
  assert.equal(
    (routingInfo(bytes({ model: "m", stream: false }), native) as { stream: boolean }).stream,
    false,
  );
  const v1 = { flavor: "openai" as const, streams: true };
  assert.equal((routingInfo(bytes({ model: "m" }), v1) as { stream: boolean }).stream, false);
  assert.deepEqual(
    routingInfo(bytes({ name: "m", model: null }), native),
    { model: "m", field: "name", stream: true, affinity: undefined },
  );
  // Anthropic's /v1/messages streams only when asked, like OpenAI's routes.
  const anthropic = { flavor: "anthropic" as const, streams: true };
  assert.equal(
    (routingInfo(bytes({ model: "m" }), anthropic) as { stream: boolean }).stream,
    false,
  );
  assert.equal(
    (routingInfo(bytes({ model: "m", stream: true }), anthropic) as { stream: boolean }).stream,
    true,
  );
  assert.equal(routingInfo(bytes({ name: "m" }), v1), "model is required");
  assert.equal(routingInfo(bytes(""), native), "missing request body");
  assert.equal(routingInfo(bytes("{"), native), "invalid JSON in request body");
  assert.equal(routingInfo(bytes([1]), native), "request body must be a JSON object");
  assert.equal(routingInfo(bytes({ model: 5 }), native), "model must be a string");
  assert.equal(
    routingInfo(bytes({ model: "m", stream: "yes" }), native),
    "stream must be a boolean",
  );
  assert.equal(routingInfo(bytes({ model: "x".repeat(600) }), native), "model name is too long");
});

Deno.test("parse - every turn of a conversation has the same affinity key", () => {
  const system = { role: "system", content: "Be brief." };
  const first = { role: "user", content: "Hello" };
  const turn1 = [system, first];
  const turn2 = [system, first, { role: "assistant", content: "Hi" }, {
    role: "user",
    content: "More",
  }];
  assert.ok(affinityKey("m", turn1));
  assert.equal(affinityKey("m", turn1), affinityKey("m", turn2));
  assert.notEqual(affinityKey("m", turn1), affinityKey("other", turn1));
  assert.notEqual(
    affinityKey("m", turn1),
    affinityKey("m", [system, { role: "user", content: "Hellp" }]),
  );
  assert.equal(affinityKey("m", [system]), undefined);
  assert.equal(affinityKey("m", "not a list"), undefined);
});

Deno.test("routingInfo - a routed member spelled another way is refused, as Ollama would read it", () => {
  for (const flavor of ["ollama", "openai", "anthropic"] as const) {
    const options = { flavor, streams: true };
    for (
      const body of [
        { model: "a", MODEL: "b" },
        { Model: "b" },
        { model: "a", stream: false, Stream: true },
        { model: "a", "\u017ftream": true },
      ]
    ) {
      const result = routingInfo(bytes(body), options);
      assert.equal(typeof result, "string", JSON.stringify(body));
      assert.match(result as string, /would be read as "(model|stream)": write it in lower case/);
    }
    // Other members are not looked at; those spelled as Ollama spells them pass.
    const ok = routingInfo(bytes({ model: "a", stream: true, Options: {}, MESSAGES: [] }), options);
    assert.equal((ok as { model: string }).model, "a");
  }
  assert.match(
    routingInfo(bytes({ NAME: "b" }), { flavor: "ollama", streams: true }) as string,
    /"NAME" would be read as "name"/,
  );
});
