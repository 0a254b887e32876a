import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  MIN_VERDICT_ROUNDS,
  clusteredRatioSummary,
  pairedRatio,
  pairedRatioToMean,
  ratioAboveVerdict,
  ratioCapVerdict,
  ratioSummary,
  ratioVerdict,
  runMediansInterval,
  type RatioSummary,
} from '../../src/bench/paired-ratio.js';
import { prng } from '../helpers/random.js';

/** Ratios spread log-uniformly by a factor of `spread` either side of `centre`. */
function noisyRatios(n: number, centre: number, spread: number, seed: number): number[] {
  const random = prng(seed);
  const out: number[] = [];
  for (let i = 0; i < n; i++) out.push(centre * spread ** (2 * random() - 1));
  return out;
}

/** A summary whose interval is [low, high]. */
function at(low: number, high: number): RatioSummary {
  return {
    rounds: 10,
    runs: 1,
    median: (low + high) / 2,
    min: low,
    max: high,
    low,
    high,
    level: 0.9,
  };
}

test('pairedRatio divides each round by the same round of the base', () => {
  const s = pairedRatio([100, 200, 400], [50, 300, 400]);
  assert.equal(s.rounds, 3);
  assert.equal(s.median, 1);
  assert.equal(s.min, 0.5);
  assert.equal(s.max, 1.5);
  // A resample's median is 0.5 when two of its three draws are (7 in 27), so the 5% bound is
  // 0.5, and likewise 1.5 at the top.
  assert.equal(s.low, 0.5);
  assert.equal(s.high, 1.5);
});

test('pairedRatioToMean divides each round by the mean of the bases in that round', () => {
  const s = pairedRatioToMean(
    [
      [100, 200, 90],
      [300, 200, 110],
    ],
    [200, 300, 100],
  );
  assert.equal(s.rounds, 3);
  assert.equal(s.min, 1);
  assert.equal(s.max, 1.5);
  assert.throws(() => pairedRatioToMean([], [1]), /no base/);
  assert.throws(() => pairedRatioToMean([[1], [1, 2]], [1]), /differ in count/);
});

test('rounds without a finite ratio are left out; none at all gives no verdict', () => {
  assert.equal(pairedRatio([0, 100, 100], [5, 90, 110]).rounds, 2);
  const none = pairedRatio([0, 0], [1, 0]);
  assert.equal(none.rounds, 0);
  assert.ok(Number.isNaN(none.median) && Number.isNaN(none.low) && Number.isNaN(none.high));
  assert.equal(ratioVerdict(none, 0.95), 'not resolved');
  assert.equal(ratioCapVerdict(none, 1.05), 'not resolved');
  assert.equal(ratioAboveVerdict(none), 'not resolved');
  assert.throws(() => pairedRatio([1, 2], [1]), /differ in count/);
});

test('fewer rounds than MIN_VERDICT_ROUNDS give no verdict, however tight', () => {
  const few = ratioSummary(Array.from({ length: MIN_VERDICT_ROUNDS - 1 }, () => 1.2));
  const enough = ratioSummary(Array.from({ length: MIN_VERDICT_ROUNDS }, () => 1.2));
  assert.equal(ratioVerdict(few, 0.95), 'not resolved');
  assert.equal(ratioVerdict(enough, 0.95), 'met');
  assert.equal(ratioCapVerdict(few, 1.05), 'not resolved');
  assert.equal(ratioCapVerdict(enough, 1.05), 'missed');
  assert.equal(ratioAboveVerdict(few), 'not resolved');
  assert.equal(ratioAboveVerdict(enough), 'met');
});

test('an even count takes the mean of the middle two', () => {
  assert.equal(ratioSummary([1, 2, 3, 10]).median, 2.5);
});

test('identical ratios give a zero-width interval at them', () => {
  const s = ratioSummary(Array.from({ length: 20 }, () => 0.97));
  assert.equal(s.low, 0.97);
  assert.equal(s.high, 0.97);
});

