import { native } from '../native.js';
import { CLOCK_OFFSET_MS, clockCell, tickClock } from '../util/clock.js';
import type { DeviceQueue } from '../devices/device.js';
import type { SpinYield } from './strategy.js';

/** Clock readings (nowMs) are in ms; spans handed to policies and native waits are in ns. */
export const msToNs = 1e6;

/**
 * How a span (ms) is handed to a call: written to `spanMs[0]`, then read back as whole ns by
 * spanNs(), at most 2^31 - 1 (2.1 s). A small integer, which V8 passes to a function it does not
 * inline as is, where a fractional number would be a new heap number; and the span reaches the
 * conversion as a typed array's element (written and read in place), not as an argument, which
 * would be boxed just the same wherever V8 did not inline the conversion itself. It did not, at
 * times, where a large caller had used up V8's inlining budget (a helper taking the span cost
 * sleep-poll 16 B per depth-1 read; BENCHMARKS.md). One per thread, read right after it is set.
 */
export const spanMs = new Float64Array(1);

/** `spanMs[0]` (ms) in whole ns (see `spanMs`). */
export function spanNs(): number {
  const ms = spanMs[0]!;
  // Rounded (+0.5, then truncated by |0), so ns -> ms -> ns comes back exact. NaN and negative
  // spans (none should come) give 0.
  if (!(ms > 0)) return 0;
  return ms < WHOLE_NS_MAX_MS ? (ms * msToNs + 0.5) | 0 : 2 ** 31 - 1;
}
const WHOLE_NS_MAX_MS = (2 ** 31 - 1) / msToNs;

/** True if any queue has used elements not yet drained. */
export function anyUsed(queues: readonly DeviceQueue[]): boolean {
  for (let i = 0; i < queues.length; i++) if (queues[i]!.vq.hasUsed()) return true;
  return false;
}

/**
 * The latest spin's times, as elements of a typed array: a double there is written and read in
 * place, where one returned by a call V8 does not inline (a getter included), carried from one
 * loop iteration to the next, or kept in a module variable is a new heap number each time (the
 * spins' clock readings were 60-90 B of garbage per request at depth 1).
 *
 * - [SPIN_START]: the clock reading the spin started from.
 * - [SPIN_END]: the spin's last clock read.
 * - [SPIN_OTHERS]: how much of the spin went to others: gaps between its clock reads longer than
 *   OTHERS_GAP_MS, and yields that came back late. Told by timing alone, not checked.
 * - [SPIN_HELD]: the rest, what the spin itself held the thread for (END - START - OTHERS).
 */
export const lastSpin = new Float64Array(4);
export const SPIN_END = 0;
export const SPIN_OTHERS = 1;
export const SPIN_HELD = 2;
const SPIN_START = 3;

/**
 * [HELD_UNTIL]: the clock reading until which spins on this thread do not yield; [LAST_LATE_BACK]:
 * when the latest late yield came back (for all devices: they share the thread and its CPU).
 */
const yieldTimes = new Float64Array(2);
const HELD_UNTIL = 0;
const LAST_LATE_BACK = 1;
yieldTimes[LAST_LATE_BACK] = -Infinity;

/**
 * The late yields in a row. Counted in yields, not time: JS between two spins does not break a
 * row. A count older than two holds is stale (whatever came between, it was not a neighbour
 * taking every slice).
 */
let lateYields = 0;

/**
 * Two clock reads of a spin this far apart (64 ring checks take well under a microsecond) mean
 * something else ran on the thread's time between them: another thread or the host had the CPU,
 * or V8 ran a garbage collection or a compilation on this thread.
 */
const OTHERS_GAP_MS = 0.1;

/**
 * Spins (blocking the thread) until a used ring has elements or `ns` passed. With `yieldRule`,
 * between checks, let any other runnable thread on this CPU (a backend sharing it) run first; a
 * spin that does not holds the CPU the completion needs until the scheduler preempts it (one
 * vCPU, file backend, depth 1: adaptive at 1.44x event's IOPS with yields, 0.97x without;
 * BENCHMARKS.md). `fromLatestReading`: start from the thread's latest nowMs() (the caller's, just
 * before), which saves a clock read and counts a long gap since then (a garbage collection, a
 * preemption) as others' (lastSpin); passing the time instead would box it.
 */
export function spinForUsed(
  queues: readonly DeviceQueue[],
  ns: number,
  yieldRule?: Readonly<SpinYield>,
  fromLatestReading = false,
): boolean {
  const found = spinUntilUsed(queues, ns, yieldRule, fromLatestReading);
  lastSpin[SPIN_HELD] = lastSpin[SPIN_END]! - lastSpin[SPIN_START]! - lastSpin[SPIN_OTHERS]!;
  return found;
}

/** spinForUsed's spin, which may return from several places: lastSpin but SPIN_HELD. */
function spinUntilUsed(
  queues: readonly DeviceQueue[],
  ns: number,
  yieldRule: Readonly<SpinYield> | undefined,
  fromLatestReading: boolean,
): boolean {
  // The clock is read in place here, never through nowMs() (see clockCell).
  if (!fromLatestReading) tickClock();
  const startMs = clockCell[0]! - CLOCK_OFFSET_MS;
  const end = startMs + ns / msToNs;
  lastSpin[SPIN_START] = startMs;
  lastSpin[SPIN_END] = startMs;
  lastSpin[SPIN_OTHERS] = 0;
  if (yieldRule !== undefined && startMs >= yieldTimes[HELD_UNTIL]!) {
    const lateMs = yieldRule.lateNs / msToNs;
    const holdMs = yieldRule.holdNs / msToNs;
    for (;;) {
      if (anyUsed(queues)) return true;
      native.yieldThread();
      tickClock();
      const back = clockCell[0]! - CLOCK_OFFSET_MS;
      const took = back - lastSpin[SPIN_END]!;
      lastSpin[SPIN_END] = back;
      if (took <= lateMs) {
        lateYields = 0;
      } else {
        lastSpin[SPIN_OTHERS] += took;
        lateYields = back - took - yieldTimes[LAST_LATE_BACK]! <= 2 * holdMs ? lateYields + 1 : 1;
        yieldTimes[LAST_LATE_BACK] = back;
        if (lateYields >= yieldRule.lateInARow) {
          // A neighbour still there when the hold ends is held for again at its first late yield.
          lateYields = yieldRule.lateInARow - 1;
          yieldTimes[HELD_UNTIL] = back + holdMs;
          break;
        }
      }
      if (back >= end) return anyUsed(queues);
    }
  }
  for (;;) {
    // A clock read costs ~40 ns, a ring check a few: check the rings far more often than the
    // clock (64 checks: ~0.3 µs past the end at most).
    for (let i = 0; i < 64; i++) if (anyUsed(queues)) return true;
    tickClock();
    const now = clockCell[0]! - CLOCK_OFFSET_MS;
    const gap = now - lastSpin[SPIN_END]!;
    if (gap > OTHERS_GAP_MS) lastSpin[SPIN_OTHERS] += gap;
    lastSpin[SPIN_END] = now;
    if (now >= end) return anyUsed(queues);
  }
}
