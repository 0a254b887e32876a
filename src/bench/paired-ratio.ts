/**
 * Paired benchmark rounds compared: each round's result of one arm divided by the same round's
 * result of the base arm, summarised by the median ratio and a bootstrap confidence interval of
 * that median. On these shared machines single rounds at depth 1 range from half to twice the
 * base (BENCHMARKS.md), so a target such as "within 5%" is judged by where the interval lies,
 * not by the point estimate. Below MIN_VERDICT_ROUNDS rounds the interval is no wider than the
 * rounds' range and covers the median too rarely to judge by (3 rounds: 75%), so no verdict.
 */

import { median, sortedMedian } from '../util/median.js';
import { mulberry32 } from '../util/prng.js';

/**
 * Fewest rounds a verdict is given on: with 5 the interval is the rounds' range (a resample's
 * median is the lowest round in 5.8% of resamples), which holds the true median with
 * probability 1 - 2/2^5 (94%); with 4 rounds the range holds it 87.5% of the time.
 */
export const MIN_VERDICT_ROUNDS = 5;

export interface RatioSummary {
  /** Rounds with a finite ratio (the rest are left out). */
  rounds: number;
  /** Runs the rounds came from, each resampled as a whole first when more than one. */
  runs: number;
  median: number;
  min: number;
  max: number;
  /**
   * The interval's bounds at `level`: percentile bootstrap of the median, rounds resampled
   * (with several runs, the runs first, then rounds within them).
   */
  low: number;
  high: number;
  level: number;
}

export interface RatioCiOptions {
  /** Two-sided coverage (default 0.9). */
  level?: number;
  /** Bootstrap resamples (default 4000). */
  resamples?: number;
  /** PRNG seed, so a table is reproducible from its rounds (default 1). */
  seed?: number;
}

/** The value at quantile q of sorted values (linear between neighbours). */
function quantile(sorted: Float64Array, q: number): number {
  const at = q * (sorted.length - 1);
  const i = Math.floor(at);
  const j = Math.min(sorted.length - 1, i + 1);
  return sorted[i]! + (sorted[j]! - sorted[i]!) * (at - i);
}

/**
 * `arm[i] / base[i]` for every round i, summarised (rounds without a finite ratio left out).
 * Throws if the arrays differ in length.
 */
export function pairedRatio(
  base: readonly number[],
  arm: readonly number[],
  options: RatioCiOptions = {},
): RatioSummary {
  return ratioSummary(ratiosToMean([base], arm), options);
}

/**
 * pairedRatio against the per-round mean of several base arms (a strategy run twice per round,
 * so that the arm between them is not judged against one position in the order).
 */
export function pairedRatioToMean(
  bases: readonly (readonly number[])[],
  arm: readonly number[],
  options: RatioCiOptions = {},
): RatioSummary {
  return ratioSummary(ratiosToMean(bases, arm), options);
}

/** Each round's `arm` result over the mean of the bases' results, the finite ones only. */
export function ratiosToMean(
  bases: readonly (readonly number[])[],
  arm: readonly number[],
): number[] {
  if (bases.length === 0) throw new RangeError('no base arm');
  for (const base of bases) {
    if (base.length !== arm.length) {
      throw new RangeError(`paired rounds differ in count: ${base.length} and ${arm.length}`);
    }
  }
  const ratios: number[] = [];
  for (let i = 0; i < arm.length; i++) {
    let sum = 0;
    for (const base of bases) sum += base[i]!;
    const r = arm[i]! / (sum / bases.length);
    if (Number.isFinite(r)) ratios.push(r);
  }
  return ratios;
}

/** Ratios already computed, summarised as pairedRatio does (all NaN, with 0 rounds, if none). */
export function ratioSummary(
  ratios: readonly number[],
  options: RatioCiOptions = {},
): RatioSummary {
  return clusteredRatioSummary([ratios], options);
}

/**
 * The ratios of several runs (separate processes, minutes apart), summarised together. Pooling
 * their rounds as one sample takes their spread within a run only, yet a run's median moves by
 * more than that from one run to the next here (null-co QD32 writes: 94.8% to 105.5% of poll in
 * five runs, each interval 4-14 points wide). So each resample draws runs with replacement
 * first, then rounds within each drawn run: the interval holds the spread between runs too.
 * With one run it is pairedRatio's interval, resample for resample. With a handful of runs it
 * is still too narrow (a resample of k runs spreads (k-1)/k as widely as the runs): read it
 * beside runMediansInterval.
 */
