import assert from "node:assert/strict";
import { test } from "node:test";
import { backoffCap, backoffDelay, backoffExhausted, DEFAULT_BACKOFF } from "../../src/backoff.js";

test("caps grow exponentially and saturate", () => {
  const b = DEFAULT_BACKOFF;
  assert.equal(backoffCap(b, 0), 100);
  assert.equal(backoffCap(b, 1), 200);
  assert.equal(backoffCap(b, 6), 6400);
  assert.equal(backoffCap(b, 7), 10_000);
  assert.equal(backoffCap(b, 100_000), 10_000);
  assert.equal(backoffCap({ ...b, multiplier: NaN }, 50), 100);
  assert.equal(backoffCap({ ...b, initialMs: 20_000 }, 3), 20_000);
});

test("full jitter spans zero to the cap; equal and none stay in their ranges", () => {
  let seed = 7;
  const rnd = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
  const cap = backoffCap(DEFAULT_BACKOFF, 3);
  const ds = Array.from({ length: 2000 }, () => backoffDelay(DEFAULT_BACKOFF, 3, rnd));
  assert.ok(ds.every((d) => d >= 0 && d <= cap));
  assert.ok(ds.some((d) => d < cap / 10) && ds.some((d) => d > (cap * 9) / 10));
  const mean = ds.reduce((a, b) => a + b, 0) / ds.length;
  assert.ok(mean > cap * 0.4 && mean < cap * 0.6, `mean ${mean}`);
  for (let i = 0; i < 200; i++) {
    const d = backoffDelay({ ...DEFAULT_BACKOFF, jitter: "equal" }, 2, rnd);
    assert.ok(d >= 200 && d <= 400);
  }
  assert.equal(backoffDelay({ ...DEFAULT_BACKOFF, jitter: "none" }, 2), 400);
});

test("attempts bound", () => {
  assert.ok(!backoffExhausted({ ...DEFAULT_BACKOFF, maxAttempts: 3 }, 2));
  assert.ok(backoffExhausted({ ...DEFAULT_BACKOFF, maxAttempts: 3 }, 3));
  assert.ok(!backoffExhausted(DEFAULT_BACKOFF, Number.MAX_SAFE_INTEGER));
});
