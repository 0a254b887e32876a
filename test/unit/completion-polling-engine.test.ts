import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setImmediate as nextTurn, setTimeout as sleep } from 'node:timers/promises';
import { POLL_POLICY, PollingCompletion, UNHEARD_RESUMES } from '../../src/completion/poll.js';
import type { SpinPolicy } from '../../src/completion/spin-policy.js';
import { AdaptiveCompletion } from '../../src/completion/adaptive.js';
import { AdaptiveController } from '../../src/completion/adaptive-controller.js';
import {
  DEFAULT_SPIN_YIELD,
  type CompletionHost,
  type SpinYield,
} from '../../src/completion/strategy.js';
import { drainTook, EventCompletion } from '../../src/completion/event.js';
import { spanMs, spanNs } from '../../src/completion/spin.js';
import {
  KICK_AHEAD_FIRST_TRIAL,
  KICK_AHEAD_TRIAL_BLOCK,
  KICK_AHEAD_TRIAL_EVERY_MIN,
} from '../../src/completion/kick-ahead-trial.js';
import type { DeviceQueue } from '../../src/devices/device.js';
import type { SplitVirtqueue } from '../../src/virtqueue/split.js';
import { native } from '../../src/native.js';
import { countPollingTurn, newDeviceStats } from '../../src/devices/stats.js';

/**
 * The polling engine on a fake queue: a device that completes what the test says, and an
 * application whose promise continuations resubmit what completed (as `await dev.readInto()`
 * in a loop does). The policy records what the engine tells it.
 */
class FakeQueue {
  inFlight = 0;
  used = 0;
  interrupts = true;
  readonly callFd = native.eventfd();
  /** Counts the kicks ahead (the engine writes it; nothing else kicks in these tests). */
  readonly kickFd = native.eventfd();
  /** What the device says of the next chain (SplitVirtqueue.wantsNextKick). */
  wantsKick = true;
  kicksAhead = 0;
  /** Completions drained, and resubmissions the "application" makes for each (0 = none). */
  drained = 0;
  resubmit = true;
  /** A failed device: its host drains nothing, and used entries stay. */
  failed = false;
  strategy: PollingCompletion | undefined;
  /** Every request completes while the engine spins for it (see #arrive). */
  autoComplete = false;
  /** Every request has completed by the time its call returns (a device faster than the call). */
  completeInCall = false;
  /** Or only the submissions (numbered from 0) this says. */
  completeInCallIf: ((submission: number) => boolean) | undefined;
  /** How long the application works before each submission (ms; overrides thinkMs). */
  thinkMsOf: ((submission: number) => number) | undefined;
  #submissions = 0;
  /** The device's other queues (a multi-queue device; see fakeHost). */
  peers: FakeQueue[] = [];
  /**
   * Ring checks a completion takes to appear (see #arrive) when the device was kicked ahead
   * since its last completion, and when it was not.
   */
  checksToComplete = { kickedAhead: 50, otherwise: 50 };
  kickedAhead = false;
  /** The kick ahead's trials' verdicts (countKickAheadTrial), counted on the first queue. */
  trialVerdicts: boolean[] = [];
  /** Completions to come while the engine spins (completeInSpin), and ring checks since. */
  #inSpin = 0;
  #checks = 0;

