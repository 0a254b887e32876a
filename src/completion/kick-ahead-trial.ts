import { latestMs } from '../util/clock.js';
import { sortedMedian } from '../util/median.js';

/**
 * Whether kicking ahead does harm on this backend, measured rather than assumed. On
 * qemu-storage-daemon 7.2 it makes depth 1 about twice as fast on null-co (BENCHMARKS.md,
 * "Kicking ahead"); a backend that does work for every kick, or sleeps another way, may answer
 * the next request later for it, and would pay that on every request.
 *
 * Now and then, a trial takes some chances to kick ahead and skips others, and compares the
 * medians of the time from each chance (a completion found) to the end of the next wait (the next
 * request's completion found). That span holds all the kick ahead changes: its own eventfd write,
 * the next request's kick (a write that wakes a sleeping backend costs more), and the backend's
 * answer. A sample whose next request came late (the application worked in between) or was a
 * blocking call is dropped. Kicks ahead stop only where the taken side is clearly slower: on the
 * file backend the two sides came within a few percent of each other either way (medians of 32,
 * 11.5-20.2 µs), where paired runs of whole seconds put its gain at 5-10% of the IOPS (a state
 * that lasts longer than a trial's blocks, or the runs' noise): a rule of "no faster, no kicks"
 * lost it. They stop after two trials in a row find harm, and start again after one that finds
 * none.
 */

/**
 * The first trial starts at this chance to kick ahead (the device about to be idle, every other
 * gate passed): past the daemon's warm-up, where trials judged wrongly (taken 14-26 µs, skipped
 * 7-18 µs at 256-1024 chances on null-co).
 */
export const KICK_AHEAD_FIRST_TRIAL = 8192;
/**
 * Chances between trials: the minimum after a verdict against kicking ahead and after the first
 * verdict for it that follows one against (a backend that is harmed gets its kicks ahead in a
 * trial's taken half only: 32 in about 1,100 chances); doubled after each other verdict for it
 * (the first trial's too: kicking ahead starts out judged harmless), up to the maximum.
 */
export const KICK_AHEAD_TRIAL_EVERY_MIN = 1024;
export const KICK_AHEAD_TRIAL_EVERY_MAX = 65_536;
/** How much slower the taken side's median must be for kicks ahead to stop. */
export const KICK_AHEAD_TRIAL_HARM = 1.1;
/**
 * A trial's chances come in blocks, taken, skipped, skipped, taken (a drift of the machine hits
 * both sides alike). Blocks, not single chances alternating: part of the effect may be a state
 * that lasts over several requests (a vCPU kept from its deeper idle).
 */
export const KICK_AHEAD_TRIAL_BLOCK = 16;
const TRIAL_BLOCKS_TAKEN: readonly boolean[] = [true, false, false, true];
/** Samples a side can take in a trial (both sides' blocks, at most). */
const SIDE_CAPACITY = TRIAL_BLOCKS_TAKEN.length * KICK_AHEAD_TRIAL_BLOCK;

/** Which side the next wait's end gives a sample to. */
const NO_SIDE = 0;
const TAKEN_SIDE = 1;
const SKIPPED_SIDE = 2;

export class KickAheadTrial {
  #harmless = true;
  /** The latest trial found harm while kicks ahead were on: on until the next confirms it. */
  #doubted = false;
  #untilTrial = KICK_AHEAD_FIRST_TRIAL;
  #interval = KICK_AHEAD_TRIAL_EVERY_MIN;
  /** The chance's index within the running trial; -1: none runs. */
  #index = -1;
  /** The side whose chance the next wait's end is to measure. */
  #pendingSide = NO_SIDE;
  /**
   * The clock's reading at that chance, in a cell: a field that first held 0 and then a time
   * would change its representation at the first trial, and the code using it would deoptimize.
   */
  readonly #chanceAt = new Float64Array(1);
  /** Reads the clock (ms), only while a trial measures. */
  readonly #clock: () => number;
  // Typed arrays, sorted without a comparator: no heap number per comparison, no array regrown.
  readonly #taken = new Float64Array(SIDE_CAPACITY);
  readonly #skipped = new Float64Array(SIDE_CAPACITY);
  #takenCount = 0;
  #skippedCount = 0;
  #trials = 0;
  readonly #onVerdict: ((harmless: boolean) => void) | undefined;

