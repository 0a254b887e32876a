import type { SpinYield } from './strategy.js';

/**
 * When a polling strategy gives up spinning on one wait, and what it learns from each wait.
 * The engine passes spans in whole ns of at most 2^31 - 1 (spanNs: a longer one is passed as
 * that): small integers, which V8 passes as they are where a fractional number would be boxed.
 */
export interface SpinPolicy {
  /**
   * A wait starts (`inFlight` requests outstanding, used rings empty) at the thread's latest
   * clock reading (latestMs(), taken by the engine just before; not passed, since a time passed
   * to a method V8 does not inline is a new heap number per wait): ns to poll before blocking;
   * Infinity = never block.
   */
  startWait(inFlight: number): number;
  /**
   * Called once by the engine that will drive the policy: from now on a wait starts at
   * `clock[0] - offsetMs`, the thread's latest clock reading, read in place (optional; for a
   * policy that can also be driven with times). A cell, not a function: a time returned by a
   * call V8 did not inline would be a new heap number per wait.
   */
  useThreadClock?(clock: Float64Array, offsetMs: number): void;
  /** The wait ended while polling, `waitNs` after it started. */
  hit(waitNs: number): void;
  /** The wait outlasted `spunNs` of polling and ended by an interrupt `waitedNs` after it began. */
  miss(spunNs: number, waitedNs: number): void;
  /** What the blocking (*Sync) wait should spin before poll(2). */
  blockingSpinNs(): number;
  /**
   * A request came after nothing was in flight for `idleNs` (up to its arrival, before its
   * kick), which followed `busyNs` with requests in flight (optional). Told just before the
   * next wait the engine decides (or when a wait about to be decided finds nothing in flight),
   * not at once: a wait the look's quick spin
   * answers is not decided, so several may come together, oldest first (the newest
   * UNHEARD_RESUMES of them).
   */
  resumed?(idleNs: number, busyNs: number): void;
  /**
   * Over the latest waits, the JS thread was preempted `perWait` times per wait (optional;
   * reported about every PREEMPTION_SAMPLE waits of all devices; a drain that needed no wait
   * counts as one, as every drain did before waits were deferred).
   */
  preempted?(perWait: number): void;
  /**
   * How a spin should give the CPU to other runnable threads between checks of the rings
   * (sched_yield), where the backend shares this CPU; undefined: it keeps the CPU (optional).
   */
  spinYield?(): Readonly<SpinYield> | undefined;
  /**
   * Whether the policy takes the backend to share this thread's CPU (optional; without it the
   * engine judges from the preemption samples itself, as SHARED_CPU_PREEMPTIONS says).
   */
  backendSharesCpu?(): boolean;
  /**
   * The device has the requests in flight and this wait is decided: time off the path from a
   * completion to the next kick, for deferred bookkeeping (optional). Called once per loop turn
   * of a wait that did not end at once, and after arming a blocked wait (inside the submission
   * at depth 1, where the wake-up to come costs far more).
   */
  spare?(): void;
  /** A blocked wait woke with `found` completions pending of `inFlight` requests (optional). */
  blockedWoke?(found: number, inFlight: number): void;
  /**
   * Interrupt moderation (optional): when a wait blocks at once (a zero budget), how many
   * completions to ask one interrupt for on a queue with `inFlight` requests in flight; 1 = each.
   */
  batchSize?(inFlight: number): number;
  /** How long a batched wait for `count` completions may last before it drains what came (ns). */
  batchDeadlineNs?(count: number): number;
  /**
   * A batched wait for `asked` completions (on the queue that asked most) woke after
   * `elapsedNs`, with `found` completions pending of `inFlight` requests.
   */
  batchWoke?(found: number, asked: number, inFlight: number, elapsedNs: number): void;
  /** A batched wait reached its deadline before its batch filled. */
  batchLate?(): void;
}
