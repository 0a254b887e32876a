import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  KICK_AHEAD_FIRST_TRIAL,
  KICK_AHEAD_TRIAL_BLOCK,
  KICK_AHEAD_TRIAL_EVERY_MAX,
  KICK_AHEAD_TRIAL_EVERY_MIN,
  KickAheadTrial,
} from '../../src/completion/kick-ahead-trial.js';

/**
 * A closed loop at depth 1 on a synthetic backend: each chance is followed by the next request's
 * completion, `takenMs` later if the chance was taken and `skippedMs` if not (plus a jitter that
 * repeats every 7 requests). Returns whether each chance was taken.
 */
function run(
  { trial, clock }: Clocked,
  chances: number,
  takenMs: number,
  skippedMs: number,
): boolean[] {
  const taken: boolean[] = [];
  for (let i = 0; i < chances; i++) {
    const take = trial.chance();
    taken.push(take);
    clock.now += (take ? takenMs : skippedMs) + (i % 7) * 0.0002;
    trial.waitEnded();
  }
  return taken;
}

/** A trial on a synthetic clock (ms) the test moves. */
interface Clocked {
  trial: KickAheadTrial;
  clock: { now: number };
}
function clocked(): Clocked {
  const clock = { now: 1000 };
  return { trial: new KickAheadTrial(undefined, () => clock.now), clock };
}

/** The runs of equal values, as [value, length]. */
function runsOf(values: boolean[]): [boolean, number][] {
  const runs: [boolean, number][] = [];
  for (const v of values) {
    const last = runs[runs.length - 1];
    if (last !== undefined && last[0] === v) last[1]++;
    else runs.push([v, 1]);
  }
  return runs;
}

test('kick-ahead trial: a backend that answers sooner when kicked ahead keeps its kicks ahead; the trials skip blocks and come further apart', () => {
  const t = clocked();
  const trial = t.trial;
  // qemu-storage-daemon on null-co: ~4 µs kicked ahead, ~12 µs not.
  const taken = run(t, 300_000, 0.004, 0.012);
  assert.equal(trial.harmless, true);
  assert.ok(trial.trials >= 5, `${trial.trials} trials`);
  const runs = runsOf(taken);
  // Every skipped stretch is one trial's middle two blocks.
  const skipped = runs.filter(([take]) => !take).map(([, n]) => n);
  assert.ok(skipped.length - trial.trials <= 1, 'a trial may still run at the end');
  for (const n of skipped.slice(0, trial.trials)) assert.equal(n, 2 * KICK_AHEAD_TRIAL_BLOCK);
  // The first trial after the warm-up's chances; then the stretches between trials double.
  assert.equal(runs[0]![1], KICK_AHEAD_FIRST_TRIAL - 1 + KICK_AHEAD_TRIAL_BLOCK);
  const between = runs
    .slice(2, -1)
    .filter(([take]) => take)
    .map(([, n]) => n);
  for (let i = 1; i < between.length; i++) {
    const gap = between[i]! - 2 * KICK_AHEAD_TRIAL_BLOCK;
    assert.ok(
      gap ===
        Math.min(2 * (between[i - 1]! - 2 * KICK_AHEAD_TRIAL_BLOCK), KICK_AHEAD_TRIAL_EVERY_MAX) ||
        gap === KICK_AHEAD_TRIAL_EVERY_MAX,
      `stretches between trials: ${between.join(' ')}`,
    );
  }
  assert.ok(
    between.some((n) => n > KICK_AHEAD_TRIAL_EVERY_MAX),
    'reaches the longest interval',
  );
  const skippedShare = skipped.reduce((a, b) => a + b, 0) / taken.length;
  assert.ok(skippedShare < 0.005, `${skippedShare} of the chances skipped`);
});

test('kick-ahead trial: a backend that answers later when kicked ahead gets kicks ahead in the trials only, once two trials agree', () => {
  const t = clocked();
  const trial = t.trial;
  // 20% later after a kick ahead.
  const taken = run(t, KICK_AHEAD_FIRST_TRIAL + 20_000, 0.012, 0.01);
  assert.equal(trial.harmless, false);
  // The first verdict against is confirmed by a second trial before kicks ahead stop.
  const confirmed =
    KICK_AHEAD_FIRST_TRIAL + KICK_AHEAD_TRIAL_EVERY_MIN + 2 * 4 * KICK_AHEAD_TRIAL_BLOCK;
  assert.ok(taken.slice(confirmed - KICK_AHEAD_TRIAL_EVERY_MIN, confirmed - 100).every(Boolean));
  const after = taken.slice(confirmed);
  const kicked = after.filter(Boolean).length;
  // A trial every MIN chances, each taking two blocks.
  const cycle = KICK_AHEAD_TRIAL_EVERY_MIN + 4 * KICK_AHEAD_TRIAL_BLOCK;
  const expected = (after.length / cycle) * 2 * KICK_AHEAD_TRIAL_BLOCK;
  assert.ok(Math.abs(kicked - expected) <= 2 * KICK_AHEAD_TRIAL_BLOCK, `${kicked} vs ${expected}`);
  for (const [take, n] of runsOf(after)) {
    if (take) assert.ok(n <= 2 * KICK_AHEAD_TRIAL_BLOCK, `a run of ${n} kicks ahead`);
  }
});