  /**
   * `onVerdict`: told after each trial that reached a verdict whether kicks ahead are on.
   * `clock`: the time in ms of a chance and of the end of the wait after it, read only during
   * trials (the default: the thread's latest clock reading, which the engine takes just before
   * both; a time passed on every chance would be boxed wherever V8 does not inline the call).
   */
  constructor(onVerdict?: (harmless: boolean) => void, clock: () => number = latestMs) {
    this.#onVerdict = onVerdict;
    this.#clock = clock;
  }

  /** The latest verdict: taking the chances did not make the next completion clearly later. */
  get harmless(): boolean {
    return this.#harmless;
  }

  /** Trials concluded with a verdict so far. */
  get trials(): number {
    return this.#trials;
  }

  /** A chance to kick ahead, now: whether to take it. */
  chance(): boolean {
    if (this.#index < 0) {
      if (--this.#untilTrial > 0) return this.#harmless;
      this.#index = 0;
      this.#takenCount = 0;
      this.#skippedCount = 0;
    }
    const block = Math.floor(this.#index / KICK_AHEAD_TRIAL_BLOCK);
    if (block >= TRIAL_BLOCKS_TAKEN.length) {
      this.#conclude();
      return this.#harmless;
    }
    this.#index++;
    const take = TRIAL_BLOCKS_TAKEN[block]!;
    this.#pendingSide = take ? TAKEN_SIDE : SKIPPED_SIDE;
    this.#chanceAt[0] = this.#clock();
    return take;
  }

  /**
   * A wait ended, now (its completions found, or there before it began). The first after a
   * trial's chance gives its sample.
   */
  waitEnded(): void {
    const side = this.#pendingSide;
    if (side === NO_SIDE) return;
    this.#pendingSide = NO_SIDE;
    const span = this.#clock() - this.#chanceAt[0]!;
    if (side === TAKEN_SIDE) this.#taken[this.#takenCount++] = span;
    else this.#skipped[this.#skippedCount++] = span;
  }

  /**
   * The next request came late after the device went idle, or is a blocking call: the time to
   * its completion holds more than the backend's answer, and is no sample.
   */
  discard(): void {
    this.#pendingSide = NO_SIDE;
  }

  #conclude(): void {
    this.#pendingSide = NO_SIDE;
    this.#index = -1;
    // A side left without samples (every next request late, or a blocking call, or its wait
    // ended another way) makes no verdict.
    if (this.#takenCount > 0 && this.#skippedCount > 0) {
      const taken = median(this.#taken, this.#takenCount);
      const harmless = taken <= KICK_AHEAD_TRIAL_HARM * median(this.#skipped, this.#skippedCount);
      if (!harmless && this.#harmless && !this.#doubted) {
        // One trial against, after ones for: kicks ahead go on until the next confirms it. The
        // first trial on qemu-storage-daemon can fall in its warm-up, where both sides take
        // 16-19 µs and one in a few came out 10% apart (null-co, 2 s runs).
        this.#doubted = true;
        this.#interval = KICK_AHEAD_TRIAL_EVERY_MIN;
      } else {
        this.#doubted = false;
        this.#interval =
          harmless && this.#harmless
            ? Math.min(this.#interval * 2, KICK_AHEAD_TRIAL_EVERY_MAX)
            : KICK_AHEAD_TRIAL_EVERY_MIN;
        this.#harmless = harmless;
      }
      this.#trials++;
      this.#onVerdict?.(this.#harmless);
    }
    this.#untilTrial = this.#interval;
  }
}

/** The median of the first `n` of `values`, which it sorts in place (a trial's, used once). */
function median(values: Float64Array, n: number): number {
  return sortedMedian(values.subarray(0, n).sort());
}
