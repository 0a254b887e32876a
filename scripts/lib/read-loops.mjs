// Closed loops of 4 KiB reads into pooled shared-memory buffers, for the benchmark scripts.
import { Buffer } from 'node:buffer';
import { performance } from 'node:perf_hooks';

/**
 * `depth` loops of `await dev.readInto(buf, pos)` (or `dev.write(buf, pos)`) until `end`
 * (performance.now() ms); resolves the I/O count. `plain`: into and from ordinary Buffers
 * (bounced), not allocBuffer's.
 */
export async function readLoops(dev, depth, end, write = false, plain = false) {
  let ios = 0;
  await Promise.all(
    Array.from({ length: depth }, async (_, i) => {
      const buf = plain ? Buffer.alloc(4096) : dev.allocBuffer(4096);
      let block = i;
      while (performance.now() < end) {
        block = (block + 7919) % 65536;
        if (write) await dev.write(buf, block * 4096);
        else await dev.readInto(buf, block * 4096);
        ios++;
      }
      if (!plain) dev.freeBuffer(buf); // called again (warm-up rounds): no region used up
    }),
  );
  return ios;
}
