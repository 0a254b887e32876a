import { native } from '../native.js';

/**
 * performance.now() without its garbage. Node 20's performance.now() returns a new heap number
 * on every call, and the polling strategies read the clock several times per request: at depth
 * 1 those numbers were most of what the library allocated per request besides the caller's
 * Promise. This reads the same monotonic clock through a native call that writes into a typed
 * array, which optimised code reads as a plain double (and a third faster here: ~37 against
 * ~60 ns a read).
 */
const cell = new Float64Array(1);
const tick = native.clockCreate(cell);

/**
 * The native clock's reading minus performance.now()'s, so readings compare with it: taken
 * between the two closest of a few pairs of performance.now() (the first call can take
 * milliseconds, which once put the scales 2.4 ms apart).
 */
const offsetMs = ((): number => {
  let closest = Infinity;
  let offset = 0;
  for (let i = 0; i < 8; i++) {
    const before = performance.now();
    tick();
    const after = performance.now();
    if (after - before < closest) {
      closest = after - before;
      offset = cell[0]! - (before + after) / 2;
    }
  }
  return offset;
})();

/** The time in ms on performance.now()'s scale (within a microsecond of it). */
export function nowMs(): number {
  tick();
  return cell[0]! - offsetMs;
}

/** The thread's latest nowMs() reading, without reading the clock again. */
export function latestMs(): number {
  return cell[0]! - offsetMs;
}