test('kick-ahead trial: within 10% either way kicks ahead go on; a backend that turns harmless gets them back at the next trial', () => {
  const near = clocked();
  run(near, 100_000, 0.0105, 0.01);
  assert.equal(near.trial.harmless, true, '5% later: kept');

  const t = clocked();
  run(t, KICK_AHEAD_FIRST_TRIAL + 100, 0.02, 0.01);
  assert.equal(t.trial.harmless, true, 'one trial against: not yet');
  run(t, KICK_AHEAD_TRIAL_EVERY_MIN + 100, 0.02, 0.01);
  assert.equal(t.trial.harmless, false, 'confirmed by the next');
  const back = run(t, KICK_AHEAD_TRIAL_EVERY_MIN + 200, 0.004, 0.012);
  assert.equal(t.trial.harmless, true);
  assert.ok(back.slice(-100).every(Boolean), 'kicks ahead again after the trial');
});

test('kick-ahead trial: a trial whose waits never ended changes nothing', () => {
  const { trial, clock } = clocked();
  for (let i = 0; i < KICK_AHEAD_FIRST_TRIAL + 4 * KICK_AHEAD_TRIAL_BLOCK + 1; i++) {
    clock.now += 0.01;
    trial.chance(); // no waitEnded: every next completion came another way
  }
  assert.equal(trial.trials, 0, 'no verdict');
  assert.equal(trial.harmless, true);
  // A wait that ends now belongs to no trial chance (outside trials nothing is pending).
  clock.now += 5;
  trial.waitEnded();
  assert.equal(trial.chance(), true);
});

test('kick-ahead trial: a discarded sample (a late request, a blocking call) does not count', () => {
  const { trial, clock } = clocked();
  // Harmed: 20% later after a kick ahead; but every skipped chance's next request comes 1 ms
  // late, which would make the skipped side look slow if it were a sample.
  for (let i = 0; i < KICK_AHEAD_FIRST_TRIAL + 4 * KICK_AHEAD_TRIAL_BLOCK + 1; i++) {
    const take = trial.chance();
    if (!take) {
      trial.discard();
      clock.now += 1;
    }
    clock.now += take ? 0.012 : 0.01;
    trial.waitEnded();
  }
  assert.equal(trial.trials, 0, 'the skipped side had no samples: no verdict');
  assert.equal(trial.harmless, true);
});

test('kick-ahead trial: the clock is read only during trials', () => {
  let reads = 0;
  const trial = new KickAheadTrial(undefined, () => ++reads);
  for (let i = 1; i < KICK_AHEAD_FIRST_TRIAL; i++) {
    trial.chance();
    trial.waitEnded();
  }
  assert.equal(reads, 0, 'before the first trial');
  trial.chance();
  trial.waitEnded();
  assert.equal(reads, 2, "the trial's first chance and the end of the wait after it");
});

/** `count` chances outside any trial, none of them measured. */
function skipChances(trial: KickAheadTrial, count: number): void {
  for (let i = 0; i < count; i++) {
    assert.equal(trial.chance(), trial.harmless);
    trial.discard();
  }
}

/**
 * A trial from the next chance on, whose sides' waits last `taken` and `skipped` ms in that
 * order (a side's later chances discarded), then the chance that concludes it.
 */
function trialWith({ trial, clock }: Clocked, taken: number[], skipped: number[]): void {
  const left = { taken: [...taken], skipped: [...skipped] };
  for (let i = 0; i < 4 * KICK_AHEAD_TRIAL_BLOCK; i++) {
    const span = trial.chance() ? left.taken.shift() : left.skipped.shift();
    if (span === undefined) {
      trial.discard();
    } else {
      clock.now += span;
      trial.waitEnded();
    }
  }
  trial.chance();
}

test('kick-ahead trial: the verdict compares the sides by their medians, for odd, even and single-sample sides', () => {
  const verdicts: boolean[] = [];
  const clock = { now: 1000 };
  const t: Clocked = {
    trial: new KickAheadTrial(
      (harmless) => verdicts.push(harmless),
      () => clock.now,
    ),
    clock,
  };
  // Medians 0.040 (of 3, unsorted) and 0.0275 (of 4): harm. The unsorted middle of the taken
  // side (0.030) would have said harmless.
  const harmful: [number[], number[]] = [
    [0.05, 0.03, 0.04],
    [0.035, 0.01, 0.02, 0.06],
  ];
  skipChances(t.trial, KICK_AHEAD_FIRST_TRIAL - 1);
  trialWith(t, ...harmful);
  assert.deepEqual(verdicts, [true], 'the first verdict against is doubted');
  skipChances(t.trial, KICK_AHEAD_TRIAL_EVERY_MIN - 1);
  trialWith(t, ...harmful);
  assert.deepEqual(verdicts, [true, false], 'the second confirms it');
  assert.equal(t.trial.harmless, false);
  // One taken sample (0.010) against a median of 0.020 (of 3, unsorted): harmless again. The
  // unsorted middle of the skipped side (0.001) would have said harm.
  skipChances(t.trial, KICK_AHEAD_TRIAL_EVERY_MIN - 1);
  trialWith(t, [0.01], [0.03, 0.001, 0.02]);
  assert.deepEqual(verdicts, [true, false, true]);
  assert.equal(t.trial.harmless, true);
});
