/**
 * The decision behind the 'adaptive' completion strategy, with no I/O and no clock of its own so
 * it can be driven by synthetic traces in unit tests.
 *
 * A *wait* starts whenever requests are in flight and the used rings are empty; it ends at the
 * next completion. For each wait the strategy asks {@link AdaptiveController.startWait} for a
 * spin budget, spins (polls the used rings) up to that long, then arms the call eventfds and
 * blocks. It reports back either a *hit* (the completion was seen while spinning, after `waitNs`)
 * or a *miss* (the budget ran out; all we learn is that the wait was longer than the budget).
 *
 * The budget minimises, over a window of recent waits, the expected cost of a wait:
 *
 *   cost(B) = E[min(wait, B)]                       CPU spent spinning
 *           + P(wait > B) * (blockCpuNs + latencyWeight * wakeCostNs)
 *                                                    a blocked wait: syscalls + the wake-up
 *                                                    latency it adds
 *
 * B = 0 (pure event) costs blockCpuNs + latencyWeight * wakeCostNs. With latencyWeight 1 this is
 * the ski-rental rule (spin at most what blocking would cost); the default 0.5 leaves a paced
 * load's 25-40 µs waits to the eventfd, as a CPU cost near 'event''s there asks. A miss is a
 * censored sample (the wait was longer than the spin): it is imputed from the hits that outlasted
 * the same spin, and a periodic *probe* (one wait spun up to the longest spin) supplies such hits,
 * so short budgets can still learn that a longer one would catch their misses.
 *
 * With several requests in flight a wake-up delays not one completion but every one that lands
 * before the frontend is running again, and the device's interrupts cost the device CPU too: the
 * latency term grows by `queueWeight` for each request in flight beyond the first, up to
 * `depthCap`, and the longest spin grows with the depth (not on a CPU shared with the backend,
 * below: there blocking is what lets the requests progress). Under a deep queue the controller
 * therefore spins like 'poll'; at depth 1 it weighs one wake-up. A change of depth (a load that
 * steps from 1 to 32) triggers a decision at once.
 *
 * The waits themselves depend on the decision. A backend woken for every request (its vCPU
 * halting between them) serves each one slower than a backend kept busy by a frontend that turns
 * completions around at once: measured here against qemu-storage-daemon at depth 1, waits fall
 * from 40-55 µs to 11-16 µs only after ~200 ms of back-to-back requests, and stay there while the
 * frontend spins. A lone probe from a blocked state therefore only ever sees the slow, cold
 * device, and blocking confirms itself. So, given a clock (`startWait`'s `nowNs`, or the thread's
 * own after useThreadClock, as the polling engine drives it), the controller
 * runs *trials* at shallow depth: every wait is spun in full for `trialNs` (the first one starts
 * as soon as the loop is seen to be closed), and the decision at the end of a trial is taken on
 * its last, warm waits. A trial that ends blocked is tried again later, backing off from
 * `trialEveryNs` to `trialEveryMaxNs`. Trials need a closed loop (requests back to back, which is
 * what keeps a backend busy): a load the application paces never has one, and a trial ends once
 * its requests were idle for most of their time (judged from an eighth of `trialNs` on).
 *
 * At depth 1 the controller also tells a closed loop from a paced load (`resumed`: the share of
 * the time requests are in flight), and charges a wake-up's latency by `closedLoopWeight` in a
 * closed loop, where it is lost throughput, by `latencyWeight` otherwise. The window (32 waits) is
 * too short to see a tail of rare long waits, so the budget reaches the longest recent wait (hits,
 * and misses less a wake-up) where spinning for it is cheaper than blocking, and costs at most
 * `hysteresis` more over the window than the budget it replaces. None of this applies
 * while the process keeps being preempted (`preempted`): then the backend (or something else)
 * needs this CPU, and a spin takes its time from it; for the same reason a blocked wait is then
 * charged for one request in flight at any depth, and spins yield the CPU between checks
 * (`spinYield`), which lets the backend run at once instead of at the next preemption.
 * Trials and the closed-loop weight still apply there at depth 1 (spins yield), and a trial
 * starts afresh when the CPU turns shared.
 *
 * Where it blocks under a deep queue (a slow device: waits longer than a wake-up is worth), it
 * blocks for batches of completions (InterruptModeration). Where it spins, batching is not
 * tried: measured on a page-cache file backend at depth 32, whose completions come in bursts,
 * batched wake-ups cost 10% of the throughput that spinning keeps.
 */

import type { SpinPolicy } from './spin-policy.js';
import { adaptiveOptions, type AdaptiveOptions } from './adaptive-options.js';
import type { SpinYield } from './strategy.js';
import { BATCH_MIN_DEPTH, InterruptModeration } from './interrupt-moderation.js';

/** Waits without the starving rule after its spin ran out, first and at most (doubling). */
const STARVE_HOLDOFF_MIN = 16;
const STARVE_HOLDOFF_MAX = 4096;
/** A trial takes at least this many waits, and ends early when more than half of them miss. */
const TRIAL_MIN_WAITS = 16;
/**
 * A load is paced, not a closed loop, when requests are in flight for PACED_BUSY_FIFTHS / 5 of
 * the time or less: `closedLoop` is 0 there, and a trial whose resumes add up to less than that
 * ends (each idle spell counted up to IDLE_CLAMP_NS, so that one pause is no pace). The trial's
 * check compares busy * (5 - FIFTHS) with idle * FIFTHS in integers, which V8 keeps as small
 * integers (no heap number where it runs the check unoptimized) while busy stays under
 * 2^30 / 3 ns, 357 ms (31-bit small integers; 715 ms with 32-bit ones, as in Node's default
 * build): more than a default trial's 300 ms, so only a longer `trialNs` passes it.
 */
