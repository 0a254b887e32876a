/** A burst of reads made in one tick, with the kicks each call made (burst-kicks, kick-paths). */
import type { BlockDevice } from '../../src/index.js';

/**
 * Makes `count` reads of one sector from `firstSector` on, all in this tick: the kicks each
 * call added, and the kick count before the first.
 */
export function burst(
  dev: BlockDevice,
  count: number,
  firstSector: number,
  signal: AbortSignal,
  pending: Promise<unknown>[],
): { inCalls: number[]; before: number } {
  const before = dev.stats.kicks;
  const inCalls: number[] = [];
  for (let i = 0; i < count; i++) {
    const k = dev.stats.kicks;
    pending.push(dev.read((firstSector + i) * 512, 512, { signal }));
    inCalls.push(dev.stats.kicks - k);
  }
  return { inCalls, before };
}
