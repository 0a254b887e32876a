/** The adaptive strategy's knobs, their defaults and their validation. */

import { DEFAULT_SPIN_YIELD } from './strategy.js';

/** Knobs of the adaptive strategy. Defaults were measured on the 2-vCPU KVM guests this ran on. */
export interface AdaptiveOptions {
  /**
   * Never spin longer than this per wait at depth 1 (and never block the event loop for it: it
   * is spread over loop turns); with more requests in flight the limit grows with the blocking
   * cost, up to `depthCap` times this (not on a CPU shared with the backend). Default 100 µs.
   */
  maxSpinNs: number;
  /** Latency a blocked wait adds: waking an idle vCPU and the event loop. Default 30 µs (measured: 25-30 µs per wake here). */
  wakeCostNs: number;
  /** CPU a blocked wait costs (arming interrupts, epoll, eventfd read). Default 4 µs. */
  blockCpuNs: number;
  /**
   * How many ns of CPU one ns of latency a wake-up adds to the request waited for is worth (a
   * closed loop weighs it by `closedLoopWeight` instead; each further request in flight adds
   * `queueWeight`; before 2026-12-06 this weight counted per request in flight). 1 = ski
   * rental. Default 0.5 (measured at a paced 2,000 IOPS, CPU per I/O against event's: paired
   * runs 1.04x null-co, 1.07x file, where 1 spun for the daemon's 25-40 µs waits at 1.09x /
   * 1.17x; fresh null-co processes 1.07-1.26x, 1 at 1.05-1.44x).
   */
  latencyWeight: number;
  /**
   * The same for each request in flight beyond the first, up to `depthCap`: under a deep queue
   * a wake-up delays every completion that lands before the frontend runs again, and the device
   * waits for their resubmissions. Default 1.
   */
  queueWeight: number;
  /**
   * The same, where the application waits for each completion before it submits again (a
   * closed loop: requests in flight most of the time, see `closedLoop`): there a wake-up's
   * latency is lost throughput as well. Counted for one wake-up, not per request in flight.
   * Default 4.
   */
  closedLoopWeight: number;
  /** Waits considered (a ring of the latest ones). Default 32. */
  window: number;
  /**
   * Re-decide after this many new samples. Default 8. While decisions keep confirming the
   * budget and waits end within it, the interval doubles up to `window` (a steady stream of
   * completions is not re-sorted every few waits); a miss or a probe that beats the decision
   * brings it back.
   */
  updateEvery: number;
  /** A new budget must beat the current one's cost by this fraction (no flapping on noise). Default 0.15. */
  hysteresis: number;
  /** Probe (spin up to maxSpinNs) at least once in this many waits when the budget is below it. Default 16. */
  probeEvery: number;
  /** Probes back off (doubling) up to one in this many waits while the decision holds. Default 256. */
  probeEveryMax: number;
  /** Headroom added to a budget over the sample it was derived from (timing jitter). Default 0.25. */
  margin: number;
  /**
   * How long a trial spins every wait in full before its decision (0 = no trials). Default 300 ms
   * (measured: the backend's waits settle after ~200 ms of back-to-back requests).
   */
  trialNs: number;
  /** After a trial that ended blocked, the next one comes this much later, at first. Default 2 s. */
  trialEveryNs: number;
  /** ... doubling after each trial that ends blocked, up to this. Default 64 s. */
  trialEveryMaxNs: number;
  /** Requests in flight whose wake-up latency a blocked wait is charged for, at most (1..64; 1 on a shared CPU). Default 8. */
  depthCap: number;
  /**
   * Batched blocking (interrupt moderation) under a deep queue: 'auto' tries it and keeps it while
   * the device is never found idle at a wake-up; 'always' uses it at every depth of at least
   * BATCH_MIN_DEPTH, at the largest batch; 'off' never. Needs VIRTIO_RING_F_EVENT_IDX (without it
   * waits block for one completion). Default 'auto'.
   */
  batching: BatchingMode;
  /**
   * Preemptions of the JS thread per wait above which the CPU counts as shared with the backend
   * (see `preempted`). Default 0.25 (measured at depth 1: 0.4-1.0 on the backend's vCPU,
   * 0.007-0.017 on one of its own).
   */
  sharedCpuPreemptions: number;
  /**
   * On a CPU shared with the backend, spins yield it between checks of the rings (and trials and
   * the closed-loop weight apply at depth 1); false: spins keep it until preempted, and a shared
   * CPU has no trials. Default true (one vCPU, file backend, depth 1: 1.44x event's IOPS, 0.97x
   * without).
   */
  yieldOnSharedCpu: boolean;
  /** A yield back after more than this is late (SpinYield.lateNs). Default 0.5 ms. */
  yieldLateNs: number;
  /** Late yields in a row after which spins stop yielding (SpinYield.lateInARow). Default 2. */
  yieldLateInARow: number;
  /** How long spins then keep the CPU (SpinYield.holdNs). Default 100 ms. */
  yieldHoldNs: number;
}