const PACED_BUSY_FIFTHS = 2;
/** The same as a share of the time: closedLoop rises from 0 at it to 1 at twice it. */
const PACED_BUSY_SHARE = PACED_BUSY_FIFTHS / 5;
/** A trial is judged paced from this fraction of trialNs on (#trialJudgedFromNs, set once). */
const OPEN_JUDGED_FROM = 1 / 8;
/** Hits over which the longest recent one is forgotten (by 1/e). */
const TAIL_MEMORY = 4096;
/** Longest idle time a resume counts (a paced load at 1,000 IOPS or more stays below it). */
const IDLE_CLAMP_NS = 1_000_000;
/** Resumes from idle before the duty cycle is trusted. */
const CLOSED_LOOP_MIN_RESUMES = 16;
/** A deferred decision runs at the start of a wait once it has waited this many for spare(). */
const DECISION_DUE_WAITS = 4;
/** No trial is running. */
const TRIAL_NONE = -1;

export class AdaptiveController implements SpinPolicy {
  readonly options: Readonly<AdaptiveOptions>;
  readonly #yieldRule: Readonly<SpinYield>;
  /** Sample values: a hit's wait (>= 0), or a miss as -(budget + 1) (censored). */
  readonly #samples: Float64Array;
  #count = 0;
  #next = 0;
  #sinceUpdate = 0;
  #budget = 0;
  #waitsSinceProbe = 0;
  #probeEvery = 0;
  #updateInterval = 0;
  #decisions = 0;
  readonly #sorted: Float64Array;
  /** Requests in flight at the start of recent waits (moving average), and at the last decision. */
  #depth = 1;
  #decidedDepth = 1;
  /** closedLoop, maxSpinNs and blockCostNs as last computed (#refreshDerived). */
  #closedLoop = 0;
  #maxSpin = 0;
  #blockCost = 0;
  /** Batched blocking under a deep queue. */
  readonly #moderation: InterruptModeration;
  /**
   * Of recent blocked waits under a deep queue, the fraction (moving average) whose wake-up found
   * every request completed: the device sat idle waiting for the frontend.
   */
  #starving = 0;
  /** This wait spins because of the rule above; after one such spin ran out, waits without it. */
  #starveSpin = false;
  #starveHoldoff = 0;
  #starveHoldoffNext = STARVE_HOLDOFF_MIN;
  /**
   * Trials: when the running one ends (TRIAL_NONE: none; NaN: none yet, the first wait of a
   * closed loop starts one), its waits and misses so far, the earliest start of the next, and
   * the gap before it.
   */
  #trialEndNs = NaN;
  #trialWaits = 0;
  #trialMisses = 0;
  /** What the running trial's resumes told: idle (spells of a wake-up or more, clamped) and busy. */
  #trialIdleNs = 0;
  #trialBusyNs = 0;
  /** When the running trial may first be judged open (ns). */
  #trialJudgedFromNs = Infinity;
  #trialNextNs = 0;
  #trialStartNs = -Infinity;
  #trialEveryNs = 0;
  #trials = 0;
  /** The CPU turned shared since the last wait; the running or last trial began shared. */
  #retrialPending = false;
  #trialShared = false;
  /** The clock at the latest change of depth: the current load's start. */
  #loadSinceNs = 0;
  /**
   * When the load since #loadSinceNs will have lasted trialEveryNs: computed at the change, so
   * a wait compares two stored times and does no arithmetic on them (in code V8 has not
   * optimised, a difference of two times is a new heap number per wait; an allocation test
   * caught 14-18 B per read from it).
   */
  #loadLastsFromNs = 0;
  /**
   * Moving averages, over the times the frontend went idle (nothing in flight) and resumed, of
   * how long it stayed idle and how long it had been busy before: their ratio tells a closed
   * loop (each request follows the last completion) from a paced load.
   */
  #idleAvg = 0;
  #busyAvg = 0;
  #resumes = 0;
  /** This wait: spun for a trial; spun in full as a probe (or the budget is the longest spin). */
  #trialSpin = false;
  #probing = false;
  /** The last reported wait was a hit. */
  #lastHit = false;
  /**
   * Preemptions per wait (moving average of the reports), in a cell: it holds 0 until the
   * thread's first preemption, whose fraction would change this object's shape then and
   * deoptimize every method that reads it (preemptions.ts, preemptionsPerWait).
   */
  readonly #shared = new Float64Array(1);
  /** #costsAt's results: in a cell, so that no fractional number is returned (see #costsAt). */
  readonly #costCell = new Float64Array(3);
  /** The longest recent wait a longer spin could catch (ns; hits, and misses less a wake-up), decaying by 1/TAIL_MEMORY per hit. */
  #tailNs = 0;
  /** The clock at the latest wait (ns; 0 without a clock). */
  #nowNs = 0;
  /** The budget when the current wait began: its hit or miss is judged against it. */
  #waitBudget = 0;
  /** Decisions wait for spare() (deferDecisions); one is due, since this many waits. */
  #deferDecisions = false;
  /** The clock (ms: `[0]` less the offset) of waits started without a time (useThreadClock). */
  #threadClock: Float64Array | undefined;
  #threadClockOffsetMs = 0;
  #decisionDue = false;
  #dueWaits = 0;

