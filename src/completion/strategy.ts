import { native } from '../native.js';
import { CLOCK_OFFSET_MS, clockCell, readClock, tickClock } from '../util/clock.js';
import type { DeviceQueue } from '../devices/device.js';

/**
 * What a completion strategy drives. Strategies differ only in *when* they call `drain`;
 * the drain routine itself (pop used elements, complete requests, submit what waits, kick) is
 * the device's, and there is one of it.
 */
export interface CompletionHost {
  readonly queues: readonly DeviceQueue[];
  /**
   * Drains one queue's used ring and lets waiting work submit; returns how many used elements
   * it consumed (0 once the device failed or closed).
   */
  drain(queue: DeviceQueue): number;
  /** The device's call eventfd fired. */
  countCall(): void;
  /** A polling strategy kicked a queue ahead of its next request (see kickAhead); a kick too. */
  countKickAhead?(): void;
  /** A trial of the kick ahead concluded with a verdict: `harmless` false, kicks ahead are off. */
  countKickAheadTrial?(harmless: boolean): void;
  /**
   * A polling turn spun or slept for `turnNs` as the clock saw it, of which it held the thread
   * itself for `heldNs`: the rest went to others, as told by timing alone (a preempting thread,
   * the host, a garbage collection or compilation on this thread, a late yield, a sleep's late
   * wake-up). Whole ns, at most 2^31 - 1 (see spanNs). Optional; for DeviceStats.
   */
  countPollingTurn?(turnNs: number, heldNs: number): void;
  /**
   * Kicks now what waits for the burst's end (all but its first request): a polling turn that
   * runs the continuations of what it settled (a run of looks) returns only at the run's end.
   * Optional.
   */
  kickPending?(): void;
  /**
   * A callback of the strategy's own (a loop turn, a call eventfd's) begins: the requests it
   * settles are answered in continuations it runs itself before endBurst, which kicks the rest
   * of the burst they make. No process.nextTick for that burst then: running Node's tick queue
   * costs ~480 B (Node 20 makes a Map per run). Optional, in pairs.
   */
  beginBurst?(): void;
  endBurst?(): void;
}

/**
 * Runs `work`, a callback's, then the continuations of what it settled (native.runMicrotasks),
 * between the host's beginBurst and endBurst (see there). Continuations run inside the callback
 * rather than right after it, and before any process.nextTick callbacks queued meanwhile.
 */
export function settleInBurst(host: CompletionHost, work: () => void): void {
  host.beginBurst?.();
  try {
    work();
    // What the drain itself submitted (a write's phase after its edge reads, waiting work) is a
    // burst of its own: ended here, so the continuations' first request is kicked at once again,
    // as when the drain's burst ended at its nextTick, before Node ran the microtasks.
    host.endBurst?.();
    host.beginBurst?.();
    native.runMicrotasks();
  } finally {
    host.endBurst?.();
  }
}

/**
 * How long after a drain of several completions a submission counts as one of their
 * resubmissions (they run in the continuations right after it: microseconds); a request made
 * later is a new one, kicked in its call (quietKick).
 */
const BURST_RESUBMIT_MS = 1;

/** The latest drain's size and time: tells a burst's resubmissions from a new request. */
export class RecentDrain {
  /** Completions the latest drain took (0 once forgotten). */
  #count = 0;
  /** nowMs() at that drain, when it took several. */
  #at = 0;

  drained(count: number): void {
    this.#count = count;
    if (count > 1) {
      tickClock(); // read in place (see clockCell)
      this.#at = clockCell[0]! - CLOCK_OFFSET_MS;
    }
  }

  /**
   * The latest drain took several, less than BURST_RESUBMIT_MS before the thread's latest clock
   * reading: call it right after nowMs() (latestMs; a time passed to a call V8 does not inline
   * would be a new heap number).
   */
  burstBeforeLatest(): boolean {
    return this.#count > 1 && clockCell[0]! - CLOCK_OFFSET_MS - this.#at < BURST_RESUBMIT_MS;
  }

  /** The same, now; reads the clock only after a drain of several. */
  burstJustBefore(): boolean {
    if (this.#count <= 1) return false;
    readClock();
    return this.burstBeforeLatest();
  }

  forget(): void {
    this.#count = 0;
  }
}

export interface CompletionStrategy {
  readonly name: string;
  /**
   * Requests are (or are no longer) in flight: keep the process alive accordingly. Called after
   * every submission with `true` too, so a strategy that parked with nothing in flight resumes.
   */
  setBusy(busy: boolean): void;
  /**
   * A blocking (*Sync) wait is about to take over the thread: it drains, re-enables interrupts
   * and sleeps in poll(2) itself. Optional: the 'event' strategy needs nothing.
   */
  beforeBlockingWait?(): void;
  /**
   * Nanoseconds the blocking wait should spin on the used rings (see `spinForUsed`) before it
   * sleeps in poll(2); 0 = sleep at once. Asked before each sleep.
   */
  blockingSpinNs?(): number;
  /** How that spin should yield the CPU between checks (the backend shares this CPU), if at all. */
  spinYield?(): Readonly<SpinYield> | undefined;
  /**
   * A request is about to go on a ring: if nothing is in flight (and it is not the first of a
   * burst of resubmissions), the strategy returns true, and the caller kicks as soon as the
   * request is on the ring. A polling strategy turns interrupts off first; setBusy(true) follows
   * at once and starts the wait, decided there or in a look right after the callbacks (a wait
   * decided to block turns them on again, with the re-check). Optional (false: kicked as a
   * burst's, the first at once, the rest at the burst's end).
   */
  quietKick?(): boolean;
  /**
   * The blocking wait is over: restore interrupt suppression, restart polling if busy. Its
   * drains took `drained` completions: the callbacks of the async requests among them run next,
   * and their resubmissions are kicked as one burst, as after a drain of the strategy's own.
   */
  afterBlockingWait?(drained: number): void;
  stop(): void;
}

/**
 * How a spin gives the CPU to other runnable threads (see spinForUsed). A yield that kept the
 * thread off the CPU longer than `lateNs` is late: it went to a thread that runs whole
 * scheduler slices (a CPU-bound neighbour: 0.75 ms and up) rather than to a backend that
 * completes the requests it has and sleeps (tens of µs), or the host took the vCPU meanwhile
 * (here about once a second, 0.5-5 ms, whatever runs). A neighbour makes every yield late, a
 * host stall one: after `lateInARow` late yields with none in time between them, spins on this
 * thread keep the CPU for `holdNs` (yielding again would hand the neighbour a slice per spin).
 */
export interface SpinYield {
  lateNs: number;
  lateInARow: number;
  holdNs: number;
}

/** Defaults of SpinYield, from the lengths measured above. */
export const DEFAULT_SPIN_YIELD: Readonly<SpinYield> = Object.freeze({
  lateNs: 500_000,
  lateInARow: 2,
  holdNs: 100_000_000,
});
