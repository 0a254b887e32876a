/**
 * The median of values already sorted ascending: the mean of the middle two for an even count,
 * NaN for none. Takes a typed array too, so a caller can sort a view in place and allocate
 * nothing.
 */
export function sortedMedian(sorted: ArrayLike<number>): number {
  const n = sorted.length;
  if (n === 0) return Number.NaN;
  const mid = n >> 1;
  return n % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/** The median of the finite values among `values` (NaN if there are none). */
export function median(values: readonly number[]): number {
  return sortedMedian(values.filter(Number.isFinite).sort((a, b) => a - b));
}