  constructor(options: Partial<AdaptiveOptions> = {}) {
    this.options = Object.freeze(adaptiveOptions(options));
    const o = this.options;
    this.#yieldRule = Object.freeze({
      lateNs: o.yieldLateNs,
      lateInARow: o.yieldLateInARow,
      holdNs: o.yieldHoldNs,
    });
    this.#samples = new Float64Array(this.options.window);
    this.#sorted = new Float64Array(this.options.window);
    // Optimistic start: the first waits are spun in full, so they are uncensored samples.
    this.#budget = this.options.maxSpinNs;
    this.#probeEvery = this.options.probeEvery;
    this.#updateInterval = this.options.updateEvery;
    this.#trialEveryNs = this.options.trialEveryNs;
    this.#moderation = new InterruptModeration(this.options.batching);
    this.#refreshDerived();
  }

  /** Trials started so far (the first wait's included), for tests and diagnostics. */
  get trials(): number {
    return this.#trials;
  }

  /** True while a trial spins every wait in full. */
  get inTrial(): boolean {
    return this.#trialEndNs >= 0;
  }

  /** How many times the budget was re-decided (sort + scan of the window), for tests and diagnostics. */
  get decisions(): number {
    return this.#decisions;
  }

  /** Current number of waits between probes (when the budget is below maxSpinNs). */
  get probeInterval(): number {
    return this.#probeEvery;
  }

  /** The budget the controller has settled on (0 = block at once), probes aside. */
  get budgetNs(): number {
    return this.#budget;
  }

  /** What a blocking (*Sync) wait spins before poll(2): the settled budget, capped. */
  blockingSpinNs(): number {
    return Math.min(this.#budget, this.#maxSpin);
  }

  /** True while the settled budget is above zero. */
  get spinning(): boolean {
    return this.#budget > 0;
  }

  /**
   * A wait starts with `inFlight` requests outstanding, at `nowNs` on a monotonic clock (without
   * one, the thread's latest reading after useThreadClock, or else no trials): how long to spin
   * before blocking. Sometimes a probe (maxSpinNs).
   */
  startWait(inFlight = 1, nowNs?: number): number {
    const spin = this.#spinFor(inFlight, nowNs);
    // The budget this wait's hit or miss is judged by (a decision may run before it ends).
    this.#waitBudget = this.#budget;
    return spin;
  }

  #spinFor(inFlight: number, nowNs: number | undefined): number {
    const o = this.options;
    // The time goes to a field, never into a variable that may also hold `undefined`: V8 would
    // then keep it as a heap number, a new one per wait.
    let clocked = true;
    if (nowNs !== undefined) this.#nowNs = nowNs;
    else if (this.#threadClock !== undefined)
      this.#nowNs = (this.#threadClock[0]! - this.#threadClockOffsetMs) * 1e6; // ms to ns
    else clocked = false;
    if (this.#decisionDue && ++this.#dueWaits > DECISION_DUE_WAITS) this.#update();
    if (this.#retrialPending) {
      this.#retrialPending = false;
      if (clocked) this.#retrialShared();
    }
    this.#starveSpin = false;
    this.#trialSpin = false;
    this.#probing = true;
    const depth = Math.min(Math.max(1, inFlight), o.depthCap);
    // A slow average: batches (N requests in flight, then N-1, ... 1) must not look like a
    // change of load; a step from depth 1 to 32 moves it within a few waits.
    this.#depth += (depth - this.#depth) / 16;
    // 'always' batches every deep wait instead of spinning or probing.
    if (o.batching === 'always' && inFlight >= BATCH_MIN_DEPTH) return 0;
    if (Math.abs(this.#depth - this.#decidedDepth) > this.#decidedDepth * 0.5 + 0.5) {
      // The load changed shape since the last decision: decide again at the next sample, and
      // make this wait a probe (a blocked controller gets samples from probes only).
      this.#decidedDepth = this.#depth;
      this.#refreshDerived();
      this.#sinceUpdate = this.#updateInterval;
      // What blocking did to the device under the old load says nothing about the new one.
      this.#starving = 0;
      this.#tailNs = 0;
      // Nor does a trial's: a running one ends without a decision, and counts as one that
      // ended blocked (the gap doubles), or a load that keeps changing depth would have a trial
      // every trialEveryNs. A new load that lasts gets a trial of its own (#inTrial).
      this.#loadSinceNs = this.#nowNs;
      this.#loadLastsFromNs = this.#nowNs + o.trialEveryNs;
      if (this.#trialEndNs >= 0) {
        this.#trialEndNs = TRIAL_NONE;
        this.#backOffTrials(this.#trialStartNs);
      }
      if (this.#budget < this.#maxSpin) {
        this.#waitsSinceProbe = 0;
        return this.#maxSpin;
      }
    }
    if (clocked && o.trialNs > 0) {
      if (inFlight < BATCH_MIN_DEPTH && this.#inTrial()) {
        this.#trialSpin = true;
        return this.#maxSpin;
      }
    }
    const max = this.#maxSpin;
    // Blocking starves this device (it completes whole bursts while we wake): spin the whole
    // wait, as 'poll' does, up to the longest spin; unless such spins stopped catching the
    // bursts (then block for a while, backing off).
    this.#starveSpin = false;
    if (inFlight >= BATCH_MIN_DEPTH && this.starvesDevice) {
      if (this.#starveHoldoff === 0) {
        this.#starveSpin = true;
        return max;
      }
      this.#starveHoldoff--;
    }
    // 'auto' batches the waits it blocks for anyway (budget 0).
    this.#moderation.consider(inFlight, this.#budget === 0);
    if (this.#budget >= max) return max;
    if (++this.#waitsSinceProbe >= this.#probeEvery) {
      this.#waitsSinceProbe = 0;
      return max;
    }
    this.#probing = false;
    return this.#budget;
  }

  /**
   * Whether the wait starting now (shallow) belongs to a trial: starts one when due, and ends
   * the running one with a decision on its latest waits.
   */
  #inTrial(): boolean {
    const o = this.options;
    const now = this.#nowNs;
    if (!(this.#trialEndNs >= 0)) {
      // The first trial comes at once (the optimistic start spins anyway); later ones only to a
      // blocked controller, when due. (Checked first: a spinning controller stops here.)
      if (this.#trialEndNs === TRIAL_NONE) {
        if (this.#budget > 0) return false;
        // A load (depth) that began after the last trial and has lasted trialEveryNs gets a
        // trial whatever the back-off, which earlier loads earned.
        const lastingNewLoad =
          this.#loadSinceNs > this.#trialStartNs && now >= this.#loadLastsFromNs;
        if (!lastingNewLoad && now < this.#trialNextNs) return false;
        // On a shared CPU too, where the trial's spins yield to the backend; but only at depth
        // 1, the one depth whose blocking is charged the closed-loop weight there.
        if (this.#closedLoop < 0.5 || !this.#closedLoopWeighed) return false;
        if (lastingNewLoad) this.#trialEveryNs = o.trialEveryNs;
      } else if (this.#closedLoop < 0.5 || !this.#closedLoopWeighed) {
        return false;
      }
      this.#trialShared = this.#spinsYield;
      this.#beginTrial(now);
      this.#trials++;
    }
    const hopeless =
      this.#trialWaits >= TRIAL_MIN_WAITS && this.#trialMisses * 2 > this.#trialWaits;
    // A paced load whose catch-up burst looked closed spins for nothing (BENCHMARKS.md, "A
    // paced load's trials").
    const loopOpened =
      this.#trialWaits >= TRIAL_MIN_WAITS &&
      now >= this.#trialJudgedFromNs &&
      this.#trialBusyNs * (5 - PACED_BUSY_FIFTHS) < this.#trialIdleNs * PACED_BUSY_FIFTHS;
    if (
      !hopeless &&
      !loopOpened &&
      (now < this.#trialEndNs || this.#trialWaits < TRIAL_MIN_WAITS)
    ) {
      this.#trialWaits++;
      return true;
    }
    this.#trialEndNs = TRIAL_NONE;
    // The window holds the trial's latest waits: decide on them now.
    this.#sinceUpdate = 0;
    this.#update();
    if (this.#budget > 0) {
      this.#trialEveryNs = o.trialEveryNs;
    } else {
      this.#backOffTrials(now);
    }
    return false;
  }

  /** The wait ended while spinning, `waitNs` after it started. */
  hit(waitNs: number): void {
    // A spin for a starving device caught its completion: the rule holds.
    if (this.#starveSpin) this.#starveHoldoffNext = STARVE_HOLDOFF_MIN;
    // (Judged against the budget the wait began with: a deferred decision may run during it.)
    const budget = this.#waitBudget;
    // Only a wait spun beyond the budget (a probe, a trial, a starving spin) can hit beyond it.
    if (waitNs > budget) {
      const o = this.options;
      if (budget > 0) {
        // Spinning too short: the decision may be stale, so probe (and decide) more often.
        this.#probeEvery = o.probeEvery;
        this.#updateInterval = o.updateEvery;
      } else if (waitNs < this.#blockCost * (1 - o.hysteresis)) {
        // Blocking, and this wait would clearly have been cheaper to spin for: look closer.
        this.#probeEvery = Math.max(o.probeEvery, this.#probeEvery >> 1);
        this.#updateInterval = o.updateEvery;
      } else {
        // Blocking, and spinning for this wait would have cost more than blocking: the
        // decision holds, probe less (a slow device's waits often end within maxSpinNs).
        this.#probeEvery = Math.min(o.probeEveryMax, this.#probeEvery * 2);
      }
    }
    // Only what a longer spin could catch: a turn delayed by GC must not hold the budget up.
    // (Two stores, not one of a conditional: mixing the argument with a computed number makes
    // V8 box the computed one.)
    const tail = this.#tailNs;
    if (waitNs > tail && waitNs <= this.#maxSpin) this.#tailNs = waitNs;
    else this.#tailNs = tail - tail / TAIL_MEMORY;
    this.#lastHit = true;
    this.#add(waitNs > 0 ? waitNs : 0);
  }

  /**
   * The wait outlasted a spin of `spunNs` (> 0) and ended by an interrupt, `waitedNs` after it
   * started (the wake-up included; optional). A wait with a zero budget teaches nothing and is
   * not reported.
   */
  miss(spunNs: number, waitedNs?: number): void {
    if (this.#starveSpin) {
      // Spinning the longest spin did not catch the device either: whatever the wake-ups cost
      // it, spinning does not save that here.
      this.#starveSpin = false;
      this.#starving = 0;
      this.#starveHoldoff = this.#starveHoldoffNext;
      this.#starveHoldoffNext = Math.min(STARVE_HOLDOFF_MAX, this.#starveHoldoffNext * 2);
    }
    const lastHit = this.#lastHit;
    this.#lastHit = false;
    if (spunNs <= 0) return;
    if (this.#trialSpin) this.#trialMisses++;
    // The missed wait's rough length (less a wake-up), when the strategy tells it.
    const missed = waitedNs === undefined ? NaN : waitedNs - this.options.wakeCostNs;
    // The tail learns from the waits it missed, too, as far as a longer spin could have caught
    // them (and not one the spin already outlasted).
    if (missed > spunNs && missed > this.#tailNs && missed <= this.#maxSpin) this.#tailNs = missed;
    if (this.#waitBudget > 0) {
      // A miss while spinning (not a probe from a blocked state): re-decide at the usual pace.
      this.#updateInterval = this.options.updateEvery;
      // At depth 1, after a hit, make the next wait a probe. A miss only says the wait was
      // longer than the budget; a device whose waits moved up a step past it would otherwise
      // look unreachable to every budget (no hit beyond it to impute from) and be blocked for.
      // (Not after a miss: a device with many long waits would be probed at every other wait;
      // nor for a wait not worth catching.)
      const worthCatching = !(missed >= this.#blockCost);
      if (
        !this.#probing &&
        lastHit &&
        worthCatching &&
        this.#decidedDepth < 1.5 &&
        this.#spinsForClosedLoop
      ) {
        this.#waitsSinceProbe = this.#probeEvery;
      }
    }
    this.#add(-(spunNs + 1));
  }

  /**
   * A request came after the frontend had nothing in flight for `idleNs`, after `busyNs` with
   * requests in flight before that (told before the next wait that is decided; see SpinPolicy).
   */
  resumed(idleNs: number, busyNs: number): void {
    // An application back within a wake-up's time was waiting on us, whatever the ratio: with
    // null-co's 3 µs waits at depth 1, a closed loop's own 2 µs between a completion and the
    // next request read as a duty cycle of 60%, half paced, and the budget lost its reach for
    // the daemon's slower waits (1-2% of waits blocked). Clamped: one long pause must not hide
    // a loop that is closed again for many requests.
    const idle = idleNs < this.options.wakeCostNs ? 0 : Math.min(idleNs, IDLE_CLAMP_NS);
    const busy = Math.max(0, busyNs);
    if (this.#trialEndNs >= 0) {
      this.#trialIdleNs += idle;
      this.#trialBusyNs += busy;
    }
    this.#idleAvg += (idle - this.#idleAvg) / 16;
    this.#busyAvg += (busy - this.#busyAvg) / 16;
    if (this.#resumes < CLOSED_LOOP_MIN_RESUMES) this.#resumes++;
    this.#refreshDerived();
  }

  /**
   * Over recent waits, the frontend was preempted `perWait` times per wait (involuntary context
   * switches): something else needs this CPU, most likely the backend (woken by our kick, it
   * preempts us). Then spins yield the CPU (spinYield); there is no reach for the tail, no
   * probe after a miss, a blocked wait is charged for one request in flight whatever the depth
   * (so is the longest spin), and the closed-loop weight and the trials apply at depth 1 only. Measured with
   * qemu-storage-daemon at depth 1: on the frontend's vCPU 0.4 (blocking) to 1.0 (spinning)
   * preemptions per wait, on a vCPU of its own 0.007-0.017.
   */
  preempted(perWait: number): void {
    const wasShared = this.cpuShared;
    this.#shared[0]! += (perWait - this.#shared[0]!) / 4;
    this.#refreshDerived();
    if (this.cpuShared === wasShared) return;
    // The cost model changed: decide again at the next sample.
    this.#sinceUpdate = this.#updateInterval;
    // Spins yield from now on: a trial whose spins did not yield is done again (at the next
    // wait, which brings the clock).
    if (this.#spinsYield) this.#retrialPending = true;
  }

  /** A trial (new, or started over) runs from `now` for trialNs. */
  #beginTrial(now: number): void {
    this.#trialEndNs = now + this.options.trialNs;
    this.#trialStartNs = now;
    this.#trialWaits = 0;
    this.#trialMisses = 0;
    this.#trialIdleNs = 0;
    this.#trialBusyNs = 0;
    this.#trialJudgedFromNs = now + this.options.trialNs * OPEN_JUDGED_FROM;
  }

  /** A trial ended blocked or was cut: the next comes a gap after `from`, and the gap doubles. */
  #backOffTrials(from: number): void {
    this.#trialNextNs = from + this.#trialEveryNs;
    this.#trialEveryNs = Math.min(this.options.trialEveryMaxNs, this.#trialEveryNs * 2);
  }

  /**
   * Whether a closed loop's wake-up is charged as lost throughput (and trials run): always on a
   * CPU of its own; on a shared one at depth 1 only, where spins yield (under a deep queue there
   * blocking lets the backend complete whole batches).
   */
  get #closedLoopWeighed(): boolean {
    return !this.cpuShared || (this.#spinsYield && this.#decidedDepth < 1.5);
  }

  /**
   * The CPU turned shared, now (#nowNs): a running trial that began with spins that did not yield
   * (they held the CPU the backend needed, so its waits say nothing of a yielding spin) starts
   * over; a closed loop whose last trial was such gets one at once. Once per trial, so a flag
   * that flaps cannot keep a trial running. (Measured, file backend on the frontend's vCPU
   * after a 'sleep-poll' run had left the daemon cold: without this, blocking confirmed itself
   * until the next trial, 2 s later; with it and the closed-loop weight at depth 1, 36.7-40.1k
   * IOPS in fresh processes against 26.7-35.1k.)
   */
  #retrialShared(): void {
    if (this.#trialShared) return;
    const now = this.#nowNs;
    if (this.#trialEndNs >= 0) {
      this.#beginTrial(now);
      this.#trialShared = true;
    } else if (this.#trialEndNs === TRIAL_NONE) {
      this.#trialNextNs = now;
    }
  }

  /**
   * Whether the probe after a miss and the reach for the tail apply: requests follow each other
   * back to back, so the backend can be kept busy, and the CPU is not shared with it. (Trials
   * and the closed-loop weight apply on a shared CPU too, at depth 1.) A paced load keeps the
   * plain cost model: there they would only spin more (measured: a paced 2,000 IOPS costs about
   * as much CPU spinning as blocking, and the target is event's CPU).
   */
  get #spinsForClosedLoop(): boolean {
    return this.#closedLoop >= 0.5 && !this.cpuShared;
  }

  /** True while spinning keeps being preempted (the CPU is shared with the backend). */
  get cpuShared(): boolean {
    return this.#shared[0]! > this.options.sharedCpuPreemptions;
  }

  /** SpinPolicy: the engine asks before kicking ahead. */
  backendSharesCpu(): boolean {
    return this.cpuShared;
  }

  /**
   * Spins yield the CPU while it is shared: the backend then runs as soon as it can, and the
   * spin checks the rings each time it gets the CPU back. (A yield that switches counts as an
   * involuntary switch, so the sign of sharing persists while yielding. A neighbour that is not
   * the backend and runs whole slices is caught by the engine: see spinForUsed.)
   */
  spinYield(): Readonly<SpinYield> | undefined {
    return this.#spinsYield ? this.#yieldRule : undefined;
  }

  get #spinsYield(): boolean {
    return this.cpuShared && this.options.yieldOnSharedCpu;
  }

  /**
   * How closed the loop is, from the share of the time requests are in flight (the duty
   * cycle; idle spells shorter than a wake-up count as none): 0 at PACED_BUSY_SHARE (40%) or
   * less (the application paces its requests, or does much else between them), 1 at twice that
   * or more (each request follows the last completion at once).
   */
  get closedLoop(): number {
    return this.#closedLoop;
  }

  /**
   * True while blocked waits under a deep queue keep finding the device idle: it finishes what
   * it was given in bursts (or faster than a wake-up), so every wake-up is time it waits for us.
   */
  get starvesDevice(): boolean {
    return this.#starving > 0.5;
  }

  /**
   * A blocked wait (batched or not) woke with `found` completions pending of `inFlight` requests.
   * Under a deep queue, found === inFlight means the device had run dry.
   */
  blockedWoke(found: number, inFlight: number): void {
    if (inFlight < BATCH_MIN_DEPTH) return;
    this.#starving += ((found >= inFlight ? 1 : 0) - this.#starving) / 4;
  }

  /** True while waits under a deep queue block for a batch of completions. */
  get batching(): boolean {
    return this.#moderation.active;
  }

  /** Batched wakes that found every request completed (the device had run dry), so far. */
  get batchStarvations(): number {
    return this.#moderation.starvations;
  }

  /** SpinPolicy: completions to ask one interrupt for with `inFlight` in flight (1: each). */
  batchSize(inFlight: number): number {
    return this.#moderation.size(inFlight);
  }

  /** SpinPolicy: the longest a batched wait for `count` completions should take (ns). */
  batchDeadlineNs(count: number): number {
    return this.#moderation.deadlineNs(count);
  }

  /** SpinPolicy: a batched wait woke (see InterruptModeration.woke). */
  batchWoke(found: number, asked: number, inFlight: number, elapsedNs: number): void {
    this.#moderation.woke(found, asked, inFlight, elapsedNs);
  }

  /** SpinPolicy: a batched wait outlasted its deadline; the batch shrinks. */
  batchLate(): void {
    this.#moderation.late();
  }

  /**
   * The window is too short to see a tail: a wait one time in a hundred longer than the rest is
   * missing from it most of the time, so a budget fitted to it misses that wait, blocks, and pays
   * a wake-up for every one of them. Where catching the longest recent wait is cheaper than
   * blocking for it (ski rental), the budget reaches that far.
   */
  #tailBudget(): number {
    if (!this.#spinsForClosedLoop) return 0;
    const wanted = this.#tailNs * (1 + this.options.margin);
    const b = Math.min(this.#maxSpin, wanted > 0 ? quantumAt(Math.ceil(4 * Math.log2(wanted))) : 0);
    return b < this.#blockCost ? b : 0;
  }

  /** The longest spin per wait at the current depth. */
  get maxSpinNs(): number {
    return this.#maxSpin;
  }

  /** What a blocked wait costs at the current depth: its CPU, and the latency it adds to requests. */
  get blockCostNs(): number {
    return this.#blockCost;
  }

  /**
   * Recomputes closedLoop, maxSpinNs and blockCostNs into fields, after a change of what they
   * depend on (the depth decided, the preemptions, the duty cycle). Read where they are used,
   * never through the getters: a fractional number a getter returns where V8 did not inline it is
   * a new heap number, and these are read at every wait and decision.
   */
  #refreshDerived(): void {
    // Each computed where it is stored: a helper returning it would box it where not inlined.
    const total = this.#busyAvg + this.#idleAvg;
    // The first few say little (a paced benchmark's first requests come back to back).
    if (total <= 0 || this.#resumes < CLOSED_LOOP_MIN_RESUMES) this.#closedLoop = 0;
    else {
      const share = this.#busyAvg / total;
      this.#closedLoop = Math.min(1, Math.max(0, (share - PACED_BUSY_SHARE) / PACED_BUSY_SHARE));
    }
    // Requests in flight whose wait a blocked wait lengthens. On a shared CPU, none but the one
    // the wake-up itself delays: there blocking is what lets the backend run, and a spin is what
    // delays the requests in flight (traced, daemon on the frontend's CPU at depth 32: 800 µs
    // probes and budgets, three waits in four missed; BENCHMARKS.md, 2026-12-05).
    const chargedDepth = this.cpuShared ? 1 : this.#decidedDepth;
    // Whole ns: the depth is a moving average, and #spinFor returns this (a fractional number
    // returned, V8 boxes where it is loaded, on every path: 16 B a wait, measured with unaligned
    // writes, whose edge reads and writes put the depth at ~2.5).
    this.#maxSpin = Math.round(this.options.maxSpinNs * chargedDepth);
    const o = this.options;
    // A closed loop adds the throughput one wake-up costs, once: deeper queues already charge
    // the wake-up's latency per request in flight. On a shared CPU only at depth 1, where spins
    // yield (measured, file backend on one vCPU: blocking 29k IOPS, yielding spins 40k); under
    // a deep queue there the backend completes whole batches while we block, which spins with
    // yields break up (depth 32: 94% of event's IOPS spinning, event best).
    const closed = this.#closedLoopWeighed
      ? Math.max(0, o.closedLoopWeight - o.latencyWeight) * this.#closedLoop
      : 0;
    const queued = o.queueWeight * (chargedDepth - 1);
    this.#blockCost = o.blockCpuNs + o.wakeCostNs * (o.latencyWeight + queued + closed);
  }

  /** The cost model (ns per wait) of budget `b` over the current window. */
  costOf(b: number): number {
    this.#costsAt(this.#sortedView(this.#effectiveSamples()), b, b, b);
    return this.#costCell[0]!;
  }

  /**
   * The mean cost of each of three budgets (whole numbers of ns) over `samples` (hits >= 0,
   * misses < 0), into #costCell[0..2], in one pass: a decision needs three. Neither they nor
   * the block cost is passed or returned: a fractional number that crosses a call V8 did not
   * inline is a new heap number (three per decision made 5-8 B per read at depth 1, measured
   * with --no-turbo-inlining).
   */
  #costsAt(samples: Float64Array, b0: number, b1: number, b2: number): void {
    const block = this.#blockCost;
    let t0 = 0;
    let t1 = 0;
    let t2 = 0;
    for (let i = 0; i < samples.length; i++) {
      const s = samples[i]!;
      const hit = s >= 0;
      t0 += hit && s <= b0 ? s : b0 + block;
      t1 += hit && s <= b1 ? s : b1 + block;
      t2 += hit && s <= b2 ? s : b2 + block;
    }
    const n = samples.length;
    const costs = this.#costCell;
    costs[0] = n === 0 ? 0 : t0 / n;
    costs[1] = n === 0 ? 0 : t1 / n;
    costs[2] = n === 0 ? 0 : t2 / n;
  }

  /**
   * The window, sorted (misses first), with each miss replaced by what the complete samples say
   * a wait that outlasted its spin lasts: the median of the hits longer than that spin. Without
   * this, a short budget would only ever see its own misses, count them as misses for every
   * longer budget too, and never learn that a slightly longer spin catches them. A miss that no
   * hit outlasts stays a miss (pessimistic: probes supply the long samples). Returns the count.
   */
  #effectiveSamples(): number {
    const n = this.#count;
    const sorted = this.#sortedView(n);
    sorted.set(n === this.#samples.length ? this.#samples : this.#samples.subarray(0, n));
    sorted.sort();
    let misses = 0;
    while (misses < n && sorted[misses]! < 0) misses++;
    if (misses === 0 || misses === n) return n;
    let imputed = false;
    for (let k = 0; k < misses; k++) {
      const spun = -sorted[k]! - 1;
      // First hit longer than the spin (hits are sorted ascending after the misses).
      let lo = misses;
      let hi = n;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if (sorted[mid]! > spun) hi = mid;
        else lo = mid + 1;
      }
      if (lo < n) {
        sorted[k] = sorted[lo + ((n - lo) >> 1)]!;
        imputed = true;
      }
    }
    if (imputed) sorted.sort();
    return n;
  }

  /** The first n sorted samples; no new view once the window is full. */
  #sortedView(n: number): Float64Array {
    return n === this.#sorted.length ? this.#sorted : this.#sorted.subarray(0, n);
  }

  #add(value: number): void {
    this.#samples[this.#next] = value;
    this.#next = (this.#next + 1) % this.#samples.length;
    if (this.#count < this.#samples.length) this.#count++;
    if (++this.#sinceUpdate >= this.#updateInterval) {
      this.#sinceUpdate = 0;
      if (this.#deferDecisions) {
        // Not re-armed while due: a short updateEvery must not put the decision off for good.
        if (!this.#decisionDue) this.#dueWaits = 0;
        this.#decisionDue = true;
      } else {
        this.#update();
      }
    }
  }

  /**
   * From now on a decision that falls due in hit() or miss() waits for spare() (or for
   * DECISION_DUE_WAITS more waits). For the polling engine, which calls spare() while a wait
   * finds the device still working (after the kick), or once a blocked wait is armed: a
   * decision (a sort and a scan of the window, 1.5-3 µs here) then no longer sits between a
   * completion and the next kick, except where a wait blocks at once at depth 1 (armed inside
   * the submission), where the wake-up costs far more. Measured at depth 1 on split CPUs, file
   * backend: decisions inline in hit() cost up to 10% of the IOPS (BENCHMARKS.md, "Decisions off
   * the path from a completion to the next kick").
   */
  deferDecisions(): void {
    this.#deferDecisions = true;
  }

  /**
   * A wait started without a time (startWait's `nowNs`) starts at `clock[0] - offsetMs`: the
   * polling engine passes the thread's clock cell, which it reads just before, since a time
   * passed to a method V8 does not inline, or returned by one, would be a new heap number per wait.
   */
  useThreadClock(clock: Float64Array, offsetMs: number): void {
    this.#threadClock = clock;
    this.#threadClockOffsetMs = offsetMs;
  }

  /** Time the caller can spend (the device is busy with the next request): decide if due. */
  spare(): void {
    if (this.#decisionDue) this.#update();
  }

  #update(): void {
    this.#decisionDue = false;
    const o = this.options;
    const n = this.#count;
    this.#decisions++;
    this.#decidedDepth = this.#depth;
    this.#refreshDerived();
    // Candidates: block at once, or spin just long enough to catch each observed hit.
    this.#effectiveSamples();
    const sorted = this.#sortedView(n);
    const blockCost = this.#blockCost;
    const maxSpin = this.#maxSpin;
    let bestBudget = 0;
    // Unary plus: V8 then knows the loop variable is a number whatever it knows of the field, and
    // keeps it unboxed (a loop variable it cannot type is a new heap number at each change).
    let bestCost = +blockCost;
    // With samples sorted, hits (>= 0) come last in ascending order; misses (< 0) first.
    let misses = 0;
    while (misses < n && sorted[misses]! < 0) misses++;
    let hitSum = 0;
    // Hits cluster, so most share the previous hit's quantum: reuse it without a logarithm.
    let quantum = 0;
    for (let i = misses; i < n; i++) {
      const t = sorted[i]!;
      if (t > maxSpin) break;
      hitSum += t;
      const wanted = t * (1 + o.margin);
      // The index, not the time, crosses the call: see #costsAt.
      if (wanted > quantum) quantum = quantumAt(Math.ceil(4 * Math.log2(wanted)));
      const b = Math.min(maxSpin, quantum);
      // Samples above index i (and every miss) are treated as misses at budget b.
      const hitsBelow = i - misses + 1;
      const cost = (hitSum + (n - hitsBelow) * (b + blockCost)) / n;
      // Strictly less: among equal costs the smallest budget wins (all hits cost the same).
      if (cost < bestCost) {
        bestCost = cost;
        bestBudget = b;
      }
    }
    const current = this.#budget;
    // The costs and comparisons below are computed whichever branch uses them: a call or an
    // operation V8 never saw run deoptimizes this method the first time it does (a spinning
    // decision that finds blocking best did in 8 of 40 processes), and until it is optimized
    // again the loop above makes heap numbers (up to 20 B per read, measured). The stores of a
    // first switch to blocking below can still do it, once per process.
    const spinningClearlyCheaper = bestBudget > 0 && bestCost < blockCost * (1 - o.hysteresis);
    // One pass for every cost below: the current budget's, the best one's, the tail's (the next
    // budget is always the current or the best one).
    const tail = this.#tailBudget();
    this.#costsAt(sorted, current, bestBudget, tail);
    const costs = this.#costCell;
    const blockingClearlyCheaper = blockCost < costs[0]! * (1 - o.hysteresis);
    let next = current;
    if (current === 0) {
      // Blocking: start spinning only if that is clearly cheaper.
      if (spinningClearlyCheaper) next = bestBudget;
    } else if (bestBudget === 0) {
      // Spinning: stop only if blocking is clearly cheaper.
      if (blockingClearlyCheaper) next = 0;
    } else {
      // Spinning either way: take the (quantised) best budget.
      next = bestBudget;
    }
    // Reaching for the tail must not cost more over the window than the budget it replaces.
    const nextCost = next === current ? costs[0]! : costs[1]!;
    const tailAffordable = costs[2]! <= nextCost * (1 + o.hysteresis);
    if (next > 0 && tail > next && tailAffordable) next = tail;
    const changed = next > 0 !== current > 0;
    this.#budget = next;
    // Turned to blocking outside a trial (the load or the device changed): a trial may show
    // that spinning pays again, once the usual gap has passed.
    const trialNext = this.#nowNs + this.#trialEveryNs;
    if (changed && next === 0 && this.#trialEndNs === TRIAL_NONE) this.#trialNextNs = trialNext;
    // Spinning again: batching waits for the next time it settles on blocking.
    if (next > 0) this.#moderation.stop();
    // Probes and decisions back off while they keep confirming the decision, and come back
    // when it changes.
    if (changed) {
      this.#probeEvery = o.probeEvery;
      this.#updateInterval = o.updateEvery;
    } else {
      this.#probeEvery = Math.min(o.probeEveryMax, this.#probeEvery * 2);
      if (next === current) {
        this.#updateInterval = Math.min(
          Math.max(o.updateEvery, o.window),
          this.#updateInterval * 2,
        );
      } else {
        this.#updateInterval = o.updateEvery;
      }
    }
  }
}

/** The steps 2^(k/4) for k in 0..127 (1 ns to 3.6 s), rounded: looked up per hit per decision. */
const QUANTA = Float64Array.from({ length: 128 }, (_, k) => Math.round(2 ** (k / 4)));

/**
 * Budgets move in steps of 2^(1/4) (~19%), so jitter in the waits does not move them: a wait of
 * `ns` > 0 rounds up to quantumAt(ceil(4 log2 ns)). Callers compute the index in place, so only
 * a small integer crosses the call (see #costsAt).
 */
function quantumAt(k: number): number {
  return k >= 0 && k < QUANTA.length ? QUANTA[k]! : Math.round(2 ** (k / 4));
}