  /**
   * Completions made while the engine spins appear at the 50th check of the ring after they
   * were asked for (checksToComplete): after a turn's first look, inside its spin, as a
   * device's would.
   */
  #arrive(): void {
    if (this.#inSpin === 0 && !(this.autoComplete && this.inFlight > this.used)) return;
    const { kickedAhead, otherwise } = this.checksToComplete;
    if (++this.#checks < (this.kickedAhead ? kickedAhead : otherwise)) return;
    this.#checks = 0;
    this.kickedAhead = false;
    if (this.autoComplete) this.used = this.inFlight;
    else this.used += this.#inSpin;
    this.#inSpin = 0;
  }

  /** DeviceQueue.filledByEngineOnly. */
  filledByEngineOnly = true;
  /** Chains the device holds beyond the requests in flight (abandoned ones, event buffers). */
  heldBeyondRequests = 0;

  readonly vq = {
    broken: false,
    lastUsedIdx: 0,
    canBatchInterrupts: false,
    publishedInFlight: 0,
    hasUsed: (): boolean => {
      this.#arrive();
      return this.used > 0;
    },
    usedPending: (): number => this.used,
    enableInterrupts: (): boolean => {
      this.interrupts = true;
      return this.used > 0;
    },
    enableInterruptsAfter: (): boolean => {
      this.interrupts = true;
      return this.used > 0;
    },
    disableInterrupts: (): void => {
      this.interrupts = false;
    },
    wantsNextKick: (): boolean => this.wantsKick,
  };

  constructor() {
    const vq = this.vq as { publishedInFlight: number };
    Object.defineProperty(vq, 'publishedInFlight', {
      get: () => this.inFlight + this.heldBeyondRequests,
    });
  }

  close(): void {
    native.close(this.callFd);
    native.close(this.kickFd);
  }

  /** True while a submission runs (so the policy can tell a wait decided inside setBusy). */
  submitting = false;
  /**
   * With either set, a submission is made as the device makes it: the application works for
   * `thinkMs`, asks quietKick, and a kick made in the call takes `kickMs` (one that must wake
   * the device) before the request counts as in flight.
   */
  thinkMs = 0;
  kickMs = 0;

  submit(n: number): void {
    const submission = this.#submissions++;
    const thinkMs = this.thinkMsOf?.(submission) ?? this.thinkMs;
    if (thinkMs > 0 || this.kickMs > 0) {
      busyFor(thinkMs);
      if (this.strategy!.quietKick()) busyFor(this.kickMs);
    }
    this.inFlight += n;
    this.submitting = true;
    this.strategy!.setBusy(true);
    this.submitting = false;
    if (this.completeInCall || this.completeInCallIf?.(submission) === true) this.used += n;
  }

  complete(n: number): void {
    this.used += n;
  }

  /** `n` complete while the engine spins at its next turn (see #arrive). */
  completeInSpin(n: number): void {
    this.#inSpin += n;
    this.#checks = 0;
  }

  drain(): number {
    if (this.failed) return 0;
    const n = this.used;
    this.used = 0;
    this.vq.lastUsedIdx = (this.vq.lastUsedIdx + n) & 0xffff;
    this.inFlight -= n;
    this.drained += n;
    if (this.resubmit) {
      // Each completion resolves a promise; its continuation submits the next request.
      for (let i = 0; i < n; i++) void Promise.resolve().then(() => this.submit(1));
    }
    // The device is idle when every queue of it is (`peers`: the device's other queues).
    if (this.inFlight + this.peers.reduce((n, q) => n + q.inFlight, 0) === 0) {
      this.strategy!.setBusy(this.used > 0);
    }
    return n;
  }
}

interface Recorded {
  /** Requests in flight at each wait decided. */
  waits: number[];
  /** Whether each was decided inside a submission (synchronously) or at a loop turn. */
  inSubmit: boolean[];
  hits: number;
  /** Each resume after idle, as [idle, busy before it] in ns. */
  resumes: [number, number][];
  /** Whether the policy has spins yield (the test sets it), and how. */
  shared: boolean;
  yieldRule: SpinYield;
  /** Resumes heard before each wait decided (since the wait before it). */
  resumesPerWait: number[];
  /** Each spare() call: whether it came inside a submission, and whether completions waited. */
  spares: { inSubmit: boolean; used: boolean }[];
  /**
   * Each hit or resume the policy was told of: whether the device then worked on a request
   * (one in flight, no completion waiting to be drained), as it does after the next kick.
   */
  heardWhileDeviceWorks: boolean[];
}

/** A host whose queues are `q` and `more` (each told of the others as its peers). */
function fakeHost(q: FakeQueue, ...more: FakeQueue[]): CompletionHost {
  const all = [q, ...more];
  for (const one of all) one.peers = all.filter((other) => other !== one);
  return {
    queues: all.map(
      (one) =>
        ({
          vq: one.vq as unknown as SplitVirtqueue,
          kickFd: one.kickFd,
          callFd: one.callFd,
          get inFlight() {
            return one.inFlight;
          },
          get filledByEngineOnly() {
            return one.filledByEngineOnly;
          },
          drain: () => one.drain(),
          kick: () => {},
          abandonAll: () => {},
          usesMemory: () => false,
        }) satisfies DeviceQueue,
    ),
    drain: (queue) => queue.drain(),
    countCall: () => {},
    // Counted on the first queue (the device's count), checked per queue on the eventfds.
    countKickAhead: () => {
      q.kicksAhead++;
      q.kickedAhead = true;
    },
    countKickAheadTrial: (harmless) => {
      q.trialVerdicts.push(harmless);
    },
  };
}

function engine(
  budgetNs: number,
  // ownCpu: the policy says the backend does not share the CPU (the engine then ignores its own
  // preemption samples, which a loaded machine could push over the threshold).
  // microSpinNs: 0 by default here, so that each request of a closed loop takes a loop turn and
  // the tests can count turns (the looks have tests of their own).
  loop: { kickAhead?: boolean; sleepNs?: number; ownCpu?: boolean; microSpinNs?: number } = {},
  // Far above the library's 3 µs: the test runner's hooks make each await cost microseconds.
  kickAheadGapNs = 300_000,
): { q: FakeQueue; strategy: PollingCompletion; rec: Recorded } {
  const q = new FakeQueue();
  const rec: Recorded = {
    waits: [],
    inSubmit: [],
    hits: 0,
    resumes: [],
    shared: false,
    yieldRule: DEFAULT_SPIN_YIELD,
    spares: [],
    heardWhileDeviceWorks: [],
    resumesPerWait: [],
  };
  let resumesBefore = 0;
  const heard = (): void => {
    rec.heardWhileDeviceWorks.push(q.inFlight > 0 && q.used === 0);
  };
  const policy: SpinPolicy = {
    startWait: (inFlight) => {
      rec.waits.push(inFlight);
      rec.resumesPerWait.push(rec.resumes.length - resumesBefore);
      resumesBefore = rec.resumes.length;
      rec.inSubmit.push(q.submitting);
      return budgetNs;
    },
    hit: () => {
      rec.hits++;
      heard();
    },
    miss: () => {},
    blockingSpinNs: () => 0,
    resumed: (idleNs, busyNs) => {
      rec.resumes.push([idleNs, busyNs]);
      heard();
    },
    spinYield: () => (rec.shared ? rec.yieldRule : undefined),
    ...(loop.ownCpu === true ? { backendSharesCpu: () => false } : {}),
    spare: () => {
      rec.spares.push({ inSubmit: q.submitting, used: q.used > 0 });
    },
  };
  const host = fakeHost(q);
  const strategy = new PollingCompletion('test', host, policy, {
    sliceNs: 20_000,
    sleepNs: loop.sleepNs ?? 0,
    kickAheadGapNs,
    microSpinNs: loop.microSpinNs ?? 0,
    ...(loop.kickAhead !== undefined ? { kickAhead: loop.kickAhead } : {}),
  });
  q.strategy = strategy;
  return { q, strategy, rec };
}

/** Runs `body` on a fresh engine, then stops it and closes its eventfd. */
async function withEngine(
  budgetNs: number,
  body: (e: ReturnType<typeof engine>) => Promise<void>,
  loop: Parameters<typeof engine>[1] = {},
): Promise<void> {
  const e = engine(budgetNs, loop);
  try {
    await body(e);
  } finally {
    e.strategy.stop();
    e.q.close();
  }
}

test('engine: the wait after a drain is decided once the drained requests are resubmitted', () =>
  withEngine(Infinity, async ({ q, rec }) => {
    q.submit(8);
    await nextTurn();
    assert.deepEqual(rec.waits, [8], 'the first wait saw all 8 submitted');
    // Three complete while the engine spins; their continuations resubmit three.
    q.complete(3);
    await nextTurn();
    assert.equal(q.drained, 3);
    await nextTurn();
    assert.equal(rec.waits.at(-1), 8, `waits decided on ${rec.waits.join(', ')} in flight`);
    assert.equal(q.interrupts, false, 'spinning: no interrupts asked for');
  }));

test("engine: the policy's spare time: a spinning wait's turns (not between a completion and the next submission), and after arming a blocked wait", async () => {
  await withEngine(Infinity, async ({ q, rec }) => {
    q.submit(1); // depth 1: the wait is decided in the submission
    await nextTurn();
    assert.equal(rec.spares.length, 1, 'a spinning turn with the request in flight');
    q.complete(1); // drained next turn; the continuation resubmits
    await nextTurn();
    await nextTurn();
    assert.ok(rec.spares.length >= 2);
    assert.ok(
      rec.spares.every((s) => !s.inSubmit && !s.used),
      'never inside a submission, never with completions waiting to be drained',
    );
  });
  await withEngine(0, async ({ q, rec }) => {
    q.submit(1);
    // At depth 1 that is inside the submission (after its kick): a wake-up is to come anyway.
    assert.deepEqual(rec.spares, [{ inSubmit: true, used: false }], 'after arming, once');
    assert.equal(q.interrupts, true);
  });
});

test("adaptive: the engine's controller decides in spare time, not inside a hit or miss", () => {
  const q = new FakeQueue();
  const strategy = new AdaptiveCompletion(fakeHost(q));
  q.strategy = strategy;
  try {
    const c = strategy.controller;
    for (let i = 0; i < 8; i++) {
      c.startWait(1);
      c.miss(c.maxSpinNs, 300_000);
    }
    assert.equal(c.decisions, 0, 'a decision fell due, and waits');
    c.spare();
    assert.equal(c.decisions, 1);
  } finally {
    strategy.stop();
    q.close();
  }
});

test('engine: completions found before a deferred wait begins are drained without a wait', () =>
  withEngine(Infinity, async ({ q, rec }) => {
    q.submit(4);
    await nextTurn();
    const decided = rec.waits.length;
    const hits = rec.hits;
    q.complete(2);
    await nextTurn(); // the spin finds 2 and drains them; the next wait is deferred
    // The hit is reported when the next wait is decided, after the resubmissions' kick.
    assert.equal(rec.hits, hits);
    q.complete(1); // ... and the device completes one more before it is decided
    await nextTurn();
    assert.equal(q.drained, 3, 'drained at the deferred turn');
    await nextTurn();
    assert.equal(rec.waits.length, decided + 1, 'one wait decided, after both drains');
    assert.equal(rec.waits.at(-1), 4);
    assert.equal(rec.hits, hits + 1, 'one hit: none for a wait that never began');
  }));

test('engine: at depth 1 the wait is decided in the submission, not a turn later', () =>
  withEngine(Infinity, async ({ q, rec }) => {
    q.submit(1);
    assert.deepEqual(rec.inSubmit, [true]);
    q.complete(1);
    await nextTurn(); // found and drained (one completion); its continuation submits again
    assert.equal(q.drained, 1);
    assert.deepEqual(rec.waits, [1, 1]);
    assert.deepEqual(rec.inSubmit, [true, true], 'decided inside setBusy again');
  }));

test('engine: after a burst that emptied the queue, the wait waits for the whole burst to resubmit', () =>
  withEngine(Infinity, async ({ q, rec }) => {
    q.submit(8);
    await nextTurn();
    q.complete(8); // all at once, as a daemon on the frontend's CPU completes them
    await nextTurn();
    assert.equal(q.drained, 8);
    await nextTurn();
    assert.deepEqual(rec.waits, [8, 8], 'the wait after the burst saw all 8 again, not 1');
    assert.deepEqual(rec.inSubmit, [true, false], 'the second decided at a loop turn');
  }));

test('engine: going idle during a deferred decision drains what came, leaves interrupts on and decides nothing', () =>
  withEngine(Infinity, async ({ q, strategy, rec }) => {
    q.resubmit = false;
    q.submit(4);
    await nextTurn();
    q.complete(2);
    await nextTurn(); // drained 2; the next wait is deferred
    const decided = rec.waits.length;
    q.complete(1); // ... while interrupts are off: it raises none
    strategy.setBusy(false);
    assert.equal(q.interrupts, true);
    assert.equal(q.drained, 3, 'the completion that came meanwhile is taken at once');
    await nextTurn();
    await nextTurn();
    assert.equal(rec.waits.length, decided, 'no wait decided after going idle');
  }));

test('engine: going idle on a failed device with completions pending returns (its drains take nothing)', () =>
  withEngine(Infinity, async ({ q, strategy }) => {
    q.resubmit = false;
    q.submit(2);
    await nextTurn(); // spinning
    q.complete(1); // completed just before the backend died; never drained
    q.failed = true;
    // The device failed its requests: the last one settled makes it idle. The re-check must
    // not loop on the entry no drain will take (before, this never returned).
    strategy.setBusy(false);
    assert.equal(q.used, 1);
    assert.equal(q.interrupts, true);
  }));

test('drainTook: progress is what the drain consumed, even when the device adds entries meanwhile', () => {
  const q = new FakeQueue();
  const host = { drain: () => q.drain() } as unknown as CompletionHost;
  const queue = { vq: q.vq } as unknown as DeviceQueue;
  q.resubmit = false;
  q.inFlight = 4;
  q.complete(2);
  const realDrain = q.drain.bind(q);
  q.drain = () => {
    const n = realDrain();
    q.complete(2); // the device completes as many while we drain
    return n;
  };
  assert.equal(drainTook(host, queue), true, 'two consumed, though two are pending again');
  q.failed = true;
  assert.equal(drainTook(host, queue), false, 'a failed device consumes nothing');
  q.used = 0;
  q.failed = false;
  q.drain = realDrain;
  assert.equal(drainTook(host, queue), true, 'nothing pending is not a stall');
});

/** Blocks the thread for `ms` (the engine reads performance.now()). */
function busyFor(ms: number): void {
  const end = performance.now() + ms;
  while (performance.now() < end);
}

test('engine: a blocking wait ends the busy and idle accounting; the next period is measured afresh', () =>
  withEngine(Infinity, async ({ q, strategy, rec }) => {
    q.resubmit = false;
    q.submit(1);
    busyFor(20); // a long busy period before the blocking wait
    q.complete(1);
    await nextTurn();
    assert.equal(q.inFlight, 0);
    strategy.beforeBlockingWait();
    busyFor(5);
    strategy.afterBlockingWait(0);
    // The first submission after it: the idle and busy times around the wait say nothing.
    q.submit(1);
    assert.equal(rec.resumes.length, 0, 'no resume reported across the blocking wait');
    busyFor(2);
    q.complete(1);
    await nextTurn();
    q.submit(1);
    assert.equal(rec.resumes.length, 1);
    const [, busyNs] = rec.resumes[0]!;
    // This period's busy time (2 ms and a turn), not the 20 ms before the blocking wait.
    assert.ok(busyNs >= 2e6 && busyNs < 15e6, `busy ${busyNs} ns`);
    q.complete(1);
    await nextTurn();
  }));

test('engine: requests a blocking wait left in flight start a busy period of their own', () =>
  withEngine(Infinity, async ({ q, strategy, rec }) => {
    q.resubmit = false;
    q.submit(1);
    q.complete(1);
    await nextTurn(); // idle from here
    strategy.beforeBlockingWait();
    busyFor(20);
    // The wait's drains let queued async requests go (setBusy is not acted on inside it).
    q.submit(2);
    strategy.afterBlockingWait(0);
    busyFor(2);
    q.complete(2);
    await nextTurn();
    assert.equal(q.inFlight, 0);
    q.submit(1);
    // Told with the wait's decision: here (within 1 ms of a drain of two) at the next turn.
    await nextTurn();
    // (The first submission of all reports nothing: there was no idle time before it.)
    assert.equal(rec.resumes.length, 1, 'one resume: after the busy period the wait began');
    const [idleNs, busyNs] = rec.resumes[0]!;
    // Idle: a turn or so, not the 20 ms of the blocking wait; busy: from the wait's end.
    assert.ok(idleNs < 10e6, `idle ${idleNs} ns`);
    assert.ok(busyNs >= 2e6 && busyNs < 15e6, `busy ${busyNs} ns`);
    q.complete(1);
    await nextTurn();
  }));

/** Runs `body` with native.yieldThread replaced by `fake`, restored after. */
async function withFakeYield(fake: () => void, body: () => Promise<void>): Promise<void> {
  const realYield = native.yieldThread;
  native.yieldThread = fake;
  try {
    await body();
  } finally {
    native.yieldThread = realYield;
  }
}

test('engine: a late yield between yields in time (the host took the vCPU once) does not stop the yields', () =>
  withEngine(Infinity, async ({ q, rec }) => {
    q.resubmit = false;
    rec.shared = true;
    let yields = 0;
    const fake = (): void => {
      if (++yields % 2 === 1) busyFor(1); // every other yield is late
    };
    await withFakeYield(fake, async () => {
      q.submit(1);
      for (let i = 0; i < 10; i++) await nextTurn();
      assert.ok(yields >= 10, `${yields} yields in 10 turns`);
      q.complete(1);
      await nextTurn();
      assert.equal(q.drained, 1);
    });
  }));

test('engine: a spin yields the CPU between checks of the rings only while the policy says it is shared', () =>
  withEngine(Infinity, async ({ q, strategy, rec }) => {
    q.resubmit = false;
    let yields = 0;
    // The backend sharing the CPU runs in the yield, and completes the request.
    const fake = (): void => {
      if (++yields === 1) q.complete(1);
    };
    await withFakeYield(fake, async () => {
      q.submit(1);
      await nextTurn(); // a spin of one slice, on its own CPU: no yield
      assert.equal(yields, 0);
      assert.equal(q.drained, 0);
      rec.shared = true;
      await nextTurn();
      assert.equal(yields, 1, 'the spin yielded');
      assert.equal(q.drained, 1, 'and found what the backend completed meanwhile');
      assert.equal(strategy.spinYield(), rec.yieldRule, 'and tells the blocking wait the same');
    });
  }));

// Last in this file: late yields hold the yields of the whole thread. (Its first yield is in
// time, which clears any late count an earlier test left in the thread-wide state.)
test('engine: after yields that came back late in a row (a CPU-bound neighbour takes slices), spins keep the CPU for the hold', () =>
  withEngine(Infinity, async ({ q, rec }) => {
    q.resubmit = false;
    rec.shared = true;
    rec.yieldRule = { lateNs: 500_000, lateInARow: 2, holdNs: 30_000_000 };
    let yields = 0;
    let heldAt = NaN;
    const fake = (): void => {
      if (++yields === 1) return; // in time
      busyFor(1); // off the CPU for a millisecond
      if (yields === 3) heldAt = performance.now();
    };
    await withFakeYield(fake, async () => {
      q.submit(1);
      // (A late yield outlasts the 20 µs slice, so it ends its turn.)
      for (let i = 0; i < 10 && yields < 2; i++) await nextTurn();
      assert.equal(yields, 2, 'a yield in time, then a late one');
      busyFor(1); // JS between two spins does not break the row
      for (let i = 0; i < 4; i++) await nextTurn();
      assert.equal(yields, 3, 'two late yields in a row, then spins without');
      while (performance.now() - heldAt < 20) await nextTurn();
      assert.equal(yields, 3, 'still held 20 ms later');
      while (performance.now() - heldAt < 35) await nextTurn();
      assert.equal(yields, 4, 'one yield once the 30 ms hold is over: late, so held again at once');
      q.complete(1);
      await nextTurn();
      assert.equal(q.drained, 1, 'the spin still finds the completion');
    });
  }));

test('engine: a lone request is kicked with interrupts already off (quietKick), only from idle', () =>
  withEngine(Infinity, async ({ q }) => {
    assert.equal(q.interrupts, true, 'new: interrupts on');
    assert.equal(q.strategy!.quietKick(), true);
    assert.equal(q.interrupts, false, 'off before the request goes on the ring');
    q.submit(1);
    assert.equal(q.interrupts, false, 'spinning for it');
    // With a request in flight the kick goes with the batch.
    assert.equal(q.strategy!.quietKick(), false);
    q.complete(1);
    q.resubmit = false;
    await nextTurn();
    assert.equal(q.drained, 1);
    assert.equal(q.interrupts, false, 'idle, the device holds nothing: they stay off');
    assert.equal(q.strategy!.quietKick(), true, 'a lone request again');
  }));

test('engine: going idle, interrupts come back on only where the device holds chains or may be given some without the engine', async () => {
  // A closed loop at depth 1: not once on between requests (a device that signals the
  // completions it made while they were off, once they are back on, would wake us for each).
  await withEngine(Infinity, async ({ q }) => {
    let turnedOn = 0;
    const enable = q.vq.enableInterrupts;
    q.vq.enableInterrupts = () => {
      turnedOn++;
      return enable();
    };
    q.autoComplete = true;
    q.submit(1);
    for (let i = 0; i < 40 && q.drained < 20; i++) await nextTurn();
    assert.ok(q.drained >= 20, `drained ${q.drained}`);
    assert.equal(turnedOn, 0);
  });
  // A request the caller gave up on is still the device's: its completion must be noticed.
  await withEngine(Infinity, async ({ q, strategy }) => {
    q.resubmit = false;
    q.submit(1);
    await nextTurn();
    q.heldBeyondRequests = 1;
    q.inFlight = 0;
    strategy.setBusy(false);
    assert.equal(q.interrupts, true, 'the device holds a chain');
  });
  // A queue the driver fills by itself (virtio-scsi's control and event queues).
  await withEngine(Infinity, async ({ q }) => {
    q.filledByEngineOnly = false;
    q.resubmit = false;
    assert.equal(q.strategy!.quietKick(), true);
    q.submit(1);
    q.complete(1);
    await nextTurn();
    assert.equal(q.drained, 1);
    assert.equal(q.interrupts, true);
  });
});

test('engine: after quietKick, a wait decided to block re-arms, and a request that never went out parks', async () => {
  await withEngine(0, async ({ q }) => {
    assert.equal(q.strategy!.quietKick(), true);
    q.submit(1); // budget 0: armed at once
    assert.equal(q.interrupts, true, 'armed: interrupts on again');
  });
  await withEngine(Infinity, async ({ q }) => {
    assert.equal(q.strategy!.quietKick(), true);
    q.submit(0); // nothing went on the ring (it waits for memory or a lock)
    assert.equal(q.interrupts, false, 'parked; the device holds nothing, so they stay off');
  });
  await withEngine(Infinity, async ({ q }) => {
    q.filledByEngineOnly = false;
    assert.equal(q.strategy!.quietKick(), true);
    q.submit(0);
    assert.equal(q.interrupts, true, 'parked, on a queue the driver also fills: on');
  });
});

/** Four requests completed together and taken by one drain, which empties the device. */
async function drainBurstOfFour(q: FakeQueue): Promise<void> {
  q.resubmit = false;
  q.submit(4);
  await nextTurn();
  q.complete(4);
  await nextTurn();
  assert.equal(q.drained, 4);
}

test('engine: after a drain of several completions, the first resubmission is not kicked alone', async () => {
  // Timed: a stall of a millisecond between the drain and the call (a garbage collection, the
  // host) makes the burst look over, as it failed once in a full run: up to three tries. Kicked
  // alone, as before the burst's shared kick, every try fails.
  let shared = false;
  for (let attempt = 0; attempt < 3 && !shared; attempt++) {
    await withEngine(Infinity, async ({ q }) => {
      await drainBurstOfFour(q);
      if (q.strategy!.quietKick()) return;
      shared = true;
      assert.equal(q.interrupts, false, 'idle, the device holds nothing: still off');
      q.submit(1);
      q.complete(1);
      await nextTurn(); // a drain of one: depth 1
      assert.equal(q.strategy!.quietKick(), true);
    });
  }
  assert.ok(shared, 'the rest of the burst shares its kick');
});

test('engine: a request made well after a burst was drained is kicked alone again', () =>
  withEngine(Infinity, async ({ q }) => {
    await drainBurstOfFour(q); // nobody resubmits
    await new Promise((resolve) => setTimeout(resolve, 5));
    assert.equal(q.strategy!.quietKick(), true, 'the burst is over: a lone request');
    assert.equal(q.interrupts, false);
  }));

test('engine and event: resubmissions after a blocking wait that drained several share a kick', async () => {
  await withEngine(Infinity, async ({ strategy }) => {
    strategy.beforeBlockingWait();
    strategy.afterBlockingWait(3);
    assert.equal(
      strategy.quietKick(),
      false,
      'the wait drained a burst: its resubmissions share one',
    );
    strategy.beforeBlockingWait();
    strategy.afterBlockingWait(1);
    assert.equal(strategy.quietKick(), true, 'one completion: a lone request, kicked in its call');
  });
  const q = new FakeQueue();
  const event = new EventCompletion(fakeHost(q));
  try {
    event.afterBlockingWait(3);
    assert.equal(event.quietKick(), false);
    event.afterBlockingWait(1);
    assert.equal(event.quietKick(), true);
  } finally {
    event.stop();
    q.close();
  }
});

/**
 * One request that never completes, polled in turns of `sliceNs` with the device's stats
 * counting them; the 1000th ring check stalls the thread for `stallMs` inside a spin (as a
 * preemption or a host stall would). Runs `turns` loop turns.
 */
async function pollTurns(
  sliceNs: number,
  turns: number,
  stallMs: number,
): Promise<ReturnType<typeof newDeviceStats>> {
  const q = new FakeQueue();
  const stats = newDeviceStats();
  const host: CompletionHost = {
    ...fakeHost(q),
    countPollingTurn: (turnNs, heldNs) => countPollingTurn(stats, turnNs, heldNs),
  };
  const strategy = new PollingCompletion('test', host, POLL_POLICY, { sliceNs, sleepNs: 0 });
  q.strategy = strategy;
  let checks = 0;
  const hasUsed = q.vq.hasUsed;
  // The 1000th ring check of the run stalls the thread between two of the spin's clock reads,
  // as if it had been off the CPU.
  q.vq.hasUsed = () => {
    if (++checks === 1000) {
      const until = performance.now() + stallMs;
      while (performance.now() < until);
    }
    return hasUsed();
  };
  try {
    q.submit(1);
    for (let i = 0; i < turns; i++) await nextTurn();
  } finally {
    strategy.stop();
    q.close();
  }
  return stats;
}

test('engine: a polling turn counts what it held the thread for, not the time others had the CPU', async () => {
  const stretched = await pollTurns(200_000, 6, 5);
  assert.ok(stretched.pollingTurns >= 5, `${stretched.pollingTurns} turns`);
  assert.ok(stretched.pollingTurnsOver1ms >= 1, 'the loop waited 5 ms for a turn');
  assert.equal(stretched.pollingHoldsOver1ms, 0, 'but the turn held it for 0.2 ms');
  assert.ok(stretched.longestPollingTurnNs >= 5e6, `${stretched.longestPollingTurnNs} ns`);
  assert.ok(
    stretched.longestPollingHoldNs >= 0.2e6 && stretched.longestPollingHoldNs < 0.5e6,
    `${stretched.longestPollingHoldNs} ns held`,
  );
  // A turn that does spin for 3 ms (beyond the options' cap) is counted as held (the margin:
  // a scavenge or a preemption inside a spin counts as others').
  const long = await pollTurns(3_000_000, 3, 0);
  assert.ok(long.pollingHoldsOver1ms >= 1, `${long.pollingHoldsOver1ms} of ${long.pollingTurns}`);
  assert.ok(long.longestPollingHoldNs >= 1e6, `${long.longestPollingHoldNs} ns`);
});

/** Kicks ahead seen on the queue's kick eventfd since the last call (engine and counter agree). */
function kicksAhead(q: FakeQueue): number {
  const n = native.eventfdRead(q.kickFd);
  assert.equal(n, q.kicksAhead, 'every kick ahead is counted once');
  q.kicksAhead = 0;
  return n;
}

/** Turns until `q` has drained `count` in all (at most `limit` turns). */
async function turnsUntilDrained(q: FakeQueue, count: number, limit = 50): Promise<void> {
  for (let i = 0; i < limit && q.drained < count; i++) await nextTurn();
  assert.equal(q.drained, count, 'drained');
}

test('engine: a polling turn that finds the last awaited completion kicks the device ahead of the next request', () =>
  withEngine(Infinity, async ({ q }) => {
    q.submit(1);
    q.completeInSpin(1);
    await turnsUntilDrained(q, 1);
    assert.equal(kicksAhead(q), 1, 'the device went idle: kicked ahead once');
    // Depth 2 (with the resubmission), one completes: the device still has work.
    q.resubmit = false;
    q.submit(1);
    q.completeInSpin(1);
    await turnsUntilDrained(q, 2);
    assert.equal(q.inFlight, 1);
    assert.equal(kicksAhead(q), 0, 'a request still in flight: no kick ahead');
    q.completeInSpin(1);
    await turnsUntilDrained(q, 3);
    assert.equal(kicksAhead(q), 1);
    // Found by a turn's first look rather than its spin: kicked ahead too.
    q.submit(1);
    await nextTurn();
    q.complete(1);
    await turnsUntilDrained(q, 4);
    assert.equal(kicksAhead(q), 1, 'found at the first look');
    // A device that asks for no kicks (it polls) gets none ahead either.
    q.wantsKick = false;
    q.submit(1);
    q.completeInSpin(1);
    await turnsUntilDrained(q, 5);
    assert.equal(kicksAhead(q), 0, 'the device did not want the next kick');
  }));

test('engine: no kick ahead when turned off, when the spin yields to a backend on this CPU, or from sleeps', async () => {
  const oneRequest = async (q: FakeQueue): Promise<void> => {
    q.resubmit = false;
    q.submit(1);
    q.completeInSpin(1);
    await turnsUntilDrained(q, 1);
  };
  await withEngine(
    Infinity,
    async ({ q }) => {
      await oneRequest(q);
      assert.equal(kicksAhead(q), 0, 'kickAhead: false');
    },
    { kickAhead: false },
  );
  await withEngine(Infinity, async ({ q, rec }) => {
    rec.shared = true;
    await oneRequest(q);
    assert.equal(kicksAhead(q), 0, 'a yielding spin');
  });
  await withEngine(
    Infinity,
    async ({ q }) => {
      q.resubmit = false;
      q.submit(1);
      await nextTurn();
      q.complete(1); // found after a sleep
      await turnsUntilDrained(q, 1);
      assert.equal(kicksAhead(q), 0, 'a sleeping poll');
    },
    { sleepNs: 1000 },
  );
  // The control: the same at the defaults kicks ahead.
  await withEngine(Infinity, async ({ q }) => {
    await oneRequest(q);
    assert.equal(kicksAhead(q), 1);
  });
});

test('engine: kicks ahead stop while requests come long after the device went idle, and resume in a closed loop', () =>
  withEngine(Infinity, async ({ q }) => {
    q.resubmit = false;
    const ahead: number[] = [];
    for (let i = 1; i <= 10; i++) {
      q.submit(1);
      q.completeInSpin(1);
      await turnsUntilDrained(q, i);
      ahead.push(kicksAhead(q));
      await sleep(2); // a paced load: the next request comes 2 ms after the device went idle
    }
    assert.equal(ahead[0], 1, `kicks ahead per request: ${ahead.join(' ')}`);
    assert.deepEqual(ahead.slice(-4), [0, 0, 0, 0], `kicks ahead per request: ${ahead.join(' ')}`);
    // A closed loop again: each completion's continuation resubmits at once.
    q.resubmit = true;
    q.autoComplete = true;
    q.submit(1);
    await turnsUntilDrained(q, 40, 200);
    q.resubmit = false;
    await nextTurn();
    assert.ok(kicksAhead(q) >= 20, 'kicks ahead again');
  }));

test("engine: a request's own kick is not the application's pace: kicks ahead go on however long the kick takes", async () => {
  const closedLoop = async (q: FakeQueue): Promise<number> => {
    q.autoComplete = true;
    q.submit(1);
    await turnsUntilDrained(q, 40, 400);
    q.resubmit = false;
    await nextTurn();
    return kicksAhead(q);
  };
  // Each kick takes 2 ms, far over the gap (300 µs in these tests): counted to the kick's end,
  // every request came late and kicks ahead stopped after the first few (6 of 40).
  const ms = (ns: number): string => (ns / 1e6).toFixed(2);
  await withEngine(
    Infinity,
    async ({ q, rec }) => {
      q.kickMs = 2;
      const ahead = await closedLoop(q);
      assert.ok(ahead >= 38, `kicks ahead: ${ahead} of 40`);
      // The policy is told the same: idle up to the arrival, the kick busy time.
      assert.ok(rec.resumes.length >= 30, `resumes: ${rec.resumes.length}`);
      // Counted to the kick's end every idle spell would be 2 ms or more; a stall of this
      // machine (a few ms, now and then) may stretch one spell up to the next arrival.
      const long = rec.resumes.filter(([idleNs]) => idleNs >= 1e6);
      assert.ok(
        long.length <= rec.resumes.length / 10,
        `idle ${long.map(([idleNs]) => ms(idleNs)).join(', ')} ms: the kick is not idle time`,
      );
      for (const [, busyNs] of rec.resumes) {
        assert.ok(busyNs >= 2e6, `busy ${ms(busyNs)} ms: the kick is busy time`);
      }
    },
    { ownCpu: true },
  );
  // The control: the application itself works 2 ms before each request.
  await withEngine(
    Infinity,
    async ({ q, rec }) => {
      q.thinkMs = 2;
      const ahead = await closedLoop(q);
      assert.ok(ahead <= 10, `kicks ahead: ${ahead} of 40`);
      for (const [idleNs] of rec.resumes) assert.ok(idleNs >= 2e6, `idle ${ms(idleNs)} ms`);
    },
    { ownCpu: true },
  );
});

test('engine: no kick ahead once the preemption samples say the backend shares the CPU', async () => {
  const realSwitches = native.threadInvoluntarySwitches;
  // From the thread's real count, which earlier tests' samples started from.
  let switches = realSwitches();
  // One involuntary switch per wait: a backend on this CPU that preempts us at every kick.
  (native as { threadInvoluntarySwitches: () => number }).threadInvoluntarySwitches = () =>
    (switches += 256);
  try {
    await withEngine(Infinity, async ({ q }) => {
      q.autoComplete = true;
      q.submit(1);
      await turnsUntilDrained(q, 100, 1000);
      assert.ok(kicksAhead(q) >= 99, 'kicks ahead before the samples come');
      // One sample (256 waits) gives at most 0.25 smoothed, which does not pass 0.25 per wait:
      // so the first 100 waits kick ahead whenever the last sample was taken. Two more pass it.
      await turnsUntilDrained(q, 1000, 10_000);
      kicksAhead(q);
      await turnsUntilDrained(q, 1100, 1000);
      q.resubmit = false;
      await nextTurn();
      assert.equal(kicksAhead(q), 0, 'none once the CPU is taken to be shared');
    });
  } finally {
    (native as { threadInvoluntarySwitches: () => number }).threadInvoluntarySwitches =
      realSwitches;
  }
});

test('engine: on a device of two queues, no kick ahead while the other queue still owes a completion; then both that had completions', async () => {
  const a = new FakeQueue();
  const b = new FakeQueue();
  const strategy = new PollingCompletion('test', fakeHost(a, b), POLL_POLICY, {
    sliceNs: 20_000,
    sleepNs: 0,
    kickAheadGapNs: 300_000,
  });
  a.strategy = strategy;
  b.strategy = strategy;
  a.resubmit = false;
  b.resubmit = false;
  try {
    a.submit(1);
    b.submit(1);
    a.completeInSpin(1);
    await turnsUntilDrained(a, 1);
    assert.equal(b.inFlight, 1);
    assert.equal(native.eventfdRead(a.kickFd), 0, 'queue b still owes one: the device is not idle');
    assert.equal(a.kicksAhead, 0);
    // Both owe one and both have completed when a turn looks: each is kicked ahead.
    a.submit(1);
    await nextTurn();
    a.complete(1);
    b.complete(1);
    await turnsUntilDrained(b, 1);
    await turnsUntilDrained(a, 2);
    assert.equal(native.eventfdRead(a.kickFd) + native.eventfdRead(b.kickFd), 2);
    assert.equal(a.kicksAhead, 2, 'the device counted both');
  } finally {
    strategy.stop();
    a.close();
    b.close();
  }
});

test('engine: kicks ahead stop where the trials find the next completion much later for them, and go on where it comes sooner', async () => {
  const trialEnd = KICK_AHEAD_FIRST_TRIAL + 4 * KICK_AHEAD_TRIAL_BLOCK + 1;
  for (const harmed of [true, false]) {
    await withEngine(
      Infinity,
      async ({ q }) => {
        q.autoComplete = true;
        // ~0.3 µs against ~100 µs of spinning (the harmed device answers a kicked-ahead one late).
        q.checksToComplete = harmed
          ? { kickedAhead: 20_000, otherwise: 50 }
          : { kickedAhead: 50, otherwise: 20_000 };
        q.submit(1);
        await turnsUntilDrained(q, trialEnd, 200 * trialEnd);
        const before = kicksAhead(q);
        assert.ok(
          before >= KICK_AHEAD_FIRST_TRIAL,
          `${before} kicks ahead before the first verdict`,
        );
        // Harm is acted on once a second trial confirms it.
        assert.deepEqual(q.trialVerdicts, [true], 'the first trial told the host');
        // The next trial: soon after one against; twice as far after one for.
        const next = (harmed ? 1 : 2) * KICK_AHEAD_TRIAL_EVERY_MIN;
        const confirmed = trialEnd + next + 4 * KICK_AHEAD_TRIAL_BLOCK;
        await turnsUntilDrained(q, confirmed, 200 * next);
        kicksAhead(q);
        assert.deepEqual(q.trialVerdicts, [true, !harmed]);
        await turnsUntilDrained(q, confirmed + 2000, 200 * 2000);
        q.resubmit = false;
        await nextTurn();
        const after = kicksAhead(q);
        if (harmed) {
          // Only a later trial's taken blocks (one trial per ~1,100 chances).
          assert.ok(after <= 4 * KICK_AHEAD_TRIAL_BLOCK, `${after} kicks ahead in 2,000 requests`);
          assert.ok(q.trialVerdicts.length >= 3 && q.trialVerdicts.slice(1).every((v) => !v));
        } else {
          assert.ok(after >= 1900, `${after} kicks ahead in 2,000 requests`);
          assert.ok(q.trialVerdicts.every((v) => v));
        }
      },
      { ownCpu: true },
    );
  }
});

test('engine: a device that wants no kick gives the kick ahead no chance, and no trial runs there', () =>
  withEngine(
    Infinity,
    async ({ q }) => {
      const trialEnd = KICK_AHEAD_FIRST_TRIAL + 4 * KICK_AHEAD_TRIAL_BLOCK + 1;
      q.wantsKick = false;
      q.autoComplete = true;
      q.submit(1);
      await turnsUntilDrained(q, trialEnd, 200 * trialEnd);
      q.resubmit = false;
      await nextTurn();
      assert.equal(kicksAhead(q), 0);
      assert.deepEqual(q.trialVerdicts, [], 'no trial on a device that polls its rings');
    },
    { ownCpu: true },
  ));

test('engine: a blocking call after a chance to kick ahead gives the trial no sample', () =>
  withEngine(
    Infinity,
    async ({ q, strategy }) => {
      q.autoComplete = true;
      // Harmed by kicks ahead, as above: samples would make a verdict against them.
      q.checksToComplete = { kickedAhead: 20_000, otherwise: 50 };
      q.submit(1);
      await turnsUntilDrained(q, KICK_AHEAD_FIRST_TRIAL - 1, 200 * KICK_AHEAD_FIRST_TRIAL);
      kicksAhead(q);
      // The trial's first chance, then each chance followed by a *Sync call's wait: the chances
      // up to the one that ends the trial.
      q.resubmit = false;
      await turnsUntilDrained(q, KICK_AHEAD_FIRST_TRIAL, 200);
      for (let i = 1; i <= 4 * KICK_AHEAD_TRIAL_BLOCK; i++) {
        strategy.beforeBlockingWait();
        strategy.afterBlockingWait(0);
        q.submit(1);
        await turnsUntilDrained(q, KICK_AHEAD_FIRST_TRIAL + i, 200);
      }
      // The trial ran (its taken blocks, and the chance that ended it) and found nothing to judge.
      assert.equal(kicksAhead(q), 2 * KICK_AHEAD_TRIAL_BLOCK + 1);
      assert.deepEqual(q.trialVerdicts, [], 'no verdict without samples');
    },
    { ownCpu: true },
  ));

/** The adaptive controller, counting the waits that ended while polling. */
class CountingController extends AdaptiveController {
  hits = 0;
  override hit(waitNs: number): void {
    this.hits++;
    super.hit(waitNs);
  }
}

/** One turn of the loop; then a wait that blocked (interrupts on) is completed with its call. */
async function serveTurn(q: FakeQueue): Promise<void> {
  await nextTurn();
  if (q.interrupts && q.inFlight > q.used) {
    q.complete(q.inFlight - q.used);
    native.eventfdWrite(q.callFd);
  }
}

/**
 * Turns until `q` has drained `count` in all; a wait that blocked (interrupts on, requests not
 * complete) is completed with its call, as a device would: the fake completes only while spun for.
 */
async function serveUntilDrained(q: FakeQueue, count: number, limit: number): Promise<void> {
  for (let i = 0; i < limit && q.drained < count; i++) await serveTurn(q);
  // At least: a stall that outlasts a wait's budget arms the call eventfd, and its wake may
  // drain the next completion in the same turn (201 of 200 once in a full run).
  assert.ok(q.drained >= count, `drained ${q.drained} of ${count}`);
}

test('engine: no kick ahead while the adaptive controller judges the CPU shared, though its spins do not yield', async () => {
  for (const shared of [true, false]) {
    const q = new FakeQueue();
    // Spins that do not yield: only the controller's own judgement can stop the kicks ahead.
    const controller = new CountingController({ yieldOnSharedCpu: false });
    const strategy = new PollingCompletion('adaptive', fakeHost(q), controller, {
      sliceNs: 20_000,
      sleepNs: 0,
      kickAheadGapNs: 300_000,
      microSpinNs: 0, // a loop turn per request: the drained counts are exact
    });
    q.strategy = strategy;
    try {
      q.autoComplete = true;
      q.submit(1);
      // The first waits may outlast the budget (the runner's first turns take milliseconds).
      await serveUntilDrained(q, 200, 10_000);
      kicksAhead(q);
      // Four preemptions per wait: far past sharedCpuPreemptions (0.25), smoothed by 1/4.
      if (shared) for (let i = 0; i < 4; i++) controller.preempted(4);
      assert.equal(controller.cpuShared, shared);
      assert.equal(controller.spinYield(), undefined, 'spins do not yield');
      const hitsBefore = controller.hits;
      await serveUntilDrained(q, 300, 10_000);
      q.resubmit = false;
      await nextTurn();
      const polled = controller.hits - hitsBefore;
      assert.ok(polled >= 80, `${polled} of 100 waits ended polling`);
      const ahead = kicksAhead(q);
      if (shared) assert.equal(ahead, 0, 'the controller takes the CPU to be shared');
      else assert.ok(ahead >= 0.9 * polled, `${ahead} kicks ahead in ${polled} polled waits`);
    } finally {
      strategy.stop();
      q.close();
    }
  }
});

/**
 * Turns (serveTurn) until `done()`, at most `ms`; returns the times read before and after the
 * last turn, which bracket whatever made done() true.
 */
async function serveUntil(
  q: FakeQueue,
  done: () => boolean,
  ms: number,
): Promise<{ before: number; after: number }> {
  const end = performance.now() + ms;
  let before = performance.now();
  let after = before;
  while (!done() && after < end) {
    before = performance.now();
    await serveTurn(q);
    after = performance.now();
  }
  return { before, after };
}

test("engine: a trial that a closed loop's first requests began ends once the application paces them, and runs on while the loop stays closed", async () => {
  const trialMs = 200;
  for (const paced of [true, false]) {
    const q = new FakeQueue();
    // The CPU never judged shared: a loaded machine's preemptions would start the trial over.
    const controller = new AdaptiveController({
      trialNs: trialMs * 1e6,
      sharedCpuPreemptions: 1000,
    });
    const strategy = new PollingCompletion('adaptive', fakeHost(q), controller, {
      sliceNs: 20_000,
      sleepNs: 0,
      kickAheadGapNs: 300_000,
      microSpinNs: 0,
    });
    q.strategy = strategy;
    try {
      q.autoComplete = true;
      // Back to back, as a paced benchmark's catch-up burst comes: the loop looks closed.
      q.submit(1);
      const began = await serveUntil(q, () => controller.inTrial, 5_000);
      assert.ok(controller.inTrial, 'requests back to back began a trial');
      assert.equal(controller.trials, 1);
      // 2,000 IOPS: the application works 0.5 ms before each request, which the engine's
      // resumes tell the controller as idle time.
      if (paced) q.thinkMs = 0.5;
      // Past the eighth of trialNs from which a trial is judged, well before its end.
      const ended = await serveUntil(q, () => paced && !controller.inTrial, trialMs * 0.4);
      // The trial's length lies between these two (its start and end each within a turn).
      const atMostMs = ended.after - began.before;
      const atLeastMs = ended.before - began.after;
      q.resubmit = false;
      q.thinkMs = 0;
      await nextTurn();
      if (paced) {
        assert.ok(!controller.inTrial, `the paced load's trial still ran after ${atMostMs} ms`);
        // (Less 3 ms: a paced turn works 0.5 ms or more per request it resubmits.)
        assert.ok(
          atLeastMs >= trialMs / 8 - 3,
          `ended after ${atLeastMs} ms at least, before it was judged`,
        );
      } else {
        assert.ok(controller.inTrial, `the closed loop's trial ended within ${atMostMs} ms`);
      }
      assert.equal(controller.trials, 1, 'no trial began again');
    } finally {
      strategy.stop();
      q.close();
    }
  }
});

/** The most completions drained between two turns of the event loop, over `ms` of a closed loop. */
async function drainsPerLoopTurn(q: FakeQueue, ms: number): Promise<number> {
  let most = 0;
  let last = q.drained;
  let running = true;
  const tick = (): void => {
    most = Math.max(most, q.drained - last);
    last = q.drained;
    if (running) setImmediate(tick);
  };
  setImmediate(tick);
  await sleep(ms);
  running = false;
  await nextTurn();
  return most;
}

/**
 * Completions a run of looks must take between two loop turns (turns alone take one or two). A
 * run ends 50 µs after its loop turn (MICRO_RUN_MS), and on a host slowed down for a while (a
 * 1e8 loop took 0.6-0.9 s instead of ~0.1 once; other processes on the CPUs) fewer fit: 5-6
 * here, 3-6 beside two busy loops. So the tests try up to LOOK_TRIES times.
 */
const LOOKS_PER_TURN_MIN = 3;
const LOOK_TRIES = 5;

/** Runs `measure` until `most(result)` reaches LOOKS_PER_TURN_MIN, LOOK_TRIES times at most. */
async function measureLooks<T>(measure: () => Promise<T>, most: (result: T) => number): Promise<T> {
  let result = await measure();
  for (let attempt = 1; attempt < LOOK_TRIES && most(result) < LOOKS_PER_TURN_MIN; attempt++) {
    result = await measure();
  }
  return result;
}

test("engine: a lone request's completion is looked for in the turn that settled the one before, and the loop still turns every 50 µs", async () => {
  const closedLoop = async (microSpinNs: number, thinkMs: number): Promise<number> => {
    let most = 0;
    await withEngine(
      Infinity,
      async ({ q }) => {
        q.autoComplete = true;
        q.thinkMs = thinkMs;
        q.submit(1);
        most = await drainsPerLoopTurn(q, 30);
        q.resubmit = false;
        await nextTurn();
      },
      { microSpinNs },
    );
    return most;
  };
  // Each request waits for a loop turn: one completion per turn.
  const turns = await closedLoop(0, 0);
  assert.ok(turns <= 2, `${turns} completions between two loop turns`);
  // Looked for in the turn: many per turn, up to the run's end (50 µs).
  const micro = await measureLooks(
    () => closedLoop(20_000, 0),
    (most) => most,
  );
  assert.ok(micro >= LOOKS_PER_TURN_MIN, `${micro} completions between two loop turns`);
  // An application that works 30 µs before each request: a run (at most 50 µs from its first
  // look) takes two or three of them.
  const busy = await closedLoop(20_000, 0.03);
  assert.ok(busy <= 4, `${busy} completions between two loop turns`);
  // A device that answers before the look: taken at the look's first check, and the run still
  // ends (before, it never did: the loop never turned again).
  await withEngine(
    Infinity,
    async ({ q, rec }) => {
      q.completeInCall = true;
      q.submit(1);
      const most = await drainsPerLoopTurn(q, 30);
      q.resubmit = false;
      await nextTurn();
      assert.ok(most >= LOOKS_PER_TURN_MIN, `${most} completions between two loop turns`);
      assert.ok(q.drained > 100, `${q.drained} drained`);
      // Answered before its look, a request is no wait to decide: the policy is not told.
      assert.ok(rec.waits.length < 0.2 * q.drained, `${rec.waits.length} of ${q.drained}`);
    },
    { microSpinNs: 20_000 },
  );
});

/** Lets a closed loop run until `n` were drained (a process's first loop turns are slow). */
async function drainsUntil(q: FakeQueue, n: number): Promise<void> {
  for (let i = 0; i < 200 && q.drained < n; i++) await drainsPerLoopTurn(q, 10);
}

/**
 * A closed loop of lone requests with looks on, set up by `device`, until 200 were drained:
 * whatever the device, the policy hears of nothing between a completion and the next kick.
 */
async function loneRequestsHeard(
  device: (q: FakeQueue) => void,
  check: (q: FakeQueue, rec: Recorded) => void,
): Promise<void> {
  await withEngine(
    Infinity,
    async ({ q, rec }) => {
      device(q);
      q.submit(1);
      await drainsUntil(q, 200);
      q.resubmit = false;
      await nextTurn();
      assert.ok(q.drained >= 200, `${q.drained} drained`);
      const between = rec.heardWhileDeviceWorks.filter((works) => !works).length;
      assert.equal(between, 0, `${between} of ${rec.heardWhileDeviceWorks.length} told in between`);
      check(q, rec);
    },
    { microSpinNs: 20_000 },
  );
}

test('engine: in a closed loop of lone requests the policy hears of hits and resumes while the device works, never between a completion and the next kick', async () => {
  // Answered before each look: the look takes them at its first check, and the policy, which
  // decides no wait for them, is told nothing.
  await loneRequestsHeard(
    (q) => {
      q.completeInCall = true;
    },
    (_q, rec) => {
      assert.ok(rec.waits.length <= 1, `${rec.waits.length} waits decided`);
      assert.equal(rec.resumes.length, 0);
    },
  );
  // Answered after the look's quick spin: every wait is decided, and the policy hears of each
  // hit and of the pace then, with the next request on the device.
  await loneRequestsHeard(
    (q) => {
      q.autoComplete = true;
      q.checksToComplete = { kickedAhead: 10_000, otherwise: 10_000 };
    },
    (q, rec) => {
      assert.ok(rec.hits >= q.drained - 2, `${rec.hits} hits heard of ${q.drained} waits`);
      assert.ok(rec.resumes.length >= q.drained - 2, `${rec.resumes.length} resumes heard`);
    },
  );
  // Every other request answered before its look: its resume is kept and told, before the
  // next one's, with the next wait decided; none is lost.
  await loneRequestsHeard(
    (q) => {
      q.autoComplete = true;
      q.completeInCallIf = (n) => n % 2 === 0;
      q.checksToComplete = { kickedAhead: 10_000, otherwise: 10_000 };
    },
    (q, rec) => {
      assert.ok(rec.waits.length <= q.drained / 2 + 2, `${rec.waits.length} waits decided`);
      assert.ok(rec.resumes.length >= q.drained - 3, `${rec.resumes.length} resumes heard`);
    },
  );
  // More answered before their looks than the engine keeps: a decided wait hears the newest
  // UNHEARD_RESUMES, oldest first (each request's idle is its application's work before it,
  // 20 µs longer for each of the cycle's 20).
  const cycle = 20;
  const workMs = (n: number): number => 0.02 * (n % cycle);
  await loneRequestsHeard(
    (q) => {
      q.autoComplete = true;
      q.completeInCallIf = (n) => n % cycle !== cycle - 1;
      q.thinkMsOf = workMs;
      q.checksToComplete = { kickedAhead: 10_000, otherwise: 10_000 };
    },
    (_q, rec) => {
      // The first wait (the test's own submission) heard nothing; every later one the newest few.
      const later = rec.resumesPerWait.slice(1);
      assert.ok(later.length >= 5, `${later.length} waits decided`);
      assert.ok(
        later.every((n) => n === UNHEARD_RESUMES),
        `resumes heard per wait: ${later.join(', ')}`,
      );
      // Each at least its own work (a hiccup only lengthens one): the newest, oldest first.
      const idles = rec.resumes.map(([idleNs]) => idleNs);
      for (let w = 0; w + UNHEARD_RESUMES <= idles.length; w += UNHEARD_RESUMES) {
        const group = idles.slice(w, w + UNHEARD_RESUMES);
        assert.ok(
          group.every((ns, i) => ns >= 0.95e6 * workMs(cycle - UNHEARD_RESUMES + i)),
          `a wait heard idles of ${group.map((ns) => Math.round(ns / 1000)).join(', ')} µs`,
        );
      }
    },
  );
});

test('spanNs: the span in ms written to spanMs[0] as whole ns, clamped to a small integer', () => {
  const wholeNs = (ms: number): number => {
    spanMs[0] = ms;
    return spanNs();
  };
  assert.equal(wholeNs(0.0042), 4200);
  assert.equal(wholeNs(1.5), 1_500_000);
  assert.equal(wholeNs(2000), 2_000_000_000);
  assert.equal(wholeNs(3000), 2 ** 31 - 1, 'past 2.1 s: the largest');
  assert.equal(wholeNs(Infinity), 2 ** 31 - 1);
  assert.equal(wholeNs(0), 0);
  assert.equal(wholeNs(-3), 0, 'a negative span: 0');
  assert.equal(wholeNs(NaN), 0);
  assert.equal(wholeNs(4871 / 1e6), 4871, 'ns -> ms -> ns comes back exact (rounded)');
  for (let ns = 1; ns < 100_000; ns += 7) assert.equal(wholeNs(ns / 1e6), ns);
});

test("engine: turns on its policy's thread clock (it passes startWait no time)", () => {
  let calls = 0;
  const policy: SpinPolicy = {
    startWait: () => Infinity,
    hit: () => {},
    miss: () => {},
    blockingSpinNs: () => 0,
    useThreadClock: (clock, offsetMs) => {
      calls++;
      // The thread's latest reading (maybe a while ago), on performance.now()'s scale.
      const ms = clock[0]! - offsetMs;
      assert.ok(ms > 0 && ms <= performance.now() + 1, `${ms} against ${performance.now()}`);
    },
  };
  const q = new FakeQueue();
  const engine = new PollingCompletion('test', fakeHost(q), policy, {
    sliceNs: 20_000,
    sleepNs: 0,
  });
  engine.stop();
  q.close();
  assert.equal(calls, 1);
});

test("engine: a run of looks runs the continuations' microtasks in Node's order, and their ticks before the loop turns", async () => {
  /** A closed loop whose continuations each queue a tick and a microtask before the next request. */
  const closedLoop = async (
    microSpinNs: number,
  ): Promise<{
    order: string[];
    ticksAtTurns: number;
    lateMicrotasks: number;
    most: number;
    drained: number;
  }> => {
    const order: string[] = [];
    let ticksAtTurns = 0;
    let lateMicrotasks = 0;
    let most = 0;
    let drained = 0;
    await withEngine(
      Infinity,
      async ({ q }) => {
        q.autoComplete = true;
        q.resubmit = false;
        let left = 300;
        let ticksBehind = 0;
        let microtasksBehind = 0;
        const submitNext = (): void => {
          if (left-- <= 0) return;
          ticksBehind++;
          process.nextTick(() => {
            ticksBehind--;
            order.push('tick');
          });
          microtasksBehind++;
          void Promise.resolve().then(() => {
            microtasksBehind--;
            order.push('microtask');
          });
          q.submit(1);
        };
        const drain = q.drain.bind(q);
        q.drain = (): number => {
          // The previous continuation's microtask ran before this drain (a look's or a turn's).
          if (microtasksBehind > 0) lateMicrotasks++;
          const n = drain();
          for (let i = 0; i < n; i++) void Promise.resolve().then(submitNext);
          return n;
        };
        // Every loop turn (an Immediate's, as the probe's) finds every tick queued so far run.
        let probing = true;
        const probe = (): void => {
          if (ticksBehind > 0) ticksAtTurns++;
          if (probing) setImmediate(probe);
        };
        setImmediate(probe);
        try {
          submitNext();
          most = await drainsPerLoopTurn(q, 30);
          // The rest of the 300 (a slow machine takes longer than 30 ms for them).
          const deadline = performance.now() + 10_000;
          while ((left > 0 || q.inFlight > 0) && performance.now() < deadline) await nextTurn();
          await nextTurn();
          drained = q.drained;
        } finally {
          probing = false;
        }
      },
      { microSpinNs },
    );
    return { order, ticksAtTurns, lateMicrotasks, most, drained };
  };
  const looks = await measureLooks(
    () => closedLoop(20_000),
    (r) => r.most,
  );
  const turns = await closedLoop(0);
  assert.equal(looks.drained, 300);
  assert.equal(turns.drained, 300);
  assert.ok(turns.most <= 2, `without looks: ${turns.most} completions between two loop turns`);
  assert.ok(
    looks.most >= LOOKS_PER_TURN_MIN,
    `looks ran: ${looks.most} completions between two loop turns`,
  );
  assert.equal(looks.ticksAtTurns, 0, 'a loop turn came before a tick queued before it');
  assert.equal(turns.ticksAtTurns, 0);
  assert.equal(looks.order.filter((e) => e === 'tick').length, 300);
  assert.equal(looks.lateMicrotasks, 0, "a continuation's microtask ran after the next drain");
  assert.equal(turns.lateMicrotasks, 0);
});

test('engine: with looks on, a lone request made outside a run of looks is decided in its submission', () =>
  withEngine(
    Infinity,
    async ({ q, rec }) => {
      q.resubmit = false;
      q.submit(1); // from here, not from a continuation the engine ran
      assert.deepEqual(rec.inSubmit, [true], 'decided in the submission, not in a look');
      q.complete(1);
      await nextTurn();
      assert.equal(q.drained, 1);
    },
    { microSpinNs: 20_000 },
  ));
