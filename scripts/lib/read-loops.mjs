// Closed loops of 4 KiB reads into pooled shared-memory buffers, for the benchmark scripts.
import { performance } from 'node:perf_hooks';

/**
 * `depth` loops of `await dev.readInto(buf, pos)` (or `dev.write(buf, pos)`) until `end`
 * (performance.now() ms); resolves the I/O count.
 */
export async function readLoops(dev, depth, end, write = false) {
  let ios = 0;
  await Promise.all(
    Array.from({ length: depth }, async (_, i) => {
      const buf = dev.allocBuffer(4096);
      let block = i;
      while (performance.now() < end) {
        block = (block + 7919) % 65536;
        if (write) await dev.write(buf, block * 4096);
        else await dev.readInto(buf, block * 4096);
        ios++;
      }
    }),
  );
  return ios;
}