export function clusteredRatioSummary(
  runs: readonly (readonly number[])[],
  options: RatioCiOptions = {},
): RatioSummary {
  const level = options.level ?? 0.9;
  const resamples = options.resamples ?? 4000;
  if (!(level > 0 && level < 1)) throw new RangeError(`level must be in (0, 1), got ${level}`);
  if (!(Number.isInteger(resamples) && resamples > 0)) {
    throw new RangeError(`resamples must be a positive integer, got ${resamples}`);
  }
  const kept = runs.filter((run) => run.length > 0);
  const sorted = kept.flat().sort((a, b) => a - b);
  const n = sorted.length;
  if (n === 0) {
    const nan = Number.NaN;
    return { rounds: 0, runs: 0, median: nan, min: nan, max: nan, low: nan, high: nan, level };
  }
  const random = mulberry32(options.seed ?? 1);
  const medians = new Float64Array(resamples);
  const longest = Math.max(...kept.map((run) => run.length));
  const sample = new Float64Array(kept.length * longest);
  for (let b = 0; b < resamples; b++) {
    let m = 0;
    for (let r = 0; r < kept.length; r++) {
      // One run is always itself: no draw, so its resamples are the plain bootstrap's.
      const run = kept.length === 1 ? kept[0]! : kept[Math.floor(random() * kept.length)]!;
      for (let i = 0; i < run.length; i++) sample[m++] = run[Math.floor(random() * run.length)]!;
    }
    const drawn = sample.subarray(0, m).sort();
    medians[b] = sortedMedian(drawn);
  }
  medians.sort();
  const tail = (1 - level) / 2;
  return {
    rounds: n,
    runs: kept.length,
    median: sortedMedian(sorted),
    min: sorted[0]!,
    max: sorted[n - 1]!,
    low: quantile(medians, tail),
    high: quantile(medians, 1 - tail),
    level,
  };
}

/**
 * Student's t at 0.95 (a two-sided 90% interval) for 1-10 degrees of freedom; more runs take
 * the last, a little wide (1.645 in the limit).
 */
const T_95 = [6.314, 2.92, 2.353, 2.132, 2.015, 1.943, 1.895, 1.86, 1.833, 1.812];

export interface RunMediansInterval {
  runs: number;
  /** The mean of the runs' median ratios, and its two-sided 90% t-interval. */
  mean: number;
  low: number;
  high: number;
}

/**
 * The runs' median ratios taken as a sample of their own (each run one draw): their mean and
 * a 90% t-interval. It asks what clusteredRatioSummary asks, whether the runs' shifts leave the
 * target in doubt, without a bootstrap's optimism at a handful of runs; it assumes the
 * medians spread about normally. NaN bounds below 2 runs.
 */
export function runMediansInterval(runs: readonly (readonly number[])[]): RunMediansInterval {
  const medians = runs.filter((run) => run.length > 0).map(median);
  const k = medians.length;
  const mean = k === 0 ? Number.NaN : medians.reduce((a, b) => a + b, 0) / k;
  if (k < 2) return { runs: k, mean, low: Number.NaN, high: Number.NaN };
  const t = T_95[Math.min(k, T_95.length + 1) - 2] ?? Number.NaN;
  const variance = medians.reduce((sum, m) => sum + (m - mean) ** 2, 0) / (k - 1);
  const half = t * Math.sqrt(variance / k);
  return { runs: k, mean, low: mean - half, high: mean + half };
}

export type RatioVerdict = 'met' | 'missed' | 'not resolved';

/**
 * A target "at least `floor` of the base" (0.95: within 5% below it), judged from the interval:
 * met when all of it is at or above the floor, missed when all of it is below, not resolved
 * when it straddles the floor (or there are fewer than MIN_VERDICT_ROUNDS rounds).
 */
export function ratioVerdict(summary: RatioSummary, floor: number): RatioVerdict {
  if (summary.rounds < MIN_VERDICT_ROUNDS) return 'not resolved';
  if (summary.low >= floor) return 'met';
  if (summary.high < floor) return 'missed';
  return 'not resolved';
}

/**
 * A target "at most `cap` times the base" for a cost (latency, CPU time: lower is better):
 * met when all of the interval is at or below the cap, missed when all of it is above.
 */
export function ratioCapVerdict(summary: RatioSummary, cap: number): RatioVerdict {
  if (summary.rounds < MIN_VERDICT_ROUNDS) return 'not resolved';
  if (summary.high <= cap) return 'met';
  if (summary.low > cap) return 'missed';
  return 'not resolved';
}

/**
 * A target "above the base" (better than it): met when all of the interval is above 100%,
 * missed when all of it is at or below, not resolved when it spans 100%.
 */
export function ratioAboveVerdict(summary: RatioSummary): RatioVerdict {
  if (summary.rounds < MIN_VERDICT_ROUNDS) return 'not resolved';
  if (summary.low > 1) return 'met';
  if (summary.high <= 1) return 'missed';
  return 'not resolved';
}
