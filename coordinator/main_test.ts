import assert from "node:assert/strict";
import { agentCount, nextSteps, signalCounter } from "./main.ts";
import { FakeClock } from "./testing/app.ts";

Deno.test("main - a stop signal repeated within a second counts once; a later one stops now", () => {
  const clock = new FakeClock();
  const next = signalCounter({ now: clock.now });
  assert.equal(next(), "first");
  clock.advance(10);
  assert.equal(next(), "repeat");
  clock.advance(980);
  assert.equal(next(), "repeat");
  clock.advance(10);
  assert.equal(next(), "second");
});

Deno.test("main - counts agents in words, one agent singular", () => {
  assert.equal(agentCount(0), "0 agents");
  assert.equal(agentCount(1), "1 agent");
  assert.equal(agentCount(2), "2 agents");
});

Deno.test("main - a start with no agent says where it looked for Ollama and what to do next", () => {
  const none = {
    found: "none" as const,
    url: "http://127.0.0.1:11434",
    stop() {},
    done: Promise.resolve(),
  };
  const first = nextSteps({ agents: 0, localOllama: none, port: 8080, firstStart: true })!;
  assert.equal(
    first.message,
    "No local Ollama answered at http://127.0.0.1:11434 (LOCAL_OLLAMA_URL), and no agents are known yet",
  );
  assert.match(first.steps[0], /start an agent: the command printed above/);
  assert.match(first.steps[1], /`deno task demo`/);
  assert.match(first.steps[2], /`deno task simulator --port 11434`/);
  // Later starts no longer know the token: the command is spelled out.
  const later = nextSteps({ agents: 0, localOllama: null, port: 8080, firstStart: false })!;
  assert.equal(later.message, "No agents are known yet");
  assert.match(
    later.steps[0],
    /COORDINATOR_URL=http:\/\/.+:8080 AGENT_TOKEN=<your agent token> deno task agent/,
  );
  // With agents, nothing to say.
  assert.equal(nextSteps({ agents: 1, localOllama: none, port: 8080, firstStart: true }), null);
});
