import { native, UV_READABLE, type PollHandle, type TurnHandle } from '../native.js';
import { kickAhead, type DeviceQueue } from '../devices/device.js';
import { drainTook } from './event.js';
import { DEFAULT_ADAPTIVE_OPTIONS } from './adaptive-options.js';
import { KickAheadTrial } from './kick-ahead-trial.js';
import { countWaitForPreemptions, preemptions, preemptionsPerWait } from './preemptions.js';
import {
  anyUsed,
  lastSpin,
  msToNs,
  spanMs,
  spanNs,
  SPIN_END,
  SPIN_HELD,
  spinForUsed,
} from './spin.js';
import { CLOCK_OFFSET_MS, clockCell, readClock, tickClock } from '../util/clock.js';
import { SleepInterval } from './sleep-interval.js';
import type { SpinPolicy } from './spin-policy.js';
import {
  RecentDrain,
  settleInBurst,
  type CompletionHost,
  type CompletionStrategy,
  type SpinYield,
} from './strategy.js';

/** How a loop turn waits when the rings are empty. */
export interface PollLoopOptions {
  /** Longest synchronous spin inside one event-loop turn (ns) before yielding to the loop. */
  sliceNs: number;
  /** If > 0: instead of spinning, sleep this long in native code once per turn (sleep-poll). */
  sleepNs: number;
  /**
   * Kick the device ahead of the next request when a polling turn finds it done (default true;
   * sleeps never do: they find completions long after the device went to sleep).
   */
  kickAhead?: boolean;
  /** A request this long after the device went idle counts against kicking ahead (ns; default KICK_AHEAD_GAP_NS). */
  kickAheadGapNs?: number;
  /**
   * Look for a lone request's completion right after the callbacks that made it, for up to this
   * long (ns), before leaving it to the next loop turn (0: never; see
   * CompletionOptions.microLookNs).
   */
  microSpinNs?: number;
}

type State = 'idle' | 'spinning' | 'armed' | 'parked' | 'sync' | 'stopped';

/**
 * Involuntary switches per wait, smoothed over the samples, above which a policy that does not
 * judge for itself (backendSharesCpu) is taken to share its CPU with the backend: the adaptive
 * controller's default (about one per wait there, next to none on a CPU of its own).
 */
const SHARED_CPU_PREEMPTIONS = DEFAULT_ADAPTIVE_OPTIONS.sharedCpuPreemptions;
/**
 * A kick ahead pays only if the next request follows at once: it keeps qemu-storage-daemon awake
 * for a request that comes 1-2 µs after it went idle (a closed loop's resubmission), not for one
 * that comes later. Requests that arrive this long or longer after the device went idle (a paced
 * load, JIT-cold code, an application that works between requests) count against kicking ahead.
 * Timed from the drain to the request's arrival (quietKick), before it goes on the ring and is
 * kicked: 1.0-1.5 µs at the median in a closed loop here, 2.3-2.7 µs at the 90th percentile.
 * Measured with a busy wait of D µs before each resubmission (null-co, depth 1, poll): a kick
 * ahead forced on gave 45-60% of the p50 without one for D up to 2 µs, 106-109% from 2.5 µs on;
 * this gap kicks ahead at D = 0-1 µs, part of the time at 1.5-2 µs (at 1.5 µs without the gain
 * in that sweep), and not from 2.5 µs (BENCHMARKS.md).
 */
export const KICK_AHEAD_GAP_NS = 3_000;

/**
 * Resumes from idle kept for the policy until a wait is decided (the newest): a closed loop
 * against a device that answers within the look's quick spin may decide no wait for many
 * requests. Each costs the adaptive controller ~16 ns when told, after the quick spin missed and
 * before the look's spin goes on: four bound that, and still sample the pace from every part
 * of a busy period, not only from the requests whose waits were decided.
 */
export const UNHEARD_RESUMES = 4;

function anyInFlight(queues: readonly DeviceQueue[]): boolean {
  for (let i = 0; i < queues.length; i++) if (queues[i]!.inFlight > 0) return true;
  return false;
}

/**
 * Requests whose completion the device owes: awaited (not eventq buffers) and published (not
 * waiting for a retry or descriptors). Only these can make a batch of completions.
 */
function awaitedFromDevice(queue: DeviceQueue): number {
  return Math.min(queue.inFlight, queue.vq.publishedInFlight);
}

/**
 * Whether a queue needs interrupts while nothing is awaited: where the device holds chains
 * (requests the caller stopped waiting for), or may be given some without the engine (see
 * filledByEngineOnly). Elsewhere they stay off until a wait blocks (#arm) or a blocking call
 * turns them on: turned on, they cost a wake-up per request with a device that signals the
 * completions it made while they were off as soon as they are back on (SPDK's vhost target
 * does: 0.5 calls per I/O at depth 1 with 'poll', each a wake-up of the event loop for nothing;
 * BENCHMARKS.md).
 */
function wantsInterruptsIdle(queue: DeviceQueue): boolean {
  return !queue.filledByEngineOnly || queue.vq.publishedInFlight > 0;
}

function inFlightCount(queues: readonly DeviceQueue[]): number {
  let n = 0;
  for (let i = 0; i < queues.length; i++) n += queues[i]!.inFlight;
  return n;
}

/**
 * The polling engine behind 'poll', 'sleep-poll' and 'adaptive': while requests are in flight,
 * interrupts are suppressed and every event-loop turn (in the check phase, as setImmediate's
 * callbacks, so I/O, timers and microtasks all run between turns) checks the used rings,
 * spinning synchronously for at most one slice. When the policy's budget for the current wait
 * runs out, interrupts are re-armed (with the usual re-check) and the libuv watchers on the call
 * eventfds take over; after that interrupt it polls again. With nothing in flight nothing runs.
 * A lone request made by the continuation of one a turn settled is looked for in that turn
 * (#runLooks), not a loop turn later.
 */
