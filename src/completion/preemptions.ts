import { native } from '../native.js';
import { CLOCK_OFFSET_MS, clockCell } from '../util/clock.js';

// The JS thread's involuntary context switches per wait: how polling strategies tell a backend
// that shares this CPU (it preempts us) from one on a CPU of its own.

/** Waits per reading of the JS thread's involuntary context switches, and the longest sample. */
const PREEMPTION_SAMPLE = 256;
const PREEMPTION_SAMPLE_MAX_MS = 1000;

/**
 * One count for the JS thread, whatever the number of devices on it: their waits together make
 * the sample (each device dividing the thread's preemptions by its own waits would overstate
 * them). `sample` numbers the readings.
 */
const counter = { waits: 0, count: -1, at: 0, sample: 0 };

/** The readings so far: `sample` numbers them (written here only). */
export const preemptions: Readonly<typeof counter> = counter;

/**
 * The latest reading, preemptions per wait (written here only), in a cell: a field that held 0
 * until the thread's first preemption, then a fraction, would change its object's shape then,
 * at any time, and V8 would deoptimize all code that reads the object ("wrong map" in traces).
 */
export const preemptionsPerWait = new Float64Array(1);

/**
 * getrusage(2) is a syscall: read once per PREEMPTION_SAMPLE waits, not per wait. A sample
 * that spans idle time (over a second) says nothing about the waits in it, and is dropped.
 * The wait is counted at the thread's latest clock reading (the caller's, just before).
 */
export function countWaitForPreemptions(): void {
  if (++counter.waits < PREEMPTION_SAMPLE) return;
  const now = clockCell[0]! - CLOCK_OFFSET_MS; // latestMs(), in place (see clockCell)
  const count = native.threadInvoluntarySwitches();
  if (counter.count >= 0 && now - counter.at <= PREEMPTION_SAMPLE_MAX_MS) {
    preemptionsPerWait[0] = (count - counter.count) / counter.waits;
    counter.sample++;
  }
  counter.count = count;
  counter.at = now;
  counter.waits = 0;
}
