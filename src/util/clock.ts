import { native } from '../native.js';

/**
 * performance.now() without a heap number per read. Node 20's performance.now() returns a new
 * one on every call, and the polling strategies read the clock several times per request: at
 * depth 1 those numbers were most of what the library allocated per request besides the
 * caller's Promise. This reads the same monotonic clock through a native call that writes into
 * a typed array, which optimised code reads as a plain double (and a third faster here: ~37
 * against ~60 ns a read). The readings below are doubles too: where V8 inlines nowMs() they stay
 * unboxed, and callers avoid passing them to calls it may not inline (see spanNs).
 */
const { tick, cell } = native.clockCreate();

/**
 * The native clock's reading minus performance.now()'s, so readings compare with it: taken
 * between the two closest of a few pairs of performance.now() (the first call can take
 * milliseconds, which once put the scales 2.4 ms apart), so off by at most half that pair's gap.
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

/**
 * Reads the clock for what follows to use through latestMs() (callees that take no time
 * argument: a time passed to a call V8 does not inline is a new heap number).
 */
export function readClock(): void {
  tick();
}

/**
 * The raw clock, for code that must not allocate whatever V8 inlines: `tickClock()`, then
 * `clockCell[0]! - CLOCK_OFFSET_MS` read in place is nowMs(); the read alone is latestMs(). A
 * call to nowMs() on a path that was cold when its caller was optimised stays a real call, and
 * the time it returns a new heap number at every read once the path runs hot (the spins'
 * yielding loop: 120 B a request at depth 1 on a CPU shared with the backend, measured).
 */
export const tickClock = tick;
export const clockCell = cell;
export const CLOCK_OFFSET_MS = offsetMs;

/** The thread's latest reading (nowMs or readClock), without reading the clock again. */
export function latestMs(): number {
  return cell[0]! - offsetMs;
}