export class PollingCompletion implements CompletionStrategy {
  readonly name: string;
  readonly #host: CompletionHost;
  /**
   * Walked with indexed loops, not for-of: a for-of that was cold when V8 optimised its function
   * makes an iterator every time it runs (seen in heap profiles, up to 1.9 B a request).
   */
  readonly #queues: readonly DeviceQueue[];
  readonly #policy: SpinPolicy;
  readonly #sliceMs: number;
  /** sleep-poll's sleep (undefined: this engine spins). */
  readonly #sleep: SleepInterval | undefined;
  readonly #kickAhead: boolean;
  /** Requests' arrivals are timed (quietKick): for the kick ahead's gap and the policy's resumed. */
  readonly #timesArrivals: boolean;
  readonly #kickAheadGapMs: number;
  /** Whether kicking ahead does this device no harm, tried now and then (see KickAheadTrial). */
  readonly #kickAheadTrial: KickAheadTrial;
  readonly #polls: PollHandle[] = [];
  #state: State = 'idle';
  #busy = false;
  #ref = false;
  /**
   * Runs #turn in the event loop's next turn, where setImmediate would, without allocating an
   * Immediate per wait (at depth 1 one per request; native/turn.cc).
   */
  readonly #nextTurn: TurnHandle;
  #turnDue = false;
  /** A look (#look) for a lone request's completion is due (set only inside #runLooks). */
  #microDue = false;
  /** #runLooks is running microtasks: a lone request made there is looked for on their return. */
  #inLooks = false;
  readonly #microSpinNs: number;
  /** The look's first spin, before the policy decides: QUICK_LOOK_NS, or microSpinNs if less. */
  readonly #quickLookNs: number;
  /**
   * The current run of looks: nowMs() at its first look (-1: none) and at its latest look's
   * end. A run ends at the next loop turn of this engine (counted then), or when a look finds
   * it too old.
   */
  #microRunStart = -1;
  #microRunEnd = 0;
  /**
   * What the run's length is judged from (MICRO_RUN_MS): the start of the loop turn it
   * follows, whose spin held the loop too (-1: none).
   */
  #microRunFrom = -1;
  /** What the run's spins held the thread for themselves (see countPollingTurn). */
  #microRunHeld = 0;
  /** A hit seen by a polling turn, not yet reported (ns; -1: none). */
  #pendingHitNs = -1;
  /**
   * Resumes from idle the policy has yet to hear of, oldest first from #unheardFirst: idle and
   * busy ns, pair by pair (whole ns, see spanNs). Told at the next wait decided (#reportPending),
   * not between a completion and the next kick; past UNHEARD_RESUMES the oldest is dropped.
   */
  readonly #unheard = new Int32Array(2 * UNHEARD_RESUMES);
  /** Whether the policy hears of resumes at all (SpinPolicy.resumed; 'poll''s does not). */
  readonly #hearsResumes: boolean;
  #unheardFirst = 0;
  #unheardCount = 0;
  /** nowMs() at the start of the current wait, and its budget in ms. */
  #waitStart = 0;
  /** The next wait is decided at the next loop turn (see #nextWait). */
  #decidePending = false;
  /** The latest drain of all queues by this engine (not the sync wait's). */
  readonly #recentDrain = new RecentDrain();
  #budgetMs = 0;
  /** Completions the armed wait asked one interrupt for (EVENT_IDX); 0 when not batched. */
  #batchAsked = 0;
  /** Per queue (same order): the count it asked for, 0 where it asked for each completion. */
  readonly #askedPerQueue: Uint16Array;
  /** Fires if a batched wait takes too long (a request the device holds); refreshed, not re-made. */
  #deadline: NodeJS.Timeout | undefined;
  #deadlineMs = 0;
  /**
   * The preemption sample this strategy last passed to its policy (from 0: the thread's latest
   * reading goes to a new strategy's policy at its first wait), and the last it took into its
   * own smoothed reading (only those taken since it began: older ones are other devices' waits).
   */
  #policySample = 0;
  #ownSample = preemptions.sample;
  /**
   * Involuntary switches per wait, smoothed (1/4) over the samples this strategy took in; in a
   * cell, as `preemptionsPerWait` is (the first fraction comes at the first preemption).
   */
  readonly #preemptedPerWait = new Float64Array(1);
  /**
   * How often a request came soon after the device went idle (under #kickAheadGapMs),
   * smoothed; kicks ahead are made while it is at least a half. Starts at 1: a closed loop.
   */
  #resubmitsAtOnce = 1;
  /** nowMs() when nothing was left in flight (-1: something is). */
  #idleSince = -1;
  /**
   * nowMs() when the latest request that found this engine idle arrived (quietKick),
   * before it went on the ring and before any kick (-1: none since the last resume).
   */
  #arrivedAt = -1;
  /** nowMs() when requests were in flight again after idle, and how long that lasted. */
  #busySince = -1;
  #busyMs = 0;

  constructor(name: string, host: CompletionHost, policy: SpinPolicy, options: PollLoopOptions) {
    this.name = name;
    this.#host = host;
    this.#queues = host.queues;
    this.#policy = policy;
    this.#hearsResumes = policy.resumed !== undefined;
    policy.useThreadClock?.(clockCell, CLOCK_OFFSET_MS);
    this.#sliceMs = options.sliceNs / msToNs;
    this.#sleep = options.sleepNs > 0 ? new SleepInterval(options.sleepNs, MAX_TURN_NS) : undefined;
    this.#kickAhead = (options.kickAhead ?? true) && options.sleepNs === 0;
    this.#timesArrivals = this.#kickAhead || this.#hearsResumes;
    this.#kickAheadGapMs = (options.kickAheadGapNs ?? KICK_AHEAD_GAP_NS) / msToNs;
    this.#microSpinNs = options.sleepNs === 0 ? (options.microSpinNs ?? 0) : 0;
    this.#quickLookNs = Math.min(QUICK_LOOK_NS, this.#microSpinNs);
    this.#kickAheadTrial = new KickAheadTrial((harmless) => host.countKickAheadTrial?.(harmless));
    this.#askedPerQueue = new Uint16Array(host.queues.length);
    for (const queue of host.queues) {
      // New, with interrupts on (going idle later, only where wantsInterruptsIdle says).
      queue.vq.enableInterrupts();
      const onCall = (): void => this.#onCall(queue);
      const poll = native.pollStart(queue.callFd, UV_READABLE, () => settleInBurst(host, onCall));
      native.pollRef(poll, false);
      this.#polls.push(poll);
    }
    // Last: it holds #turn (and so this engine) strongly until stop() closes it.
    this.#nextTurn = native.turnCreate(this.#turn);
  }

