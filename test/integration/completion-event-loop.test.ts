/**
 * The polling strategies never hold the event loop for more than 1 ms at a time, however long they
 * poll. A probe runs once per loop iteration (setImmediate, the same phase the polling turns run
 * in) and records the time between its runs. The host takes this vCPU away for 3-4 ms a few times a second (ENVIRONMENT.md;
 * refbench sees it too), so the test looks at a high percentile of the gaps, which such stalls
 * do not reach: a strategy that held the loop for longer than 1 ms per turn would put most gaps
 * above it.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { openBlockDevice } from '../../src/index.js';
import type { CompletionMode, CompletionOptions } from '../../src/completion/index.js';
import { native } from '../../src/native.js';
import { MAX_TURN_NS } from '../../src/completion/poll.js';
import { measureSleepFloor } from '../../src/completion/sleep-poll.js';
import { startQsd, type Qsd } from '../helpers/qsd.js';
import { allowedCpus, firstAllowedCpu, setAffinity } from '../helpers/cpu.js';
import { loopGaps } from '../helpers/loop-gaps.js';

let qsd: Qsd;

before(async () => {
  // A slow device (2 ms between completions): the polling strategies spend whole waits polling,
  // and allocations (so garbage-collection pauses) are rare.
  qsd = await startQsd({ driver: 'null', size: 1 << 30, throttleIops: 500 });
});

after(async () => {
  await qsd?.stop();
});

/**
 * [label, mode, options, quantile of the gaps that must stay under 1 ms]. One turn in a thousand
 * can overshoot 1 ms for reasons that are not the strategy's: a garbage collection, a host stall.
 * sleep-poll's turns are native sleeps, and how fast the host wakes a halted vCPU from one is the
 * machine's (measured here: p99.9 1.1-1.6 ms), so it is held to the 90th percentile. A strategy that held the loop for longer per turn would fail at the 99th
 * percentile, and the count of turns would collapse (checked with 3 ms spin slices).
 * At the options' caps every turn spins or sleeps ~0.7 ms in full, so a stall of the host of
 * a few hundred µs, which the short default turns absorb, carries one over 1 ms: those are held
 * to the 90th percentile. A cap of 0.9 ms fails there (its sleeps overshoot to ~1 ms).
 */
const CONFIGS: [string, CompletionMode, CompletionOptions | undefined, number][] = [
  ['poll', 'poll', undefined, 0.99],
  ['sleep-poll', 'sleep-poll', undefined, 0.9],
  ['adaptive', 'adaptive', undefined, 0.99],
  ["adaptive, batching 'always'", 'adaptive', { adaptive: { batching: 'always' } }, 0.99],
  ['poll, spin slice at its cap', 'poll', { spinSliceNs: MAX_TURN_NS }, 0.9],
  ['sleep-poll, sleep at its cap', 'sleep-poll', { sleepIntervalNs: MAX_TURN_NS }, 0.9],
  // A look's spin stops at its run's end (50 µs after the loop turn it followed).
  ['poll, looks at their cap', 'poll', { microLookNs: MAX_TURN_NS }, 0.99],
];

/**
 * Runs `depth` closed loops of 4 KiB reads for 800 ms and checks the loop's turns meanwhile;
 * returns the I/Os done and the longest time one polling turn held the thread itself (ns).
 */
async function checkLoopTurns(
  device: Qsd,
  completion: CompletionMode,
  completionOptions: CompletionOptions | undefined,
  depth: number,
  quantile: number,
): Promise<{ ios: number; longestHoldNs: number }> {
  const dev = await openBlockDevice(device.socketPath, { completion, completionOptions });
  try {
    const end = performance.now() + 800;
    let ios = 0;
    const work = Promise.all(
      Array.from({ length: depth }, async (_, i) => {
        const buf = dev.allocBuffer(4096);
        let block = i;
        while (performance.now() < end) {
          await dev.readInto(buf, (block = (block + 7919) % 65536) * 4096);
          ios++;
        }
      }),
    ).then(() => {});
    const gaps = await loopGaps(work);
    assert.ok(ios > 100, `${ios} I/Os`);
    // The probe ran between the polling turns, not only after the load ended, and enough of
    // them that the percentile is not simply the longest gap (turns of 3 ms give ~270).
    assert.ok(gaps.length > 600, `${gaps.length} loop turns`);
    const q = gaps[Math.floor(gaps.length * quantile)]!;
    assert.ok(
      q < 1,
      `${quantile * 100}% of loop turns within ${q.toFixed(3)} ms (max ${gaps.at(-1)!.toFixed(1)} ms)`,
    );
    // Every turn, not a percentile, for what its spin or sleep held the thread itself (the
    // device counts it; what others did meanwhile, told by timing, is left out). A spin is
    // bounded by its slice, so this fails on one that overruns it; a sleep counts the length it
    // asked for, which the options' cap keeps under 1 ms (for sleep-poll it holds by design).
    const s = dev.stats;
    // (adaptive blocks on this slow device: its turns are few)
    if (completion !== 'adaptive') assert.ok(s.pollingTurns > 100, `${s.pollingTurns} turns`);
    assert.equal(
      s.pollingHoldsOver1ms,
      0,
      `${s.pollingHoldsOver1ms} turns held the loop 1 ms or more (longest ${s.longestPollingHoldNs} ns)`,
    );
    return { ios, longestHoldNs: s.longestPollingHoldNs };
  } finally {
    await dev.close();
  }
}

