/**
 * Interrupt moderation for the adaptive strategy: where it has settled on blocking under a deep
 * queue, a blocked wait asks for one interrupt after k completions (VIRTIO_RING_F_EVENT_IDX)
 * instead of one per completion. The other requests in flight keep the device busy while the
 * frontend sleeps, so wake-ups fall k-fold at no cost in throughput, as long as the device
 * still has work when the frontend wakes. A wake that finds every request completed (the device
 * ran dry) shrinks k; at the last step batching stops and is tried again later, backing off.
 * Wakes that keep finding requests in flight let k grow, up to half the depth.
 */

import type { BatchingMode } from './adaptive-options.js';

/** Fewest requests in flight at which a wait may be batched (a batch is at least 2, at most half). */
export const BATCH_MIN_DEPTH = 4;
/** Batch sizes as fractions of the requests in flight, by level (0 = not batching). */
const BATCH_FRACTIONS = [0, 1 / 8, 1 / 4, 1 / 2] as const;
const BATCH_TOP_LEVEL = BATCH_FRACTIONS.length - 1;
/** Wakes in a row that found the device busy before the batch grows a level. */
const BATCH_GROW_AFTER = 16;
/** Waits at depth before batching is tried, first and at most (after failed tries, doubling). */
const BATCH_RETRY_MIN = 64;
const BATCH_RETRY_MAX = 8192;
/** A try that lasted this many wakes was a success: the next one comes soon again. */
const BATCH_LASTED = 64;
/** How long a batched wait may take, in multiples of what k completions usually take, and bounds. */
const BATCH_DEADLINE_FACTOR = 4;
const BATCH_DEADLINE_MIN_NS = 1_000_000;
const BATCH_DEADLINE_MAX_NS = 64_000_000;

export class InterruptModeration {
  readonly #mode: BatchingMode;
  /** Index into BATCH_FRACTIONS (0: not batching), wakes since it grew, and the retry clock. */
  #level = 0;
  #cleanWakes = 0;
  #wakes = 0;
  #retryIn = BATCH_RETRY_MIN;
  #retryInterval = BATCH_RETRY_MIN;
  /** Mean ns per completion seen by batched waits (0 = none yet), for their deadline. */
  #nsPerCompletion = 0;
  #starved = 0;

  constructor(mode: BatchingMode) {
    this.#mode = mode;
    if (mode === 'always') this.#level = BATCH_TOP_LEVEL;
  }

  /** True while waits under a deep queue block for a batch of completions. */
  get active(): boolean {
    return this.#level > 0;
  }

  /** Batched wakes that found every request completed (the device had run dry), so far. */
  get starvations(): number {
    return this.#starved;
  }

  /**
   * 'auto': whether a wait with `inFlight` requests in flight is batched now, and the clock of
   * the next try. Only where the controller has settled on `blocking`: where it spins, the spin
   * already beats a wake-up, and a batched wake-up would cost throughput (measured: -10% on a
   * page-cache file backend at depth 32, whose completions come in bursts).
   */
  consider(inFlight: number, blocking: boolean): boolean {
    if (inFlight < BATCH_MIN_DEPTH || this.#mode !== 'auto') return false;
    if (!blocking) return false;
    if (this.#level > 0) return true;
    if (--this.#retryIn > 0) return false;
    this.#level = 1;
    // A new try times the device afresh (the first deadline uses the default).
    this.#nsPerCompletion = 0;
    this.#cleanWakes = 0;
    this.#wakes = 0;
    return true;
  }

  /** 'auto': the controller spins again; batching waits for the next time it settles on blocking. */
  stop(): void {
    if (this.#mode !== 'auto' || this.#level === 0) return;
    this.#level = 0;
    this.#retryIn = BATCH_RETRY_MIN;
  }

  /** Completions one interrupt is asked for with `inFlight` requests in flight: 1 when not batching. */
  size(inFlight: number): number {
    if (this.#level === 0 || inFlight < BATCH_MIN_DEPTH) return 1;
    const half = inFlight >> 1;
    return Math.min(half, Math.max(2, Math.floor(inFlight * BATCH_FRACTIONS[this.#level]!)));
  }

  /** The longest a batched wait for `count` completions should take before it gives up (ns). */
  deadlineNs(count: number): number {
    const per = this.#nsPerCompletion;
    if (per === 0) return BATCH_DEADLINE_MIN_NS * 2;
    const ns = BATCH_DEADLINE_FACTOR * count * per;
    return Math.min(BATCH_DEADLINE_MAX_NS, Math.max(BATCH_DEADLINE_MIN_NS, ns));
  }

  /**
   * A batched wait for `asked` completions ended after `elapsedNs`, finding `found` with
   * `inFlight` requests in flight (found included). Found === inFlight: the device ran dry while
   * we slept.
   */
  woke(found: number, asked: number, inFlight: number, elapsedNs: number): void {
    // Only a full batch times the device: one woken early (a spurious interrupt) or held back
    // by a slow request does not.
    if (found >= asked && elapsedNs > 0) {
      const per = elapsedNs / found;
      const prev = this.#nsPerCompletion;
      this.#nsPerCompletion = prev === 0 ? per : prev + (per - prev) / 8;
    }
    if (this.#level === 0) return;
    this.#wakes++;
    if (found >= inFlight) {
      this.#starved++;
      this.#shrink();
    } else if (++this.#cleanWakes >= BATCH_GROW_AFTER && this.#level < BATCH_TOP_LEVEL) {
      this.#level++;
      this.#cleanWakes = 0;
    }
  }

  /**
   * A batched wait outlasted its deadline (requests the device holds for long among fast ones,
   * or a device that slowed down): the completions that came are drained, and the batch shrinks.
   */
  late(): void {
    // Not a sample of the time per completion: the batch did not fill, and sampling elapsed /
    // found would only ever raise the estimate (elapsed >= the deadline), ratcheting the deadline
    // up to its cap. A device that slowed down for good is re-timed when batching is tried again.
    if (this.#level > 0) this.#shrink();
  }

  #shrink(): void {
    this.#cleanWakes = 0;
    if (this.#mode === 'always') return;
    if (--this.#level > 0) return;
    // Stopped: try again after a while, sooner if this try held for long.
    this.#retryInterval =
      this.#wakes >= BATCH_LASTED
        ? BATCH_RETRY_MIN
        : Math.min(BATCH_RETRY_MAX, this.#retryInterval * 2);
    this.#retryIn = this.#retryInterval;
  }
}