  setBusy(busy: boolean): void {
    if (this.#state === 'stopped') return;
    this.#busy = busy;
    if (busy) {
      if (this.#state === 'idle' || this.#state === 'parked') this.#resume();
    } else if (this.#state === 'spinning' || this.#state === 'parked') {
      this.#toIdle();
    }
    this.#updateRef();
  }

  /**
   * Idle (nothing in flight, and not right after a drain of several completions): interrupts go
   * off before the request goes on the ring, not at the wait's decision (setBusy), so the kick
   * can go at once. A backend answers a kick that comes right after its last completion much
   * sooner (null-co, depth 1: 2.4 µs within 0.75 µs, 6-26 µs later; BENCHMARKS.md), and one
   * still running from that completion, or woken by the kick on this CPU, then completes the
   * request without signalling it. A wait then decided to block re-enables them with the usual
   * re-check; a request that did not go on the ring parks (with them on where wanted, see
   * wantsInterruptsIdle).
   */
  quietKick(): boolean {
    if (this.#state !== 'idle' && this.#state !== 'parked') return false;
    // The arrival times the application's pace, for the kick ahead and the policy (#resume);
    // a strategy that uses neither reads the clock only after a drain of several. A burst's
    // resubmissions are coming too: kicked as one burst (two kicks, not three).
    if (this.#timesArrivals) {
      tickClock();
      this.#arrivedAt = clockCell[0]! - CLOCK_OFFSET_MS;
      if (this.#recentDrain.burstBeforeLatest()) return false;
    } else if (this.#recentDrain.burstJustBefore()) {
      return false;
    }
    for (let i = 0; i < this.#queues.length; i++) {
      const vq = this.#queues[i]!.vq;
      if (!vq.broken) vq.disableInterrupts();
    }
    return true;
  }

  beforeBlockingWait(): void {
    if (this.#state === 'stopped') return;
    this.#cancelTurn();
    this.#kickAheadTrial.discard();
    // The blocking wait re-enables interrupts for every completion itself.
    this.#batchAsked = 0;
    this.#state = 'sync';
    this.#updateRef();
  }

  blockingSpinNs(): number {
    return this.#policy.blockingSpinNs();
  }

  spinYield(): Readonly<SpinYield> | undefined {
    return this.#policy.spinYield?.();
  }

  afterBlockingWait(drained: number): void {
    if (this.#state !== 'sync') return;
    this.#recentDrain.drained(drained);
    // The wait left interrupts enabled; a wait spanning it says nothing about the device.
    this.#state = 'idle';
    // Nor does its time say anything about the application's pace: the busy period it ended
    // (or the idle one it interrupted) is not reported; the next one starts afresh, now if its
    // drains submitted async requests that are still in flight.
    const inFlight = anyInFlight(this.#queues);
    this.#idleSince = -1;
    if (inFlight) tickClock();
    this.#busySince = inFlight ? clockCell[0]! - CLOCK_OFFSET_MS : -1;
    // Its drains settled requests whose callbacks have yet to run: decide after them.
    if (this.#busy && inFlight) this.#nextWait();
    this.#updateRef();
  }

  stop(): void {
    if (this.#state === 'stopped') return;
    this.#cancelTurn();
    this.#state = 'stopped';
    if (this.#deadline !== undefined) clearTimeout(this.#deadline);
    for (const poll of this.#polls) native.pollStop(poll);
    native.turnClose(this.#nextTurn);
  }

  #resume(): void {
    tickClock();
    const now = clockCell[0]! - CLOCK_OFFSET_MS;
    // Within 1 ms of a drain of several completions the rest of their resubmissions are coming
    // too (see #nextWait); otherwise (depth 1, or a new request) the wait is decided now, right
    // after the kick (quietKick). Asked at once, while `now` is the latest reading.
    const afterBurst = this.#recentDrain.burstBeforeLatest();
    // The request that found the engine idle arrived before it went on the ring (quietKick); a
    // reading older than the idle spell is not this request's.
    const arrived =
      this.#arrivedAt >= 0 && this.#arrivedAt >= this.#idleSince ? this.#arrivedAt : now;
    this.#arrivedAt = -1;
    if (anyInFlight(this.#queues)) {
      if (this.#idleSince >= 0) {
        // The application's pace: from the drain to the request's arrival, not to the end of its
        // kick, which takes 5-6 µs where the device must be woken (null-co, depth 1) and 0.5 µs
        // where it is awake. Counted to the kick's end, the requests after a kick that had to
        // wake the device came "late", kicks ahead stopped, every kick then had to wake it, and
        // kicks ahead stayed off for streaks: 28% of the chances to kick ahead were refused in a
        // closed loop (BENCHMARKS.md). The busy period starts there too: the kick is busy time.
        const idleMs = arrived - this.#idleSince;
        const atOnce = idleMs < this.#kickAheadGapMs ? 1 : 0;
        this.#resubmitsAtOnce += (atOnce - this.#resubmitsAtOnce) / 8;
        if (atOnce === 0) this.#kickAheadTrial.discard();
        if (this.#hearsResumes) {
          // Told to the policy with the next wait decided (#reportPending).
          const at = ((this.#unheardFirst + this.#unheardCount) % UNHEARD_RESUMES) * 2;
          spanMs[0] = idleMs;
          this.#unheard[at] = spanNs();
          spanMs[0] = this.#busyMs;
          this.#unheard[at + 1] = spanNs();
          if (this.#unheardCount < UNHEARD_RESUMES) this.#unheardCount++;
          else this.#unheardFirst = (this.#unheardFirst + 1) % UNHEARD_RESUMES;
        }
        this.#idleSince = -1;
        this.#busySince = arrived;
      } else if (this.#busySince < 0) {
        this.#busySince = arrived;
      }
    }
    this.#recentDrain.forget();
    if (afterBurst) this.#nextWait();
    else this.#startWait();
  }

  /** Nothing is in flight any more, from now. */
  #wentIdle(): void {
    if (this.#idleSince >= 0) return;
    tickClock();
    const now = clockCell[0]! - CLOCK_OFFSET_MS;
    this.#idleSince = now;
    this.#busyMs = this.#busySince >= 0 ? now - this.#busySince : 0;
  }

  /**
   * Right after a clock reading (#resume's: a lone request, kicked in its call). The first look
   * for its completion (#look) comes right after the callbacks that made it when those ran in
   * this engine's turn (a closed loop's continuation); elsewhere the wait is decided here.
   */
  #startWait(): void {
    this.#decidePending = false;
    if (!anyInFlight(this.#queues)) {
      this.#reportPending();
      this.#park();
      return;
    }
    // Only a request made by the continuations a turn runs (#runLooks) gets a look: one made
    // elsewhere (a timer's, a paced load's) comes long after the device went idle, and a look
    // at the next loop turn cost 'adaptive' ~5% more CPU per request than deciding here.
    if (this.#microSpinNs > 0 && this.#inLooks) {
      // Decided in the look, after its first check of the rings: between the kick and that check
      // every 0.1 µs counts (measured: 0.15 µs of work there cost adaptive 10% of its depth-1
      // IOPS against qemu-storage-daemon, which often answers within 0.5 µs). Where the backend
      // shares this CPU too (the look's spins yield to it): the kick ran it here, and its answer
      // is often there at the first check (one vCPU, depth 1: adaptive 111.8% of the IOPS it had
      // deciding in the call, at the p50 of 'poll', 9.2 against 10.6 µs; BENCHMARKS.md).
      this.#waitStart = clockCell[0]! - CLOCK_OFFSET_MS;
      this.#state = 'spinning';
      // Looked for as soon as the continuations return.
      this.#microDue = true;
      return;
    }
    if (this.#decide()) this.#schedule();
  }

  /**
   * After a turn, or a look, that settled what was in flight: runs the microtasks queued so far
   * (the settled promises' continuations; native.runMicrotasks) and looks for the completion
   * of the lone request they made, if any, right away; on a hit its drain settles it, and so
   * on. No loop turn between (a loop turn costs ~1.5 µs of a depth-1 round trip here) and
   * nothing allocated (a look queued with queueMicrotask cost ~150 B; running the turn again
   * from native code ~0.5 µs a look, a third of the IOPS against qemu-storage-daemon). The run
   * of looks is counted as one polling turn (#endMicroRun) and ends at MICRO_RUN_MS, so the
   * loop still turns at least that often; a miss leaves the wait to loop turns.
   * process.nextTick callbacks the continuations queue run when the turn returns, as Node runs
   * them after any callback: within the run, later continuations may run before them (Node's
   * own routine for both, process._tickCallback, leaves its async-context stack corrupt, and
   * the process aborted, when a tick threw in a run).
   */
  #runLooks(): void {
    if (this.#inLooks || anyInFlight(this.#queues)) return;
    this.#inLooks = true;
    try {
      for (;;) {
        native.runMicrotasks();
        // The rest of a burst the continuations made is kicked now, not at the turn's end
        // (settleInBurst's, which also ends the burst: later bursts in the run have no kick of
        // their own at once, only this one): a lone request among them is looked for next.
        this.#host.kickPending?.();
        if (!this.#microDue) break;
        this.#microDue = false;
        if (this.#state !== 'spinning' || !this.#look()) break;
      }
    } finally {
      this.#inLooks = false;
      this.#microDue = false;
      // Every normal way out leaves a turn due while spinning; should something in the run
      // throw (a drain's callbacks, say), the wait goes on at loop turns, the first deciding it.
      if (this.#state === 'spinning' && !this.#turnDue) this.#nextWait();
    }
  }

  /**
   * A look for a lone request's completion right after the callbacks that made it: a short
   * spin, then one as long as the policy allows (within microLookNs and the run). Returns
   * whether it settled completions (their continuations may make the next lone request).
   */
  #look(): boolean {
    // Read in place: nowMs() and latestMs() are not always inlined into this much code, and a
    // time they return uninlined is a new heap number (5.6 B a request, measured).
    tickClock();
    const before = clockCell[0]! - CLOCK_OFFSET_MS;
    if (this.#microRunStart < 0) {
      this.#microRunStart = before;
      this.#microRunEnd = before;
      this.#microRunHeld = 0;
    }
    const runLeftMs = this.#microRunFrom + MICRO_RUN_MS - before;
    if (runLeftMs <= 0) {
      // The run is over: the loop turns, and that turn decides and takes the wait.
      this.#endMicroRun();
      this.#nextWait();
      return false;
    }
    // First a short spin, whatever the policy would decide, before any bookkeeping.
    let answered = anyUsed(this.#queues);
    this.#microRunEnd = before;
    if (!answered) {
      answered = spinForUsed(this.#queues, this.#quickLookNs, this.spinYield(), true);
      this.#microRunHeld += lastSpin[SPIN_HELD]!;
      this.#microRunEnd = lastSpin[SPIN_END]!;
    }
    if (answered) {
      // Answered that soon: no wait to decide or to learn from, as at a turn whose deferred
      // decision finds completions. The policy hears of the waits that take longer (and, with
      // the next of them, of the resumes from idle before it), and this spin catches the short
      // ones whatever it decides for those: so a device this fast costs 'adaptive' no more than
      // 'poll' (the policy's bookkeeping between the kick and the look cost it 9-13% of poll's
      // depth-1 IOPS against qemu-storage-daemon), and a blocking policy does not block for them.
      this.#takeUnwaited(true);
      return true;
    }
    // Interrupts are off after quietKick; not if the request came within a burst's window
    // that closed before #resume looked (then the decision turns them off).
    if (!this.#decide(false, true)) return false; // blocked at once (armed)
    const ns = this.#lookSpinNs();
    if (ns === 0) {
      this.#endMicroRun();
      if (this.#waitStart + this.#budgetMs <= clockCell[0]! - CLOCK_OFFSET_MS) this.#arm();
      else this.#schedule();
      return false;
    }
    this.#policy.spare?.();
    readClock(); // the spin starts now
    const found = spinForUsed(this.#queues, ns, this.spinYield(), true);
    readClock();
    this.#microRunEnd = clockCell[0]! - CLOCK_OFFSET_MS;
    this.#microRunHeld += lastSpin[SPIN_HELD]!;
    if (found) {
      this.#found();
      return true;
    }
    this.#endMicroRun();
    this.#schedule();
    return false;
  }

  /**
   * A look's spin, from the thread's latest reading: within the wait's budget, the option, and
   * what is left of the run (so that the run, its last look's spin included, holds the loop for
   * MICRO_RUN_MS at most, plus the quick look). No time argument: in #look's code V8 may not
   * inline a call, and a time passed to one is a new heap number.
   */
  #lookSpinNs(): number {
    const now = clockCell[0]! - CLOCK_OFFSET_MS;
    const budgetLeftMs = this.#waitStart + this.#budgetMs - now;
    const runLeftMs = this.#microRunFrom + MICRO_RUN_MS - now;
    spanMs[0] = Math.min(budgetLeftMs, this.#microSpinNs / msToNs, runLeftMs);
    return spanNs();
  }

  /**
   * The loop turns (or is about to): a run of looks, if any, counts as one polling
   * turn: on the clock from its first look to the end of its last (the callbacks between them
   * included), held for what its spins held the thread for, as a loop turn's spin is.
   */
  #endMicroRun(): void {
    this.#microRunFrom = -1;
    if (this.#microRunStart < 0) return;
    const ms = this.#microRunEnd - this.#microRunStart;
    this.#microRunStart = -1;
    spanMs[0] = ms;
    const runNs = spanNs();
    spanMs[0] = Math.min(this.#microRunHeld, ms);
    this.#host.countPollingTurn?.(runNs, spanNs());
  }

  /**
   * After a drain that left requests in flight, after a blocking wait, or at the first
   * submission within 1 ms of a drain of several completions that emptied the device: the drained
   * requests' callbacks (promise continuations, which run after this returns) usually submit
   * again, so the next wait is decided at the next loop turn, when the requests in flight
   * include theirs. Decided now, it would see the dip between the drain and the resubmissions
   * instead of the application's depth (measured at depth 16: not one wait in 2,000 saw 16).
   * Until then the device is not asked to interrupt. A wait at depth 1 (the drain emptied the
   * device of its only request) starts in the next submission, right after its kick (made
   * there with interrupts off, see quietKick): decided in its look (#look) where the turn's
   * continuations made it, else in the submission, not a loop turn later. The cost: a blocked
   * wait after a drain is armed one loop turn later.
   */
  #nextWait(): void {
    if (!anyInFlight(this.#queues)) {
      this.#park();
      return;
    }
    for (let i = 0; i < this.#queues.length; i++) this.#queues[i]!.vq.disableInterrupts();
    this.#state = 'spinning';
    this.#decidePending = true;
    this.#schedule();
  }

  /**
   * Counts one wait (or one drain that needed none) towards the thread's preemption sample, and
   * passes a new reading to the policy. Drains without a wait count too, as every drain did
   * before waits were deferred: the 0.25 per wait threshold was measured that way.
   */
  #samplePreemptions(): void {
    // Counted whatever the policy: kicking ahead depends on it too (#backendSharesCpu).
    countWaitForPreemptions();
    if (preemptions.sample !== this.#ownSample) {
      this.#ownSample = preemptions.sample;
      this.#preemptedPerWait[0]! += (preemptionsPerWait[0]! - this.#preemptedPerWait[0]!) / 4;
    }
    if (preemptions.sample !== this.#policySample) {
      this.#policySample = preemptions.sample;
      this.#policy.preempted?.(preemptionsPerWait[0]!);
    }
  }

  /** The backend is taken to share this thread's CPU (the policy's view, else the samples'). */
  #backendSharesCpu(): boolean {
    return this.#policy.backendSharesCpu?.() ?? this.#preemptedPerWait[0]! > SHARED_CPU_PREEMPTIONS;
  }

  /**
   * The policy's budget for the wait starting now; false if it blocked at once (armed).
   * `suppressed`: interrupts are already off (a deferred decision), so a spin need not say so
   * again. The wait starts at the thread's latest clock reading, which every caller takes just
   * before: passed as an argument, the time would be boxed wherever V8 does not inline.
   */
  #decide(suppressed = false, startedInCall = false): boolean {
    // A wait decided in its look started at the call's kick (#startWait).
    const now = startedInCall ? this.#waitStart : clockCell[0]! - CLOCK_OFFSET_MS;
    this.#reportPending();
    this.#samplePreemptions();
    const budgetNs = this.#policy.startWait(inFlightCount(this.#queues));
    this.#state = 'spinning';
    this.#waitStart = now;
    this.#budgetMs = budgetNs / msToNs;
    if (budgetNs <= 0) {
      // Block at once: no spinning turn (a zero budget is what 'adaptive' settles on when waits
      // are longer than a wake-up).
      this.#arm(true);
      return false;
    }
    if (!suppressed)
      for (let i = 0; i < this.#queues.length; i++) this.#queues[i]!.vq.disableInterrupts();
    return true;
  }

  /**
   * A wait's hit noted by a polling turn goes to the policy before the next wait's news: the
   * resumes from idle kept since (#unheard, oldest first), then the wait's start.
   */
  #reportPending(): void {
    if (this.#pendingHitNs >= 0) {
      const ns = this.#pendingHitNs;
      this.#pendingHitNs = -1;
      this.#policy.hit(ns);
    }
    // Nothing is kept for a policy that does not hear resumes (#hearsResumes).
    for (; this.#unheardCount > 0; this.#unheardCount--) {
      const at = this.#unheardFirst * 2;
      this.#unheardFirst = (this.#unheardFirst + 1) % UNHEARD_RESUMES;
      this.#policy.resumed!(this.#unheard[at]!, this.#unheard[at + 1]!);
    }
  }

  #schedule(): void {
    if (this.#turnDue || this.#state === 'stopped') return;
    native.turnSchedule(this.#nextTurn);
    this.#turnDue = true;
  }

  #cancelTurn(): void {
    if (this.#turnDue) native.turnCancel(this.#nextTurn);
    this.#turnDue = false;
    this.#microDue = false;
    this.#decidePending = false;
  }

  /** One event-loop turn: polling, and with looks (microLookNs) the run of looks after it. */
  readonly #turn = (): void => settleInBurst(this.#host, this.#turnWork);

  readonly #turnWork = (): void => {
    this.#turnDue = false;
    if (this.#microSpinNs === 0) {
      this.#pollTurn();
      return;
    }
    this.#turnStartsRun();
    this.#pollTurn();
    this.#runLooks();
  };

  /** A turn's check of the rings: a spin (or a sleep) within the wait's budget, then the drain. */
  #pollTurn(): void {
    if (this.#state !== 'spinning') return;
    const queues = this.#queues;
    if (this.#decidePending) {
      this.#decidePending = false;
      if (anyUsed(queues)) {
        // Completions came before the wait began (the device ran meanwhile, as a daemon on this
        // CPU does): no wait to decide or to learn from, since any budget, zero included, takes
        // them at once.
        readClock(); // for the trial and the preemption sample
        this.#takeUnwaited(false);
        return;
      }
      if (!anyInFlight(queues)) {
        this.#reportPending();
        this.#park();
        return;
      }
      readClock(); // the wait starts now (#decide)
      if (!this.#decide(true)) return;
    }
    let found = anyUsed(queues);
    let polledFrom = -1;
    /** What the turn's spin or sleep held the thread for itself (see countPollingTurn). */
    let heldMs = 0;
    /** The sleep this turn asked for (ns; 0: it spun or did neither). */
    let sleptNs = 0;
    if (!found) {
      this.#policy.spare?.();
      tickClock();
      const before = clockCell[0]! - CLOCK_OFFSET_MS;
      const left = this.#waitStart + this.#budgetMs - before;
      if (left > 0) {
        polledFrom = before;
        const sleep = this.#sleep;
        if (sleep !== undefined) {
          sleptNs = sleep.ns;
          native.sleepNs(sleptNs);
          found = anyUsed(queues);
          // Not measured: a sleep counts as holding the thread for what it asked. What it
          // overshoots by is others' (the host waking a halted vCPU, whatever ran meanwhile);
          // the next sleeps are shortened for it (SleepInterval).
          heldMs = sleptNs / msToNs;
        } else {
          // Whole ns: a small integer is passed unboxed.
          spanMs[0] = Math.min(left, this.#sliceMs);
          const ns = spanNs();
          found = spinForUsed(queues, ns, this.spinYield(), true);
          // From the typed array, not a helper's return value: a time returned from a call V8
          // does not inline is a new heap number (a helper here cost 16 B per depth-1 read).
          heldMs = lastSpin[SPIN_HELD]!;
        }
      }
    }
    tickClock();
    const now = clockCell[0]! - CLOCK_OFFSET_MS;
    if (polledFrom >= 0) {
      const ms = now - polledFrom;
      spanMs[0] = ms;
      const turnNs = spanNs();
      if (sleptNs > 0) this.#sleep?.took(sleptNs, turnNs);
      spanMs[0] = Math.min(heldMs, ms);
      this.#host.countPollingTurn?.(turnNs, spanNs());
    }
    if (found) {
      this.#found();
      return;
    }
    if (!anyInFlight(queues)) {
      this.#park();
      return;
    }
    if (now - this.#waitStart >= this.#budgetMs) this.#arm();
    else this.#schedule();
  }

  /**
   * Drains completions that came before a wait began (no wait to decide or to learn from), right
   * after a clock reading. `kickAhead`: a lone request's look found them, so the device may be
   * about to idle (a turn's deferred decision finds a burst's). What the policy has yet to hear
   * (#reportPending) waits for the next wait that is decided, where the device is working on
   * the request: here it would sit between the completion and the next kick, where 0.1 µs
   * moves qemu-storage-daemon between its depth-1 speeds (paired A/Bs of the move: from 2.6
   * points behind to 5.4 ahead, within their spread; BENCHMARKS.md, "The policy told off the
   * path to the next kick").
   */
  #takeUnwaited(kickAhead: boolean): void {
    this.#kickAheadTrial.waitEnded();
    if (kickAhead) this.#kickAheadOfIdle();
    this.#samplePreemptions();
    this.#drainAll();
    if (this.#state === 'spinning') this.#nextWait();
  }

  /**
   * A loop turn ends the run of looks, if any, and a run that follows it (its drain's callbacks
   * make lone requests) is judged from here: the turn's spin held the loop too. Out of #turn,
   * and only with looks: a time stored there is a new heap number per turn.
   */
  #turnStartsRun(): void {
    this.#endMicroRun();
    // Read now: the thread's latest reading may be from before the loop's other callbacks.
    readClock();
    this.#microRunFrom = clockCell[0]! - CLOCK_OFFSET_MS;
  }

  /**
   * A wait found completions (a turn or a look), at the thread's latest clock reading: take
   * them. No time argument: a time passed to a call V8 does not inline is a new heap number,
   * and whether it inlines this one varies from run to run.
   */
  #found(): void {
    // Reported when the next wait is decided: after the drained requests' callbacks, so after
    // a lone resubmission's kick (quietKick), which a backend answers sooner the sooner it comes.
    spanMs[0] = clockCell[0]! - CLOCK_OFFSET_MS - this.#waitStart;
    this.#pendingHitNs = spanNs();
    this.#kickAheadTrial.waitEnded();
    this.#kickAheadOfIdle();
    this.#drainAll();
    if (this.#state !== 'spinning') return; // the device failed, or the sync API took over
    this.#nextWait();
  }

  /**
   * A polling turn found completions, before they are drained: if they are all the device owes
   * on every queue (it is about to be idle), kicks ahead the queues they came on, so that the
   * device is still awake for the application's next request (see kickAhead). Found by the
   * turn's first look rather than its spin they may be a few microseconds old, past the daemon's
   * window; the kick ahead then starts its wake-up a little before the request's own kick, for
   * the same eventfd write (kicking ahead only what a spin saw come gave the file backend's
   * depth-1 reads a quarter of the kicks ahead or fewer). Not while
   * requests mostly come long after the device went idle (a paced load: the backend is asleep
   * again by then), nor where the backend shares this CPU (the spins yield to it, or it is
   * taken to share it, see #backendSharesCpu): there the kick wakes a backend that takes our CPU
   * to find nothing (one vCPU, depth 1: poll lost 44% of its IOPS on null-co, 26% on the file
   * backend; BENCHMARKS.md, "Kicking ahead"). A shared CPU is known from the second preemption
   * sample since the strategy began on (the smoothed reading must pass 0.25 per wait).
   * Relies on the device taking a kick that finds nothing new as the hint it is (vhost-user
   * backends do: a kick is an eventfd write). Whether the next request is answered later for
   * it is tried now and then (KickAheadTrial): a device that does so gets kicks ahead in
   * the trials only.
   */
  #kickAheadOfIdle(): void {
    if (!this.#kickAhead || this.#resubmitsAtOnce < 0.5) return;
    // The device about to be idle first: at depth it rarely is, and this costs no policy calls.
    const queues = this.#queues;
    // A device that wants no kick (it polls its rings) is no chance: a trial there would
    // count samples of kicks ahead never made.
    let wanted = false;
    for (let i = 0; i < queues.length; i++) {
      const vq = queues[i]!.vq;
      const owed = awaitedFromDevice(queues[i]!);
      if (owed > vq.usedPending()) return;
      if (owed > 0 && !wanted) wanted = !vq.broken && vq.wantsNextKick();
    }
    if (!wanted || this.spinYield() !== undefined || this.#backendSharesCpu()) return;
    if (!this.#kickAheadTrial.chance()) return;
    for (let i = 0; i < queues.length; i++) {
      const queue = queues[i]!;
      if (awaitedFromDevice(queue) > 0 && kickAhead(queue)) this.#host.countKickAhead?.();
    }
  }

  #drainAll(): void {
    const queues = this.#queues;
    let drained = 0;
    for (let i = 0; i < queues.length; i++) {
      const queue = queues[i]!;
      if (queue.vq.hasUsed()) drained += this.#host.drain(queue);
    }
    this.#recentDrain.drained(drained);
  }

  /**
   * The budget ran out (or was zero, `fromStart`): ask for interrupts, re-check (the race), and
   * let libuv wait. Right after a clock reading (the turn's, or #decide's).
   */
  #arm(fromStart = false): void {
    let raced = false;
    let batch = 0;
    const batchSize = fromStart ? this.#policy.batchSize : undefined;
    const asked = this.#askedPerQueue;
    for (let i = 0; i < this.#queues.length; i++) {
      const queue = this.#queues[i]!;
      asked[i] = 0;
      if (queue.vq.broken) continue;
      // Only chains the device holds can complete: the count must stay reachable, or no
      // interrupt ever comes.
      const count =
        batchSize !== undefined && queue.vq.canBatchInterrupts
          ? batchSize.call(this.#policy, awaitedFromDevice(queue))
          : 1;
      if (count > 1) {
        asked[i] = count;
        if (queue.vq.enableInterruptsAfter(count)) raced = true;
        batch = Math.max(batch, count);
      } else if (queue.vq.enableInterrupts()) {
        raced = true;
      }
    }
    if (raced) {
      if (fromStart) {
        // Completions are already there: let a loop turn take them (no recursion here; a
        // call that arrives meanwhile is drained by #onCall).
        this.#schedule();
        return;
      }
      spanMs[0] = clockCell[0]! - CLOCK_OFFSET_MS - this.#waitStart;
      this.#policy.hit(spanNs());
      this.#kickAheadTrial.waitEnded();
      this.#drainAll();
      if (this.#state === 'spinning') this.#nextWait();
      return;
    }
    this.#state = 'armed';
    this.#batchAsked = batch > 1 ? batch : 0;
    if (this.#batchAsked > 0) this.#startDeadline(this.#policy.batchDeadlineNs?.(batch) ?? 1e6);
    this.#updateRef();
    this.#policy.spare?.();
  }

  #startDeadline(ns: number): void {
    // Whole powers of two of ms, so the timer is re-made only when the scale changes.
    const ms = 2 ** Math.max(0, Math.ceil(Math.log2(ns / msToNs)));
    if (this.#deadline !== undefined && ms === this.#deadlineMs) {
      this.#deadline.refresh();
      return;
    }
    if (this.#deadline !== undefined) clearTimeout(this.#deadline);
    this.#deadlineMs = ms;
    this.#deadline = setTimeout(this.#deadlineFired, ms);
    this.#deadline.unref();
  }

  /**
   * A stale firing (the batched wait ended, another kind of wait began) does nothing. Timers run
   * before libuv's poll callbacks, so after a long loop stall a batch that did fill may still be
   * waiting for its interrupt callback: that is a normal wake, not a late one.
   */
  readonly #deadlineFired = (): void => settleInBurst(this.#host, this.#onDeadline);
  readonly #onDeadline = (): void => {
    if (this.#state !== 'armed' || this.#batchAsked === 0) return;
    let filled = false;
    for (let i = 0; i < this.#queues.length; i++) {
      const asked = this.#askedPerQueue[i]!;
      if (asked > 0 && this.#queues[i]!.vq.usedPending() >= asked) filled = true;
    }
    this.#wake(!filled);
  };

  /** An armed wait ends: by an interrupt, or (`late`) by the deadline of a batched wait. */
  #wake(late: boolean): void {
    let found = 0;
    let inFlight = 0;
    for (let i = 0; i < this.#queues.length; i++) {
      const queue = this.#queues[i]!;
      found += queue.vq.usedPending();
      inFlight += awaitedFromDevice(queue);
    }
    this.#policy.blockedWoke?.(found, inFlight);
    const asked = this.#batchAsked;
    tickClock();
    spanMs[0] = clockCell[0]! - CLOCK_OFFSET_MS - this.#waitStart;
    const elapsedNs = spanNs();
    this.#kickAheadTrial.waitEnded();
    if (asked > 0) {
      this.#batchAsked = 0;
      if (late) this.#policy.batchLate?.();
      else this.#policy.batchWoke?.(found, asked, inFlight, elapsedNs);
    } else {
      spanMs[0] = this.#budgetMs;
      this.#policy.miss(spanNs(), elapsedNs);
    }
    // Drain as a polling turn does: while the callbacks submit more (setBusy), no new wait may
    // start, or it would be armed for a batch against a ring this drain has not emptied yet.
    this.#state = 'spinning';
    this.#drainAll();
    if (this.#state === 'spinning') this.#nextWait();
    this.#updateRef();
  }

  /**
   * Nothing in flight (although work may wait for memory or locks): no polling, and interrupts on
   * where the device holds chains (see #rearm).
   */
  #park(): void {
    this.#cancelTurn();
    this.#batchAsked = 0;
    this.#wentIdle();
    for (let i = 0; i < this.#queues.length; i++) {
      const queue = this.#queues[i]!;
      if (!queue.vq.broken && wantsInterruptsIdle(queue) && queue.vq.enableInterrupts()) {
        // Cannot happen with nothing in flight, but draining is always safe.
        this.#host.drain(queue);
      }
    }
    if (this.#state === 'stopped' || this.#state === 'sync') return;
    this.#state = this.#busy ? 'parked' : 'idle';
    this.#updateRef();
  }

  #toIdle(): void {
    this.#cancelTurn();
    this.#batchAsked = 0;
    if (!anyInFlight(this.#queues)) this.#wentIdle();
    const wasSpinning = this.#state === 'spinning';
    this.#state = 'idle';
    if (!wasSpinning) return;
    // Completions that came while interrupts were off raise none: take them now.
    for (let i = 0; i < this.#queues.length; i++) this.#rearm(this.#queues[i]!);
  }

  /**
   * Idle or parked: re-enables `queue`'s interrupts, draining what slipped in before, until none
   * did (the re-check). (Going idle, a drain may park the engine: parked, they are wanted on
   * just the same, so the loop goes on.) Stops if a drain takes nothing, as for a device that failed with
   * completions pending (its last settled request may be what made us idle).
   *
   * Not on a queue with nothing to signal (wantsInterruptsIdle).
   */
  #rearm(queue: DeviceQueue): void {
    if (!wantsInterruptsIdle(queue)) return;
    while (
      !queue.vq.broken &&
      (this.#state === 'idle' || this.#state === 'parked') &&
      queue.vq.enableInterrupts()
    ) {
      if (!drainTook(this.#host, queue)) return;
    }
  }

  #onCall(queue: DeviceQueue): void {
    if (this.#state === 'stopped') return;
    if (native.eventfdRead(queue.callFd) > 0) this.#host.countCall();
    if (this.#state === 'armed') {
      this.#wake(false);
      return;
    }
    // Spinning, parked, idle or inside a blocking wait: a hint the device sent anyway. Drain
    // with the interrupt re-check unless we are polling (the poll loop will see the rest).
    if (this.#state === 'spinning') {
      // A spurious call (interrupts were being turned off) ends no wait.
      if (queue.vq.hasUsed()) {
        readClock(); // for the trial
        this.#kickAheadTrial.waitEnded();
      }
      this.#host.drain(queue);
    } else if (this.#state !== 'sync') {
      if (drainTook(this.#host, queue)) this.#rearm(queue);
    }
  }

  /** Pending work keeps the process alive: a due turn while polling, the watchers otherwise. */
  #updateRef(): void {
    const want = this.#busy && (this.#state === 'armed' || this.#state === 'parked');
    if (want === this.#ref || this.#state === 'stopped') return;
    this.#ref = want;
    for (let i = 0; i < this.#polls.length; i++) native.pollRef(this.#polls[i]!, want);
  }
}

/** 'poll': while requests are in flight, never wait for an interrupt. */
export const POLL_POLICY: SpinPolicy = Object.freeze({
  startWait: () => Infinity,
  hit: () => {},
  miss: () => {},
  // Blocking waits spin up to 1 ms per round, then sleep in poll(2) (interrupts are on there).
  blockingSpinNs: () => 1_000_000,
});

export const DEFAULT_SPIN_SLICE_NS = 20_000;

/**
 * How long a look for a lone request's completion may spin (microLookNs): a wait the policy
 * allows that long is taken in the look, a longer one goes on at loop turns.
 */
export const DEFAULT_MICRO_LOOK_NS = 20_000;

/**
 * A lone request's look spins this long (whatever the last wait's budget) before the policy is
 * told of the wait: qemu-storage-daemon on null-co answers most depth-1 requests sooner, and the
 * policy then learns from the waits that take longer.
 */
const QUICK_LOOK_NS = 2_000;
/**
 * Longest run of looks (and the callbacks between them), with the loop turn it followed, before
 * the loop turns again. Per device: with N devices at depth 1, the loop may go N times this long
 * (and their turns' spins) without turning. At 3 µs a request, 16 of them
 * share a loop turn's ~1.5 µs.
 */
const MICRO_RUN_MS = 0.05;

/**
 * Longest spin (spinSliceNs) or sleep (sleepIntervalNs) one loop turn may take. The loop may be
 * held for at most 1 ms at a time, and the turn also drains, and its clock can be stalled by the
 * host. Measured here (a device 2 ms between completions, so every turn spins or sleeps in full):
 * at 0.9 ms, sleeps overshot to 0.94-0.97 ms at the median, 17% of turns took 1 ms or more and
 * spins got 1.4% such turns; at 0.7 ms the 99th percentile is 0.85 ms (sleep) and 0.95 ms (spin),
 * and turns of 1 ms or more are the host's stalls, as many as with the defaults (BENCHMARKS.md).
 */
export const MAX_TURN_NS = 700_000;

export function createPollCompletion(
  host: CompletionHost,
  sliceNs: number = DEFAULT_SPIN_SLICE_NS,
  kickAhead = true,
  microSpinNs = DEFAULT_MICRO_LOOK_NS,
): PollingCompletion {
  return new PollingCompletion('poll', host, POLL_POLICY, {
    sliceNs,
    sleepNs: 0,
    kickAhead,
    microSpinNs,
  });
}
