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
 * answer. Kicks ahead stop only where the taken side is clearly slower: on the file backend the
 * two sides came within a few percent of each other either way (medians of 32, 11-18 µs), where
 * paired runs of whole seconds put its gain at 5-10% of the IOPS (a state that lasts longer
 * than a trial's blocks, or the runs' noise): a rule of "no faster, no kicks" lost it. The
 * verdict holds until the next trial.
 */

/**
 * Chances to kick ahead (the device about to be idle, every other gate passed) before the first
 * trial: past the daemon's warm-up, where trials judged wrongly (taken 14-26 µs, skipped 7-18 µs
 * at 256-1024 chances on null-co).
 */
export const KICK_AHEAD_FIRST_TRIAL = 8192;
/**
 * Chances between trials: the minimum after every verdict against kicking ahead (a backend
 * that is harmed gets its kicks ahead in a trial's taken half only: 32 in about 1,100 chances);
 * doubled after each verdict for it that follows one for it, up to the maximum.
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
const BLOCKS: readonly boolean[] = [true, false, false, true];

export class KickAheadTrial {
  #harmless = true;
  #untilTrial = KICK_AHEAD_FIRST_TRIAL;
  #interval = KICK_AHEAD_TRIAL_EVERY_MIN;
  /** The chance's index within the running trial; -1: none runs. */
  #index = -1;
  /** The side of the chance whose sample the next wait's end gives, and when it came (ms). */
  #pending: number[] | undefined;
  #chanceAt = 0;
  readonly #taken: number[] = [];
  readonly #skipped: number[] = [];
  #trials = 0;

  /** The latest verdict: taking the chances did not make the next completion clearly later. */
  get harmless(): boolean {
    return this.#harmless;
  }

  /** Trials concluded so far. */
  get trials(): number {
    return this.#trials;
  }

  /** A chance to kick ahead at `nowMs` (performance.now()): whether to take it. */
  chance(nowMs: number): boolean {
    if (this.#index < 0) {
      if (--this.#untilTrial > 0) return this.#harmless;
      this.#index = 0;
      this.#taken.length = 0;
      this.#skipped.length = 0;
    }
    const block = Math.floor(this.#index / KICK_AHEAD_TRIAL_BLOCK);
    if (block >= BLOCKS.length) {
      this.#conclude();
      return this.#harmless;
    }
    this.#index++;
    const take = BLOCKS[block]!;
    this.#pending = take ? this.#taken : this.#skipped;
    this.#chanceAt = nowMs;
    return take;
  }

  /**
   * A wait ended at `nowMs` (its completions found, or there before it began). The first after a
   * trial's chance gives its sample.
   */
  waitEnded(nowMs: number): void {
    const side = this.#pending;
    if (side === undefined) return;
    this.#pending = undefined;
    side.push(nowMs - this.#chanceAt);
  }

  #conclude(): void {
    this.#pending = undefined;
    this.#index = -1;
    // A side left without samples (its waits never ended as polling ones) changes nothing.
    if (this.#taken.length > 0 && this.#skipped.length > 0) {
      const harmless = median(this.#taken) <= KICK_AHEAD_TRIAL_HARM * median(this.#skipped);
      this.#interval =
        harmless && this.#harmless
          ? Math.min(this.#interval * 2, KICK_AHEAD_TRIAL_EVERY_MAX)
          : KICK_AHEAD_TRIAL_EVERY_MIN;
      this.#harmless = harmless;
    }
    this.#untilTrial = this.#interval;
    this.#trials++;
  }
}

function median(values: number[]): number {
  values.sort((a, b) => a - b);
  const mid = values.length >> 1;
  return values.length % 2 === 1 ? values[mid]! : (values[mid - 1]! + values[mid]!) / 2;
}
