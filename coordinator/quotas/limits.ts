/**
 * API key limits as the management API takes them: every field optional, `null` lifts a limit,
 * and a change merges into the key's current limits.
 */
import { z } from "zod";
import { type KeyLimits, NO_LIMITS } from "../store/mod.ts";

const perMinute = z.number().int().min(1).max(1_000_000_000).nullable();

/** `limits` in `POST /api/keys` and `PATCH /api/keys/:id`. */
export const LimitsInput = z.object({
  requests_per_minute: perMinute.optional(),
  tokens_per_minute: perMinute.optional(),
  concurrent: z.number().int().min(1).max(100_000).nullable().optional(),
  weight: z.number().min(0.01).max(100).optional(),
}).strict();
export type LimitsInput = z.infer<typeof LimitsInput>;

/** `current` with the fields `change` names replaced. */
export function mergeLimits(current: KeyLimits = NO_LIMITS, change: LimitsInput = {}): KeyLimits {
  return {
    requests_per_minute: change.requests_per_minute !== undefined
      ? change.requests_per_minute
      : current.requests_per_minute,
    tokens_per_minute: change.tokens_per_minute !== undefined
      ? change.tokens_per_minute
      : current.tokens_per_minute,
    concurrent: change.concurrent !== undefined ? change.concurrent : current.concurrent,
    weight: change.weight ?? current.weight,
  };
}
