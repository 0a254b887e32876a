// The order of the arms of a paired benchmark in each round.

/**
 * Arm indices 0..n-1 in the order round `round` runs them: a Williams design (a balanced Latin
 * square). Over a whole cycle of n rounds (2n when n is odd) every arm runs equally often in
 * every position and, within rounds, directly after every other arm equally often. A plain
 * rotation always runs the same arm before a given one, and what that arm leaves behind (the
 * daemon's speed depends on what its frontend did just before) would then count towards one arm
 * only. Not balanced: the pairs across a round boundary (last arm of one round, first of the
 * next), and round counts that are not whole cycles.
 */
export function armOrder(n, round) {
  const base = [];
  for (let i = 0, low = 1, high = n - 1; i < n; i++) {
    base.push(i === 0 ? 0 : i % 2 === 1 ? low++ : high--);
  }
  const period = n % 2 === 0 ? n : 2 * n;
  const r = round % period;
  const row = base.map((arm) => (arm + r) % n);
  return r >= n ? row.reverse() : row;
}
