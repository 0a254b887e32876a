import { native } from '../native.js';
import { PollingCompletion, POLL_POLICY } from './poll.js';
import type { SpinPolicy } from './spin-policy.js';
import type { CompletionHost } from './strategy.js';

/**
 * Default interval of 'sleep-poll': a native sleep asked for 50 µs takes ~70 µs here, one asked
 * for 1 µs ~15 µs (the sleep runs with 1 ns of timer slack). Each sleep costs this process 15-19
 * µs of CPU here, so shorter sleeps save no CPU over spinning; see measureSleepFloor and the
 * report's sleep floor line.
 */
export const DEFAULT_SLEEP_POLL_NS = 50_000;

const SLEEP_POLICY: SpinPolicy = Object.freeze({
  ...POLL_POLICY,
  // The seed's method in a blocking wait would be the same sleep; poll(2) is better there.
  blockingSpinNs: () => 0,
});

/**
 * 'sleep-poll' (the seed's method, kept for comparison): while requests are in flight, check the
 * used rings, sleep an interval in native code (Node's timers do not go below 1 ms), check
 * again, and yield to the event loop. One sleep per loop turn. The interval is fixed unless
 * sleeps end so late that one as it really lasts would pass 0.7 ms (at the 50 µs default: a
 * host over 0.65 ms late), when it is shortened (SleepInterval). The interval is checked with the
 * other options (checkCompletionKnobs, which createCompletion runs first), as poll's slice is.
 */
export function createSleepPollCompletion(
  host: CompletionHost,
  intervalNs: number = DEFAULT_SLEEP_POLL_NS,
): PollingCompletion {
  return new PollingCompletion('sleep-poll', host, SLEEP_POLICY, {
    sliceNs: 0,
    sleepNs: intervalNs,
  });
}

/** Distribution of the real duration of native.sleepNs(requestNs), in ns. */
export interface SleepFloor {
  requestNs: number;
  samples: number;
  min: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
}

/**
 * Measures how long native.sleepNs(requestNs) really takes (blocks the thread for about
 * samples x the result: call it from tools and benchmarks, not from a server).
 */
export function measureSleepFloor(requestNs = 1000, samples = 200): SleepFloor {
  const xs = new Float64Array(samples);
  for (let i = 0; i < samples; i++) {
    const t = native.nowNs();
    native.sleepNs(requestNs);
    xs[i] = native.nowNs() - t;
  }
  xs.sort();
  return {
    requestNs,
    samples,
    min: xs[0]!,
    p50: xs[Math.floor(samples / 2)]!,
    p90: xs[Math.floor(samples * 0.9)]!,
    p99: xs[Math.min(samples - 1, Math.floor(samples * 0.99))]!,
    max: xs[samples - 1]!,
  };
}
