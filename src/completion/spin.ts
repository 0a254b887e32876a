import { native } from '../native.js';
import type { DeviceQueue } from '../devices/device.js';
import type { SpinYield } from './strategy.js';

/** performance.now() is in ms; spans handed to policies and native waits are in ns. */
export const msToNs = 1e6;

/** True if any queue has used elements not yet drained. */
export function anyUsed(queues: readonly DeviceQueue[]): boolean {
  for (let i = 0; i < queues.length; i++) if (queues[i]!.vq.hasUsed()) return true;
  return false;
}

/**
 * performance.now() until which spins on this thread do not yield; the late yields in a row, and
 * when the last came back (one for all devices: they share the thread and its CPU). Counted in
 * yields, not time: JS between two spins does not break a row. A count older than two holds is
 * stale (whatever came between, it was not a neighbour taking every slice).
 */
let yieldsHeldUntil = 0;
let lateYields = 0;
let lastLateBack = -Infinity;

/**
 * Two clock reads of a spin this far apart (64 ring checks take well under a microsecond) mean
 * something else ran on the thread's time between them: another thread or the host had the CPU,
 * or V8 ran a garbage collection or a compilation on this thread.
 */
const OTHERS_GAP_MS = 0.1;

/**
 * The latest spinForUsed's last clock read (`endMs`), and how much of it went to others
 * (`othersMs`): gaps between its clock reads longer than OTHERS_GAP_MS, and yields that came
 * back late. Told by timing alone, not checked. The rest is what the spin itself held the thread
 * for. (Fields, not module variables: a double stored in a field is updated in place, one in a
 * module variable allocates; the 0.5s make them double fields from the start.)
 */
const spinTimes = { endMs: 0.5, othersMs: 0.5 };

/** The latest spin's times (see above; written here only). */
export const lastSpin: Readonly<typeof spinTimes> = spinTimes;

/**
 * Spins (blocking the thread) until a used ring has elements or `ns` passed. With `yieldRule`,
 * between checks, let any other runnable thread on this CPU (a backend sharing it) run first; a
 * spin that does not holds the CPU the completion needs until the scheduler preempts it (one
 * vCPU, file backend, depth 1: adaptive at 1.44x event's IOPS with yields, 0.97x without;
 * BENCHMARKS.md). `startMs`: the caller's latest performance.now(), which saves a clock read
 * and counts a long gap since then (a garbage collection, a preemption) as others' (lastSpin).
 */
export function spinForUsed(
  queues: readonly DeviceQueue[],
  ns: number,
  yieldRule?: Readonly<SpinYield>,
  startMs: number = performance.now(),
): boolean {
  let now = startMs;
  const end = now + ns / msToNs;
  spinTimes.othersMs = 0;
  if (yieldRule !== undefined && now >= yieldsHeldUntil) {
    const lateMs = yieldRule.lateNs / msToNs;
    const holdMs = yieldRule.holdNs / msToNs;
    for (;;) {
      if (anyUsed(queues)) return spinEnded(now, true);
      native.yieldThread();
      const back = performance.now();
      if (back - now <= lateMs) {
        lateYields = 0;
      } else {
        spinTimes.othersMs += back - now;
        lateYields = now - lastLateBack <= 2 * holdMs ? lateYields + 1 : 1;
        lastLateBack = back;
        if (lateYields >= yieldRule.lateInARow) {
          // A neighbour still there when the hold ends is held for again at its first late yield.
          lateYields = yieldRule.lateInARow - 1;
          yieldsHeldUntil = back + holdMs;
          now = back;
          break;
        }
      }
      now = back;
      if (now >= end) return spinEnded(now, anyUsed(queues));
    }
  }
  for (;;) {
    // A clock read costs ~50 ns and allocates a heap number, a ring check a few ns and nothing:
    // check the rings far more often than the clock (64 checks: ~0.3 µs past the end at most;
    // 16 made the spins a fifth of all the garbage of a depth-1 read loop).
    for (let i = 0; i < 64; i++) if (anyUsed(queues)) return spinEnded(now, true);
    const then = now;
    now = performance.now();
    if (now - then > OTHERS_GAP_MS) spinTimes.othersMs += now - then;
    if (now >= end) return spinEnded(now, anyUsed(queues));
  }
}

/**
 * Notes the spin's last clock read, and returns `found`. A polling turn's own time ends there,
 * not at the clock read after it, which allocates and so may run a garbage collection.
 */
function spinEnded(now: number, found: boolean): boolean {
  spinTimes.endMs = now;
  return found;
}
