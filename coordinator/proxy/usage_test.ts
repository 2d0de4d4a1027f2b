import assert from "node:assert/strict";
import { readUsage } from "./usage.ts";

const bytes = (s: string) => new TextEncoder().encode(s);

Deno.test("usage - Ollama's final object gives prompt, eval count and duration", () => {
  const final =
    '{"model":"m","done":true,"prompt_eval_count":12,"eval_count":34,"eval_duration":1700000000}\n';
  assert.deepEqual(readUsage([bytes('{"response":"a","done":false}\n'), bytes(final)]), {
    promptTokens: 12,
    evalCount: 34,
    evalDurationNs: 1700000000,
    completionTokens: 34,
  });
});

Deno.test("usage - OpenAI's usage object, with spaces after the colons", () => {
  const body = '{"usage": {"prompt_tokens": 5, "completion_tokens": 9, "total_tokens": 14}}';
  assert.deepEqual(readUsage([bytes(body)]), { promptTokens: 5, completionTokens: 9 });
});

Deno.test("usage - the last figures win, split anywhere between the two chunks", () => {
  const text = '{"eval_count":1}\n{"prompt_eval_count":3,"eval_count":2,"eval_duration":10}\n';
  for (let cut = 0; cut <= text.length; cut++) {
    const usage = readUsage([bytes(text.slice(0, cut)), bytes(text.slice(cut))]);
    assert.equal(usage.evalCount, 2, `cut at ${cut}`);
    assert.equal(usage.promptTokens, 3, `cut at ${cut}`);
  }
});

Deno.test("usage - nothing to read gives nothing; only the last 8 KiB are read", () => {
  assert.deepEqual(readUsage([]), {});
  assert.deepEqual(readUsage([undefined, bytes('{"response":"hi"}')]), {});
  assert.deepEqual(readUsage([bytes('{"eval_count":"x"}')]), {});
  const early = '{"eval_count":7}' + " ".repeat(9000);
  assert.deepEqual(readUsage([bytes(early)]), {});
});

Deno.test("usage - Anthropic's message_delta and final message give input and output tokens", () => {
  const tail = 'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":' +
    '"end_turn"},"usage":{"input_tokens":11,"output_tokens":22}}\n\n' +
    'event: message_stop\ndata: {"type":"message_stop"}\n\n';
  assert.deepEqual(readUsage([bytes(tail)]), { promptTokens: 11, completionTokens: 22 });
  const whole = '{"id":"msg_1","type":"message","content":[{"type":"text","text":"hi"}],' +
    '"usage":{"input_tokens":4,"output_tokens":1}}';
  assert.deepEqual(readUsage([bytes(whole)]), { promptTokens: 4, completionTokens: 1 });
});