for (const [label, completion, completionOptions, quantile] of CONFIGS) {
  for (const depth of [1, 8]) {
    test(`${label}, depth ${depth}: ${quantile * 100}% of the event loop's turns take under 1 ms, and no polling turn holds it for 1 ms`, async () => {
      const { longestHoldNs } = await checkLoopTurns(
        qsd,
        completion,
        completionOptions,
        depth,
        quantile,
      );
      // Spinning at the cap, every wait is polled in full turns: the measure sees them.
      if (completionOptions?.spinSliceNs !== undefined) {
        assert.ok(longestHoldNs > 0.5e6, `${longestHoldNs} ns`);
      }
      // Looks at their cap still stop at their run's end (50 µs after its loop turn began), so
      // a run holds far less than the cap's 0.7 ms.
      if (completionOptions?.microLookNs !== undefined) {
        assert.ok(longestHoldNs < 0.3e6, `a run of looks held the loop ${longestHoldNs} ns`);
      }
    });
  }
}

/**
 * A host slow to wake a sleeping thread: every native sleep is made late enough that, with this
 * machine's own lateness, it ends ~0.45 ms after its time (CI machines were seen ~0.5 ms late;
 * one that late gets nothing added). sleep-poll at its cap shortens its sleeps so that, as they
 * really last, the loop's turns stay under 1 ms; asking the cap each time would make every turn
 * ~1.15 ms or more. The estimate is the process's, so this test leaves it high for any
 * sleep-poll test after it in this file.
 */
test("sleep-poll, sleep at its cap, on a host slow to wake: 90% of the event loop's turns take under 1 ms", async () => {
  const ownLateNs = measureSleepFloor(MAX_TURN_NS, 30).p90 - MAX_TURN_NS;
  const addedNs = Math.max(0, 450_000 - ownLateNs);
  const realSleep = native.sleepNs;
  const asked: number[] = [];
  const late: number[] = [];
  native.sleepNs = (ns: number) => {
    const start = native.nowNs();
    realSleep(ns);
    const end = native.nowNs() + addedNs;
    while (native.nowNs() < end);
    asked.push(ns);
    late.push(native.nowNs() - start - ns);
  };
  try {
    await checkLoopTurns(qsd, 'sleep-poll', { sleepIntervalNs: MAX_TURN_NS }, 1, 0.9);
  } finally {
    native.sleepNs = realSleep;
  }
  assert.ok(asked.length > 10, `${asked.length} sleeps`);
  // Each sleep asks at most the turn minus the largest recent lateness (smoothed), so the
  // median asked is shortened by at least most of the median lateness seen in this run.
  const median = (xs: number[]): number =>
    xs.slice(10).sort((a, b) => a - b)[(xs.length - 10) >> 1]!;
  const askedNs = median(asked);
  const lateNs = median(late);
  assert.ok(
    askedNs <= MAX_TURN_NS - 0.8 * lateNs,
    `median sleep asked ${askedNs} ns, median lateness ${lateNs} ns (${addedNs} ns added to each)`,
  );
});

/**
 * The daemon on this process's CPU, with a device that answers at once: adaptive spins, sees the
 * CPU shared and yields it to the daemon between checks of the rings (poll's spins are preempted
 * instead). Neither may hold a loop turn for the daemon's work, nor for whatever else a yield
 * hands the CPU to (V8's compiler threads share it too here: late yields are a few a second).
 */
for (const [label, completion] of [
  ['adaptive (spins yield)', 'adaptive'],
  ['poll', 'poll'],
] as const) {
  test(`${label}, the daemon on the same CPU: 99% of the event loop's turns take under 1 ms`, async () => {
    const fast = await startQsd({ driver: 'null', size: 1 << 30 });
    const allowed = allowedCpus();
    const pids = [process.pid, fast.process.pid!];
    const realYield = native.yieldThread;
    let yielded = 0;
    native.yieldThread = () => {
      yielded++;
      realYield();
    };
    try {
      setAffinity(firstAllowedCpu(), pids);
      const switches = native.threadInvoluntarySwitches();
      const { ios } = await checkLoopTurns(fast, completion, undefined, 1, 0.99);
      // The placement took: the daemon preempted us (on a CPU of our own: about 0.01 per I/O).
      const preempted = (native.threadInvoluntarySwitches() - switches) / ios;
      assert.ok(preempted > 0.25, `${preempted.toFixed(3)} preemptions per I/O`);
      // Few yields: the daemon mostly preempts us at the kick and answers before a spin starts.
      if (completion === 'adaptive') assert.ok(yielded > 0, 'the spins never yielded');
    } finally {
      native.yieldThread = realYield;
      setAffinity(allowed, pids);
      await fast.stop();
    }
  });
}