test('the interval narrows with more rounds, about as 1/sqrt(rounds)', () => {
  const few = ratioSummary(noisyRatios(30, 1, 2, 7));
  const many = ratioSummary(noisyRatios(600, 1, 2, 7));
  for (const s of [few, many]) assert.ok(s.low <= s.median && s.median <= s.high);
  // sqrt(600 / 30) = 4.5
  assert.ok(many.high - many.low < (few.high - few.low) / 2.5, `${JSON.stringify([few, many])}`);
});

test('the interval holds the true median about as often as its level says', () => {
  // 200 experiments of 41 rounds each, ratios around 0.9: a 90% interval should miss the true
  // median in roughly 10% of them (binomial: 20 ± 13 at three sigma).
  let missed = 0;
  for (let e = 0; e < 200; e++) {
    const s = ratioSummary(noisyRatios(41, 0.9, 1.8, 1000 + e), { resamples: 1000, seed: e + 1 });
    if (!(s.low <= 0.9 && 0.9 <= s.high)) missed++;
  }
  assert.ok(missed >= 7 && missed <= 33, `missed ${missed} of 200`);
});

test('the same rounds and seed give the same interval; another seed a close one', () => {
  const r = noisyRatios(50, 1.02, 1.5, 3);
  assert.deepEqual(ratioSummary(r), ratioSummary(r));
  // The bounds the one-sample bootstrap gave before runs could be resampled (4c06cd3): one run
  // still draws the same rounds in the same order.
  assert.equal(ratioSummary(r).low, 0.9875132418760886);
  assert.equal(ratioSummary(r).high, 1.089928945473925);
  const other = ratioSummary(r, { seed: 99 });
  assert.ok(Math.abs(other.low - ratioSummary(r).low) < 0.05);
});

test('runs resampled too: runs whose medians disagree widen the interval to their spread', () => {
  const runs = [
    noisyRatios(60, 0.92, 1.1, 11),
    noisyRatios(60, 1.0, 1.1, 12),
    noisyRatios(60, 1.08, 1.1, 13),
    noisyRatios(60, 0.96, 1.1, 14),
  ];
  const pooled = ratioSummary(runs.flat());
  const clustered = clusteredRatioSummary(runs);
  assert.equal(clustered.runs, 4);
  assert.equal(clustered.rounds, 240);
  assert.equal(clustered.median, pooled.median);
  // Pooled as one sample: 0.963-0.984, narrower than the runs' medians lie apart.
  const width = (s: RatioSummary): number => s.high - s.low;
  assert.ok(width(clustered) > 2.5 * width(pooled), JSON.stringify([pooled, clustered]));
  // Empty runs are not runs.
  assert.equal(clusteredRatioSummary([[], [1, 1, 1, 1, 1]]).runs, 1);
  assert.equal(clusteredRatioSummary([[], []]).rounds, 0);
});

test('runs resampled too: the interval holds the median of the runs as often as its level says', () => {
  // 200 experiments of four runs of 30 rounds, each run's centre moved by up to 8% either way
  // (the runs' median is 1): a 90% interval should miss 1 in about 10% of them; rounds pooled
  // as one sample miss it far more often.
  let missedClustered = 0;
  let missedPooled = 0;
  for (let e = 0; e < 200; e++) {
    const shift = prng(5000 + e);
    const runs = [0, 1, 2, 3].map((k) =>
      noisyRatios(30, 1.08 ** (2 * shift() - 1), 1.3, 7000 + e * 10 + k),
    );
    const options = { resamples: 1000, seed: e + 1 };
    const c = clusteredRatioSummary(runs, options);
    const p = ratioSummary(runs.flat(), options);
    if (!(c.low <= 1 && 1 <= c.high)) missedClustered++;
    if (!(p.low <= 1 && 1 <= p.high)) missedPooled++;
  }
  assert.ok(missedClustered >= 7 && missedClustered <= 33, `missed ${missedClustered} of 200`);
  assert.ok(missedPooled > 40, `pooled missed ${missedPooled} of 200`);
});

