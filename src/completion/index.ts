import { InvalidArgumentError } from '../errors.js';
import { EventCompletion } from './event.js';
import { AdaptiveCompletion } from './adaptive.js';
import { adaptiveOptions, type AdaptiveOptions } from './adaptive-options.js';
import {
  createPollCompletion,
  DEFAULT_MICRO_LOOK_NS,
  DEFAULT_SPIN_SLICE_NS,
  MAX_TURN_NS,
} from './poll.js';
import { createSleepPollCompletion, DEFAULT_SLEEP_POLL_NS } from './sleep-poll.js';
import type { CompletionHost, CompletionStrategy } from './strategy.js';

export type { AdaptiveOptions } from './adaptive-options.js';
export { DEFAULT_ADAPTIVE_OPTIONS } from './adaptive-options.js';
export { spinForUsed } from './spin.js';
export { measureSleepFloor, type SleepFloor } from './sleep-poll.js';

/**
 * How completions are noticed:
 * - 'event': sleep on the call eventfds (fewest CPU cycles, a vCPU wake-up per wait);
 * - 'poll': poll the used rings on every event-loop turn while requests are in flight;
 * - 'sleep-poll': poll, sleep an interval in native code (shortened where a sleep as it really
 *   lasts would pass 0.7 ms), poll again (for comparison);
 * - 'adaptive': poll for a self-tuned time per wait, then sleep on the eventfds.
 * None of them spends CPU while no request is in flight.
 */
export type CompletionMode = 'event' | 'poll' | 'sleep-poll' | 'adaptive';

export const COMPLETION_MODES: readonly CompletionMode[] = [
  'event',
  'poll',
  'sleep-poll',
  'adaptive',
];

/** Tuning of the strategies (defaults: README, "Completion strategies"; BENCHMARKS.md says which were measured). */
export interface CompletionOptions {
  /** 'poll' / 'adaptive': longest synchronous spin per event-loop turn, ns (default 20 µs, at most 0.7 ms). */
  spinSliceNs?: number;
  /**
   * 'sleep-poll': the sleep between checks, ns (default 50 µs, ~70 µs in fact here; the floor is
   * ~15 µs; at most 0.7 ms). Shortened where a sleep as it really lasts would pass 0.7 ms (at
   * the default: sleeps over 0.65 ms late), as far as the host allows (SleepInterval).
   */
  sleepIntervalNs?: number;
  /** 'adaptive': controller knobs. */
  adaptive?: Partial<AdaptiveOptions>;
  /**
   * 'poll' / 'adaptive': when a spin finds a queue's last awaited completion, kick the device
   * ahead of the next request, so that a backend which sleeps between kicks is still awake for
   * it (default true; see README, "Kicking ahead").
   */
  kickAhead?: boolean;
  /**
   * 'poll' / 'adaptive': a lone request (depth 1, kicked in its call) made by the continuation
   * of a request a polling turn settled is looked for right away, in that same turn (which runs
   * the pending microtasks itself; process.nextTick callbacks wait for the turn's end), spinning
   * up to this many ns, instead of at the next loop turn (one made elsewhere, a timer's say,
   * waits as without looks). Default 20000 (BENCHMARKS.md), at most 0.7 ms; 0 turns the looks
   * off. A look's spin also stops at the end of its run (50 µs after the loop turn it followed),
   * so values above ~50000 change nothing; its first spin, before the policy decides, is 2 µs
   * (or this, if less).
   */
  microLookNs?: number;
}

const COMPLETION_OPTION_KEYS: readonly (keyof CompletionOptions)[] = [
  'spinSliceNs',
  'sleepIntervalNs',
  'adaptive',
  'kickAhead',
  'microLookNs',
];

/**
 * Checks a mode and its options without creating anything, so open can reject them before it
 * connects. @throws InvalidArgumentError
 */
export function checkCompletionOptions(mode: unknown, options: CompletionOptions = {}): void {
  if (!COMPLETION_MODES.includes(mode as CompletionMode)) {
    throw new InvalidArgumentError(
      `completion must be one of ${COMPLETION_MODES.join(', ')}, got ${String(mode)}`,
    );
  }
  checkCompletionKnobs(options);
}

/** Checks completion options alone (they apply whatever the mode). @throws InvalidArgumentError */
export function checkCompletionKnobs(options: CompletionOptions = {}): void {
  if (typeof options !== 'object' || options === null || Array.isArray(options)) {
    throw new InvalidArgumentError('completionOptions must be an object');
  }
  for (const key of Object.keys(options)) {
    if (!COMPLETION_OPTION_KEYS.includes(key as keyof CompletionOptions)) {
      throw new InvalidArgumentError(
        `completionOptions.${key} is not an option (${COMPLETION_OPTION_KEYS.join(', ')})`,
      );
    }
  }
  const slice = options.spinSliceNs ?? DEFAULT_SPIN_SLICE_NS;
  if (typeof slice !== 'number' || !(slice >= 0 && slice <= MAX_TURN_NS)) {
    throw new InvalidArgumentError(
      `completionOptions.spinSliceNs must be a number in 0..${MAX_TURN_NS}, got ${String(slice)}`,
    );
  }
  const interval = options.sleepIntervalNs ?? DEFAULT_SLEEP_POLL_NS;
  if (!Number.isInteger(interval) || interval < 1 || interval > MAX_TURN_NS) {
    throw new InvalidArgumentError(
      `completionOptions.sleepIntervalNs must be an integer in 1..${MAX_TURN_NS}, got ${String(interval)}`,
    );
  }
  const micro = options.microLookNs ?? DEFAULT_MICRO_LOOK_NS;
  if (!Number.isInteger(micro) || micro < 0 || micro > MAX_TURN_NS) {
    throw new InvalidArgumentError(
      `completionOptions.microLookNs must be an integer in 0..${MAX_TURN_NS}, got ${String(micro)}`,
    );
  }
  if (options.kickAhead !== undefined && typeof options.kickAhead !== 'boolean') {
    throw new InvalidArgumentError(
      `completionOptions.kickAhead must be a boolean, got ${String(options.kickAhead)}`,
    );
  }
  try {
    adaptiveOptions(options.adaptive);
  } catch (err) {
    throw new InvalidArgumentError(
      `completionOptions.${err instanceof Error ? err.message : String(err)}`,
    );
  }
}

/** @throws InvalidArgumentError on a bad mode or options (nothing is started then). */
export function createCompletion(
  mode: CompletionMode,
  host: CompletionHost,
  options: CompletionOptions = {},
): CompletionStrategy {
  checkCompletionOptions(mode, options);
  switch (mode) {
    case 'event':
      return new EventCompletion(host);
    case 'poll':
      return createPollCompletion(
        host,
        options.spinSliceNs ?? DEFAULT_SPIN_SLICE_NS,
        options.kickAhead ?? true,
        options.microLookNs ?? DEFAULT_MICRO_LOOK_NS,
      );
    case 'sleep-poll':
      return createSleepPollCompletion(host, options.sleepIntervalNs ?? DEFAULT_SLEEP_POLL_NS);
    case 'adaptive':
      return new AdaptiveCompletion(
        host,
        options.adaptive,
        options.spinSliceNs ?? DEFAULT_SPIN_SLICE_NS,
        options.kickAhead ?? true,
        options.microLookNs ?? DEFAULT_MICRO_LOOK_NS,
      );
  }
}