export type BatchingMode = 'auto' | 'off' | 'always';

export const DEFAULT_ADAPTIVE_OPTIONS: Readonly<AdaptiveOptions> = Object.freeze({
  maxSpinNs: 100_000,
  wakeCostNs: 30_000,
  blockCpuNs: 4_000,
  latencyWeight: 0.5,
  queueWeight: 1,
  closedLoopWeight: 4,
  window: 32,
  updateEvery: 8,
  hysteresis: 0.15,
  probeEvery: 16,
  probeEveryMax: 256,
  margin: 0.25,
  trialNs: 300_000_000,
  trialEveryNs: 2_000_000_000,
  trialEveryMaxNs: 64_000_000_000,
  depthCap: 8,
  batching: 'auto',
  sharedCpuPreemptions: 0.25,
  yieldOnSharedCpu: true,
  yieldLateNs: DEFAULT_SPIN_YIELD.lateNs,
  yieldLateInARow: DEFAULT_SPIN_YIELD.lateInARow,
  yieldHoldNs: DEFAULT_SPIN_YIELD.holdNs,
});

/** Validates and fills in options (throws RangeError on nonsense). */
export function adaptiveOptions(partial: Partial<AdaptiveOptions> = {}): AdaptiveOptions {
  if (typeof partial !== 'object' || partial === null || Array.isArray(partial)) {
    throw new RangeError('adaptive must be an object');
  }
  // A misspelt knob would otherwise leave its default in place without a word.
  for (const key of Object.keys(partial)) {
    if (!Object.hasOwn(DEFAULT_ADAPTIVE_OPTIONS, key)) {
      throw new RangeError(`adaptive.${key} is not an option`);
    }
  }
  const o: AdaptiveOptions = { ...DEFAULT_ADAPTIVE_OPTIONS, ...partial };
  const nonNegative: (keyof AdaptiveOptions)[] = [
    'maxSpinNs',
    'wakeCostNs',
    'blockCpuNs',
    'latencyWeight',
    'queueWeight',
    'closedLoopWeight',
    'hysteresis',
    'margin',
    'trialNs',
    'trialEveryNs',
    'trialEveryMaxNs',
    'sharedCpuPreemptions',
    'yieldLateNs',
    'yieldHoldNs',
  ];
  for (const key of nonNegative) {
    const v = o[key];
    if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) {
      throw new RangeError(`adaptive.${key} must be a finite number >= 0, got ${String(v)}`);
    }
  }
  // Spreading a spin over loop turns keeps the loop responsive, but a budget this long is a bug.
  if (o.maxSpinNs > 10_000_000) {
    throw new RangeError(`adaptive.maxSpinNs must be at most 10 ms, got ${o.maxSpinNs}`);
  }
  for (const key of [
    'window',
    'updateEvery',
    'probeEvery',
    'probeEveryMax',
    'depthCap',
    'yieldLateInARow',
  ] as const) {
    const v = o[key];
    if (!Number.isInteger(v) || v < 1 || v > 1 << 16) {
      throw new RangeError(`adaptive.${key} must be an integer in 1..65536, got ${String(v)}`);
    }
  }
  if (o.depthCap > 64) {
    throw new RangeError(`adaptive.depthCap must be at most 64, got ${o.depthCap}`);
  }
  if (o.maxSpinNs * o.depthCap > 10_000_000) {
    throw new RangeError('adaptive.maxSpinNs * adaptive.depthCap must be at most 10 ms');
  }
  if (o.batching !== 'auto' && o.batching !== 'off' && o.batching !== 'always') {
    throw new RangeError(
      `adaptive.batching must be 'auto', 'off' or 'always', got ${String(o.batching)}`,
    );
  }
  if (typeof o.yieldOnSharedCpu !== 'boolean') {
    throw new RangeError(
      `adaptive.yieldOnSharedCpu must be a boolean, got ${String(o.yieldOnSharedCpu)}`,
    );
  }
  if (o.probeEveryMax < o.probeEvery) {
    throw new RangeError('adaptive.probeEveryMax must be >= adaptive.probeEvery');
  }
  if (o.trialEveryMaxNs < o.trialEveryNs) {
    throw new RangeError('adaptive.trialEveryMaxNs must be >= adaptive.trialEveryNs');
  }
  if (o.trialNs > 0 && o.trialEveryNs < o.trialNs) {
    // Back-to-back trials would spin for good.
    throw new RangeError('adaptive.trialEveryNs must be >= adaptive.trialNs');
  }
  return o;
}
