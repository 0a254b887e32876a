// Closed loops of 4 KiB reads into pooled shared-memory buffers, for the benchmark scripts.
import { Buffer } from 'node:buffer';
import { performance } from 'node:perf_hooks';

/**
 * One closed loop of `await dev.readInto(buf, pos)` (or `dev.write(buf, pos)`) until `end`
 * (performance.now() ms), starting at block `i`, over the 256 MiB from byte `base`; resolves its
 * I/O count. `plain`: into and from an ordinary Buffer (bounced), not allocBuffer's.
 */
export async function readLoop(dev, i, end, write = false, plain = false, base = 0) {
  const buf = plain ? Buffer.alloc(4096) : dev.allocBuffer(4096);
  let block = i;
  let ios = 0;
  while (performance.now() < end) {
    block = (block + 7919) % 65536;
    if (write) await dev.write(buf, base + block * 4096);
    else await dev.readInto(buf, base + block * 4096);
    ios++;
  }
  if (!plain) dev.freeBuffer(buf); // called again (warm-up rounds): no region used up
  return ios;
}

/** `depth` loops of readLoop at once; resolves their I/O count. */
export async function readLoops(dev, depth, end, write = false, plain = false, base = 0) {
  const all = Array.from({ length: depth }, (_, i) => readLoop(dev, i, end, write, plain, base));
  const counts = await Promise.all(all);
  return counts.reduce((a, b) => a + b, 0);
}
