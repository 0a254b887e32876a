import { msToNs, wholeNs } from './spin.js';

/**
 * How much of a sleep's overshoot is forgotten per sleep: the estimate follows the largest
 * recent one down by 5% a sleep (from the cap to half of it in 14 sleeps), so a few quick
 * wake-ups do not hide a host that is often slow to wake.
 */
const OVERSHOOT_KEPT = 0.95;

/** The shortest sleep asked for: even a host slow to wake is given the CPU back between checks. */
const MIN_SLEEP_NS = 1_000;

/**
 * The sleep 'sleep-poll' asks for in a loop turn: the configured interval, shortened while the
 * host takes long to wake the thread from it, so that the sleep as it really lasts stays within
 * `turnNs` (the loop's budget for one turn). A sleep's overshoot is the host's, not the length
 * asked for: waking a halted vCPU took 0.1-0.2 ms here and up to ~0.5 ms on CI machines, which
 * at an interval of 0.7 ms held most loop turns for over 1 ms. The estimate is a decaying high
 * water mark of the overshoots seen, capped at the turn's budget (a host stall of several ms
 * says nothing about the next wake-up beyond "slow").
 */
export class SleepInterval {
  readonly #configuredNs: number;
  readonly #turnMs: number;
  #overshootMs = 0;
  #ns: number;

  constructor(configuredNs: number, turnNs: number) {
    this.#configuredNs = configuredNs;
    this.#turnMs = turnNs / msToNs;
    this.#ns = configuredNs;
  }

  /** What to ask the next sleep for (whole ns). */
  get ns(): number {
    return this.#ns;
  }

  /** The largest recent overshoot, smoothed as above (ms). */
  get overshootMs(): number {
    return this.#overshootMs;
  }

  /**
   * A sleep asked for `askedNs` took `tookNs` (from before the call to after it; whole ns, which
   * V8 passes unboxed).
   */
  took(askedNs: number, tookNs: number): void {
    const over = Math.min(Math.max((tookNs - askedNs) / msToNs, 0), this.#turnMs);
    const kept = this.#overshootMs * OVERSHOOT_KEPT;
    this.#overshootMs = over > kept ? over : kept;
    const roomNs = wholeNs(this.#turnMs - this.#overshootMs);
    this.#ns = Math.max(MIN_SLEEP_NS, Math.min(this.#configuredNs, roomNs));
  }
}
