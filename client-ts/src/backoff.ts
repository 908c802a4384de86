/** Reconnection policy: exponential backoff with jitter, optionally bounded in attempts. */

/** How much randomness is applied to each delay. */
export type Jitter =
  /** Exactly the exponential delay. */
  | "none"
  /** Uniform in `[0, delay]`: clients of a restarted node spread out (default). */
  | "full"
  /** Uniform in `[delay / 2, delay]`. */
  | "equal";

/**
 * The cap of retry `n` (0-based) is `min(maxMs, initialMs * multiplier^n)`; the jitter picks
 * the delay below it. Default: 100 ms doubling to 10 s, full jitter, retrying forever.
 */
export interface Backoff {
  initialMs: number;
  maxMs: number;
  multiplier: number;
  jitter: Jitter;
  /** Give up after this many consecutive failed attempts (`undefined`: never). */
  maxAttempts?: number;
}

export const DEFAULT_BACKOFF: Readonly<Backoff> = Object.freeze({
  initialMs: 100,
  maxMs: 10_000,
  multiplier: 2,
  jitter: "full",
});

/** The upper bound of the delay before retry `attempt` (0-based), before jitter. */
export function backoffCap(b: Backoff, attempt: number): number {
  const mult = Number.isFinite(b.multiplier) && b.multiplier >= 1 ? b.multiplier : 1;
  const initial = Math.max(0, b.initialMs);
  const max = Math.max(b.maxMs, initial);
  const ms = initial * Math.pow(mult, Math.max(0, attempt));
  return Number.isFinite(ms) ? Math.min(ms, max) : max;
}

/** The delay (ms) before retry `attempt` (0-based); `random` returns values in `[0, 1)`. */
export function backoffDelay(b: Backoff, attempt: number, random: () => number = Math.random): number {
  const cap = backoffCap(b, attempt);
  switch (b.jitter) {
    case "none":
      return cap;
    case "equal":
      return cap / 2 + (cap / 2) * random();
    default:
      return cap * random();
  }
}

/** Whether `failures` consecutive failures exhaust the policy. */
export function backoffExhausted(b: Backoff, failures: number): boolean {
  return b.maxAttempts !== undefined && failures >= b.maxAttempts;
}