test("runMediansInterval: the runs' medians, their mean and a 90% t-interval", () => {
  // Medians 0.948, 0.953, 1.006, 1.055, 0.988: mean 0.99, s 0.04364, t(0.95, 4) 2.132.
  const runs = [[0.9, 0.948, 1.2], [0.953], [1.006, 0.5, 2], [1.055], [0.988, 0.988]];
  const t = runMediansInterval(runs);
  assert.equal(t.runs, 5);
  assert.ok(Math.abs(t.mean - 0.99) < 1e-12, `${t.mean}`);
  assert.ok(Math.abs(t.low - 0.94839) < 1e-4 && Math.abs(t.high - 1.03161) < 1e-4, `${t.low}`);
  // One run has no spread to judge by.
  const one = runMediansInterval([[], [1, 2, 3]]);
  assert.equal(one.runs, 1);
  assert.equal(one.mean, 2);
  assert.ok(Number.isNaN(one.low) && Number.isNaN(one.high));
  // Eleven runs take the table's last t (10 degrees of freedom), twelve too (a little wide):
  // medians alternating 0.9 and 1.1 around their mean.
  for (const k of [11, 12]) {
    const medians = Array.from({ length: k }, (_, i) => (i % 2 === 0 ? 0.9 : 1.1));
    const r = runMediansInterval(medians.map((m) => [m]));
    const mean = medians.reduce((a, b) => a + b, 0) / k;
    const s = Math.sqrt(medians.reduce((sum, m) => sum + (m - mean) ** 2, 0) / (k - 1));
    assert.ok(Math.abs(r.high - r.low - 2 * 1.812 * (s / Math.sqrt(k))) < 1e-12, `${k} runs`);
  }
});

test('with five runs whose shifts dominate, the t-interval holds their median about as often as its level says; the bootstrap less often', () => {
  // 200 experiments of five runs of 40 rounds, each run's centre moved by up to 8% either way,
  // its rounds by 5% about it (measured: the t-interval missed 19 times, the bootstrap 32).
  let missedT = 0;
  let missedBootstrap = 0;
  for (let e = 0; e < 200; e++) {
    const shift = prng(9000 + e);
    const runs = [0, 1, 2, 3, 4].map((k) =>
      noisyRatios(40, 1.08 ** (2 * shift() - 1), 1.05, 11_000 + e * 10 + k),
    );
    const t = runMediansInterval(runs);
    const c = clusteredRatioSummary(runs, { resamples: 1000, seed: e + 1 });
    if (!(t.low <= 1 && 1 <= t.high)) missedT++;
    if (!(c.low <= 1 && 1 <= c.high)) missedBootstrap++;
  }
  assert.ok(missedT >= 7 && missedT <= 33, `t-interval missed ${missedT} of 200`);
  assert.ok(missedBootstrap > missedT, `bootstrap ${missedBootstrap}, t ${missedT}`);
});

test('ratioVerdict: met at or above the floor, missed below it, not resolved across it', () => {
  assert.equal(ratioVerdict(at(0.96, 1.04), 0.95), 'met');
  assert.equal(ratioVerdict(at(0.95, 1.04), 0.95), 'met');
  assert.equal(ratioVerdict(at(0.88, 0.94), 0.95), 'missed');
  assert.equal(ratioVerdict(at(0.93, 1.01), 0.95), 'not resolved');
});

test('ratioAboveVerdict: met only wholly above 100%, missed wholly at or below it', () => {
  assert.equal(ratioAboveVerdict(at(1.01, 1.1)), 'met');
  assert.equal(ratioAboveVerdict(at(1, 1.1)), 'not resolved');
  assert.equal(ratioAboveVerdict(at(0.95, 1.04)), 'not resolved');
  assert.equal(ratioAboveVerdict(at(0.9, 1)), 'missed');
});

test('ratioCapVerdict: a cost met below the cap, missed above it, not resolved across it', () => {
  assert.equal(ratioCapVerdict(at(0.9, 1.05), 1.05), 'met');
  assert.equal(ratioCapVerdict(at(1.06, 1.2), 1.05), 'missed');
  assert.equal(ratioCapVerdict(at(1.0, 1.1), 1.05), 'not resolved');
  assert.equal(ratioCapVerdict(at(1.1, 1.3), 1.2), 'not resolved');
});

test('options are checked', () => {
  assert.throws(() => ratioSummary([1], { level: 1 }), /level/);
  assert.throws(() => ratioSummary([1], { resamples: 0 }), /resamples/);
});
