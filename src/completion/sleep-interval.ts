import { msToNs, spanMs, spanNs } from './spin.js';

/**
 * How much of a sleep's overshoot is forgotten per sleep: the estimate follows the largest
 * recent one down by 5% a sleep (from the cap to half of it in 14 sleeps), so a few quick
 * wake-ups do not hide a host that is often slow to wake.
 */
const OVERSHOOT_KEPT = 0.95;

/** The shortest sleep asked for: even a host slow to wake is given the CPU back between checks. */
const MIN_SLEEP_NS = 1_000;

/**
 * What a new estimate starts from (ms): a first sleep at the 0.7 ms cap asks 0.4 ms, so a host
 * ~0.5 ms late (seen on CI machines) does not make the first turns 1.2 ms long; a host that
 * wakes on time gets the interval back within ~50 sleeps.
 */
const FIRST_OVERSHOOT_MS = 0.3;

/**
 * How late this host wakes a sleeping thread (ms), shared by every engine of this thread (a
 * worker thread has its own): it is the host's, not a device's, and a new engine (another
 * device, a change of strategy) starts from what the others learned. Every engine's sleeps
 * feed it, so with N devices sleeping it decays N times as fast in wall-clock time. A typed
 * array's element, written in place (a module variable holding a double would be a new heap
 * number per write).
 */
const hostOvershoot = new Float64Array([FIRST_OVERSHOOT_MS]);

/**
 * The sleep 'sleep-poll' asks for in a loop turn: the configured interval, shortened while
 * sleeps end late, so that a sleep as it really lasts stays within `turnNs` (the loop's budget
 * for one turn) as far as the host allows. Lateness is mostly the host's (waking a halted vCPU:
 * 0.1-0.2 ms here, ~0.5 ms on CI machines, where an interval of 0.7 ms held most loop turns for
 * over 1 ms), plus whatever ran on the CPU meanwhile (a backend sharing it, a host stall). The
 * estimate is a decaying high-water mark of the overshoots seen, capped at the turn's budget: a
 * stall of several ms says nothing about the next wake-up beyond "slow". A host later than the
 * budget gets the shortest sleeps, and turns as long as its lateness.
 */
export class SleepInterval {
  readonly #configuredNs: number;
  readonly #minNs: number;
  readonly #turnMs: number;
  readonly #overshoot: Float64Array;

  /** `overshoot`: where the estimate lives (ms, element 0); by default the process's. */
  constructor(configuredNs: number, turnNs: number, overshoot: Float64Array = hostOvershoot) {
    this.#configuredNs = configuredNs;
    this.#minNs = Math.min(MIN_SLEEP_NS, configuredNs);
    this.#turnMs = turnNs / msToNs;
    this.#overshoot = overshoot;
  }

  /**
   * What to ask the next sleep for (whole ns), from the estimate as it is now: another engine of
   * this thread may have raised it since this one's last sleep.
   */
  get ns(): number {
    spanMs[0] = this.#turnMs - this.#overshoot[0]!;
    const roomNs = spanNs();
    return Math.max(this.#minNs, Math.min(this.#configuredNs, roomNs));
  }

  /** The largest recent overshoot, smoothed as above (ms). */
  get overshootMs(): number {
    return this.#overshoot[0]!;
  }

  /**
   * A sleep asked for `askedNs` took `tookNs` (from before the call to after it; whole ns, which
   * V8 passes unboxed). A sleep that took less than asked (clock granularity) counts as on time.
   */
  took(askedNs: number, tookNs: number): void {
    const over = Math.min(Math.max((tookNs - askedNs) / msToNs, 0), this.#turnMs);
    const kept = this.#overshoot[0]! * OVERSHOOT_KEPT;
    this.#overshoot[0] = over > kept ? over : kept;
  }
}
