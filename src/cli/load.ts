import { randomInt } from 'node:crypto';
import type { BlockDevice } from '../index.js';
import { ProgressLine } from './progress.js';
import { formatSize } from './size.js';

export interface LoadOptions {
  /** Device range the load may touch: [start, end). */
  start: number;
  end: number;
  ioSize: number;
  depth: number;
  seconds: number;
}

export interface LoadResult {
  ops: number;
  reads: number;
  writes: number;
  bytes: number;
  elapsedMs: number;
  iops: number;
  bytesPerSecond: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
}

function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor((sorted.length * p) / 100))]!;
}

/**
 * Random aligned reads and writes (50/50) at a fixed depth for a fixed time. Each worker owns a
 * buffer in shared memory, so the I/O is zero-copy and the numbers show the ring, not memcpy.
 */
export async function runLoad(dev: BlockDevice, options: LoadOptions): Promise<LoadResult> {
  const slots = Math.floor((options.end - options.start) / options.ioSize);
  if (slots < 1) throw new Error('load: no room on the device for the random load');
  let latencies = new Float64Array(1 << 16);
  let ops = 0;
  let reads = 0;
  const progress = new ProgressLine();
  const started = process.hrtime.bigint();
  const deadline = Date.now() + options.seconds * 1000;
  const elapsedSeconds = (): number => Number(process.hrtime.bigint() - started) / 1e9;
  const worker = async (): Promise<void> => {
    const buffer = dev.allocBuffer(options.ioSize);
    buffer.fill(randomInt(256));
    try {
      while (Date.now() < deadline) {
        const position = options.start + randomInt(slots) * options.ioSize;
        const read = Math.random() < 0.5;
        const t0 = process.hrtime.bigint();
        if (read) await dev.readInto(buffer, position);
        else await dev.write(buffer, position);
        const ms = Number(process.hrtime.bigint() - t0) / 1e6;
        if (ops === latencies.length) {
          const grown = new Float64Array(latencies.length * 2);
          grown.set(latencies);
          latencies = grown;
        }
        latencies[ops++] = ms;
        if (read) reads++;
        progress.update(() => {
          const s = elapsedSeconds();
          return (
            `load: ${(ops / s).toFixed(0)} IOPS, ${formatSize(Math.round((ops * options.ioSize) / s))}/s, ` +
            `${Math.max(0, (deadline - Date.now()) / 1000).toFixed(1)} s left`
          );
        });
      }
    } finally {
      dev.freeBuffer(buffer);
    }
  };
  await Promise.all(Array.from({ length: options.depth }, () => worker()));
  progress.done();
  const elapsedMs = elapsedSeconds() * 1000;
  const sorted = latencies.slice(0, ops).sort();
  return {
    ops,
    reads,
    writes: ops - reads,
    bytes: ops * options.ioSize,
    elapsedMs,
    iops: ops / (elapsedMs / 1000),
    bytesPerSecond: (ops * options.ioSize) / (elapsedMs / 1000),
    p50Ms: percentile(sorted, 50),
    p99Ms: percentile(sorted, 99),
    maxMs: ops > 0 ? sorted[ops - 1]! : 0,
  };
}
