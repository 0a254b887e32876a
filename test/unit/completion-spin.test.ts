import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  lastSpin,
  SPIN_END,
  SPIN_HELD,
  SPIN_OTHERS,
  spinForUsed,
} from '../../src/completion/spin.js';
import type { DeviceQueue } from '../../src/devices/device.js';
import { nowMs } from '../../src/util/clock.js';

/** A queue whose ring never has used elements: the spin runs its whole length. */
const emptyQueue = { vq: { hasUsed: () => false } } as unknown as DeviceQueue;

test("spinForUsed: what a spin held is its length from the caller's reading, less others' time", () => {
  const before = nowMs();
  assert.equal(spinForUsed([emptyQueue], 300_000, undefined, true), false);
  const held = lastSpin[SPIN_HELD]!;
  const others = lastSpin[SPIN_OTHERS]!;
  // It ran its whole length, from the caller's reading to its last clock read.
  assert.ok(lastSpin[SPIN_END]! - before >= 0.3, `ended ${lastSpin[SPIN_END]! - before} ms after`);
  assert.ok(Math.abs(held + others - (lastSpin[SPIN_END]! - before)) < 1e-9, `held ${held} ms`);
  assert.ok(held > 0, `held ${held} ms, others ${others} ms`);
});

test("spinForUsed: time since the caller's reading that the spin did not hold counts as others'", () => {
  const start = nowMs();
  // Not through nowMs: the thread's latest reading stays `start`, which the spin starts from.
  while (performance.now() < start + 0.5);
  spinForUsed([emptyQueue], 200_000, undefined, true);
  // The spin's first clock read finds a gap over 0.1 ms since its start: someone else's.
  assert.ok(lastSpin[SPIN_OTHERS]! >= 0.45, `others ${lastSpin[SPIN_OTHERS]} ms`);
  const held = lastSpin[SPIN_HELD]!;
  assert.ok(held >= 0 && held < 0.1, `held ${held} ms`);
});
