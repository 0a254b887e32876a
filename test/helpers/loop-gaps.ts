/**
 * Gaps (ms) between consecutive event-loop iterations while `work` runs, sorted: a probe runs once
 * per iteration (setImmediate, the phase the polling turns run in) and records the time since its
 * last run. Also used by scripts/loop-turns.mjs (from dist/test/helpers).
 */
export async function loopGaps(work: Promise<unknown>): Promise<Float64Array> {
  let done = false;
  const finish = (): void => {
    done = true;
  };
  // Handled here either way; `await work` below rethrows a failure.
  work.then(finish, finish);
  const gaps: number[] = [];
  let last = performance.now();
  await new Promise<void>((resolve) => {
    const probe = (): void => {
      const now = performance.now();
      gaps.push(now - last);
      last = now;
      if (done) resolve();
      else setImmediate(probe);
    };
    setImmediate(probe);
  });
  await work;
  return Float64Array.from(gaps).sort();
}
