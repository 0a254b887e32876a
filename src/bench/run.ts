import { monitorEventLoopDelay } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import * as hdr from 'hdr-histogram-js';
import { openDevice } from '../api/open.js';
import type { BlockDevice } from '../api/block-device.js';
import { crc32c } from './crc32c.js';
import { watchGcPauses } from './gc-pauses.js';
import {
  resolveBenchOptions,
  type BenchOptions,
  type BenchProgress,
  type BenchResult,
  type DirectionResult,
  type LatencyStats,
  type ResolvedBenchOptions,
} from './options.js';
import { mulberry32 } from '../util/prng.js';

/** fio's default clat percentile list. */
export const FIO_PERCENTILES: readonly number[] = [
  1, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 99, 99.5, 99.9, 99.95, 99.99,
];

/** A block read back under verify=crc32c did not hold what this run wrote there. */
export class VerifyError extends Error {
  readonly code = 'VHOST_USER_ERR_BENCH_VERIFY' as const;
  constructor(
    readonly offset: number,
    detail: string,
  ) {
    super(`verify: block at offset ${offset}: ${detail}`);
    this.name = 'VerifyError';
  }
}

const HEADER = 16;

const prng = mulberry32;

type Histogram = ReturnType<typeof hdr.build>;

/**
 * 3 significant digits from 1 ns up to 1 hour. The WebAssembly build records a value in about a
 * fifth of the JavaScript build's time (~20 against ~120 ns here), which is CPU per I/O the
 * report charges to us; its memory lives outside the JS heap until destroy().
 */
function newHistogram(wasm: boolean): Histogram {
  return hdr.build({
    lowestDiscernibleValue: 1,
    highestTrackableValue: 3_600_000_000_000,
    numberOfSignificantValueDigits: 3,
    useWebAssembly: wasm,
  });
}

function latencyStats(h: Histogram): LatencyStats {
  const count = h.totalCount;
  if (count === 0) {
    const percentiles: Record<string, number> = {};
    for (const p of FIO_PERCENTILES) percentiles[p.toFixed(6)] = 0;
    return { count, min: 0, mean: 0, stddev: 0, p50: 0, p99: 0, p999: 0, max: 0, percentiles };
  }
  const min = h.minNonZeroValue;
  const max = h.maxValue;
  // min and max are exact; a percentile is the top of its bucket and the mean is taken from the
  // buckets' middles, so either could pass them (one I/O: p50 above max, mean below min).
  const within = (v: number): number => Math.min(max, Math.max(min, v));
  const at = (p: number): number => within(h.getValueAtPercentile(p));
  const percentiles: Record<string, number> = {};
  for (const p of FIO_PERCENTILES) percentiles[p.toFixed(6)] = at(p);
  return {
    count,
    min,
    mean: within(h.mean),
    stddev: h.stdDeviation,
    p50: at(50),
    p99: at(99),
    p999: at(99.9),
    max,
    percentiles,
  };
}

/** Writes a self-describing block: crc32c of the rest, the offset, then pseudo-random bytes. */
export function fillBlock(buf: Uint8Array, offset: number, rand: () => number): void {
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  view.setUint32(4, offset % 0x1_0000_0000, true);
  view.setUint32(8, Math.floor(offset / 0x1_0000_0000), true);
  for (let i = 12; i + 4 <= buf.length; i += 4)
    view.setUint32(i, (rand() * 0x1_0000_0000) >>> 0, true);
  view.setUint32(0, crc32c(buf, 4), true);
}

/** @throws VerifyError unless `buf` is a block fillBlock wrote for `offset`. */
export function checkBlock(buf: Uint8Array, offset: number): void {
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const stored = view.getUint32(0, true);
  const actual = crc32c(buf, 4);
  if (stored !== actual) {
    throw new VerifyError(offset, `crc32c ${actual.toString(16)} != stored ${stored.toString(16)}`);
  }
  const at = view.getUint32(4, true) + view.getUint32(8, true) * 0x1_0000_0000;
  if (at !== offset) throw new VerifyError(offset, `holds the block written for offset ${at}`);
}

interface Counters {
  ios: [number, number];
  bytes: [number, number];
}

/**
 * Runs one fio-style job against the device behind `options.socket` (opened for the run and
 * closed after) and returns IOPS, bandwidth, latency percentiles, CPU per I/O and the worst
 * event-loop delay of the measured period.
 *
 * @throws VerifyError when verify finds a bad block; RangeError on bad options; any error of
 *   openDevice or of an I/O.
 */
export async function runBench(options: BenchOptions): Promise<BenchResult> {
  resolveBenchOptions(options); // fail on bad options before connecting
  const { type, ...open } = options.open ?? {};
  const deviceOptions = {
    ...open,
    ...(options.completion !== undefined ? { completion: options.completion } : {}),
    queues: options.queues ?? 1,
  };
  const dev = await (type === 'scsi'
    ? openDevice(options.socket, { ...deviceOptions, type })
    : openDevice(options.socket, deviceOptions));
  options.opened?.();
  try {
    return await runOn(
      dev,
      resolveBenchOptions(options, dev.size),
      options.progress,
      options.signal,
    );
  } finally {
    await dev.close();
  }
}

async function runOn(
  dev: BlockDevice,
  o: ResolvedBenchOptions,
  progress: ((p: BenchProgress) => void) | undefined,
  signal: AbortSignal | undefined,
): Promise<BenchResult> {
  // Where the WebAssembly module cannot be instantiated, the JavaScript build (destroy() is a no-op).
  const wasm = await hdr.initWebAssembly().then(
    () => true,
    () => false,
  );
  const hist = [newHistogram(wasm), newHistogram(wasm)];
  try {
    return await measure(dev, o, progress, hist, wasm, signal);
  } finally {
    for (const h of hist) h.destroy();
  }
}

async function measure(
  dev: BlockDevice,
  o: ResolvedBenchOptions,
  progress: ((p: BenchProgress) => void) | undefined,
  hist: Histogram[],
  wasm: boolean,
  signal: AbortSignal | undefined,
): Promise<BenchResult> {
  const { bs, iodepth } = o;
  const blocks = o.size / bs;
  const rand = prng(o.randseed);
  const random = o.rw.startsWith('rand');
  const verify = o.verify === 'crc32c';
  if (verify && bs < HEADER) throw new RangeError('bench: verify needs bs >= 16');
  const written = new Set<number>();
  const writing = new Map<number, number>();
  /**
   * Writes started per block: a read is checked only if none started while it was in flight. A
   * write that both starts and ends during the read leaves `writing` as it found it, but the read
   * may return the block half old, half new (the page cache copies without a lock).
   */
  const writesStarted = new Map<number, number>();
  let verified = 0;

  const counters: Counters = { ios: [0, 0], bytes: [0, 0] };
  let seqCursor = 0;
  let issuedBytes = 0;
  const t0 = performance.now();
  const rampEnd = t0 + o.ramp_time * 1000;
  const end = o.runtime > 0 ? rampEnd + o.runtime * 1000 : Infinity;
  let measuring = o.ramp_time === 0;
  let measureStart = measuring ? t0 : NaN;
  let cpuStart = process.cpuUsage();
  const loopDelay = monitorEventLoopDelay({ resolution: 1 });
  loopDelay.enable();
  const gc = watchGcPauses();
  const startMeasuring = (now: number) => {
    measuring = true;
    measureStart = now;
    hist[0]!.reset();
    hist[1]!.reset();
    counters.ios = [0, 0];
    counters.bytes = [0, 0];
    cpuStart = process.cpuUsage();
    loopDelay.reset();
    gc.reset();
  };
  const rate = o.rate_iops;
  const issued: [number, number] = [0, 0];
  let stopped = signal?.aborted === true;
  const stop = (): void => {
    stopped = true;
  };
  signal?.addEventListener('abort', stop, { once: true });

  const nextDirection = (): 0 | 1 => {
    switch (o.rw) {
      case 'read':
      case 'randread':
        return 0;
      case 'write':
      case 'randwrite':
        return 1;
      case 'randrw':
        return rand() * 100 < o.rwmixread ? 0 : 1;
    }
  };
  const nextBlock = (): number => {
    if (random) return Math.floor(rand() * blocks);
    const b = seqCursor;
    seqCursor = (seqCursor + 1) % blocks;
    return b;
  };

  let phase: BenchProgress['phase'] = measuring ? 'run' : 'ramp';
  let last = { t: t0, ios: 0, bytes: 0 };
  let totalIos = 0;
  let totalBytes = 0;
  const timer = setInterval(() => {
    const now = performance.now();
    const dt = (now - last.t) / 1000;
    const report: BenchProgress = {
      phase,
      elapsed: (now - (phase === 'ramp' ? t0 : measureStart)) / 1000,
      iops: (totalIos - last.ios) / dt,
      mbps: (totalBytes - last.bytes) / dt / 1e6,
      eta: phase === 'verify' || end === Infinity ? NaN : Math.max(0, (end - now) / 1000),
    };
    last = { t: now, ios: totalIos, bytes: totalBytes };
    progress?.(report);
  }, 1000);

  const worker = async (index: number): Promise<void> => {
    const buf = o.direct ? dev.allocBuffer(bs) : Buffer.alloc(bs);
    const wrand = prng(o.randseed + 7919 * (index + 1));
    // The clock is read twice per I/O: the completion time serves as the next iteration's now.
    let now = performance.now();
    try {
      for (;;) {
        if (stopped || now >= end) return;
        if (!o.time_based && issuedBytes >= o.size) return;
        const dir = nextDirection();
        if (rate[dir]! > 0) {
          // fio-like pacing: the n-th I/O of a direction is due at start + n / rate.
          const due = t0 + (issued[dir]! / rate[dir]!) * 1000;
          issued[dir]!++;
          if (due > now) {
            // An interrupt cuts the wait short (it rejects the sleep, nothing else can).
            await sleep(Math.max(1, Math.ceil(due - now)), undefined, { signal }).catch(() => {});
            now = performance.now();
            if (stopped || now >= end) return;
          }
        } else {
          issued[dir]!++;
        }
        const block = nextBlock();
        const offset = o.offset + block * bs;
        issuedBytes += bs;
        let check = false;
        let startedBefore = 0;
        if (dir === 1) {
          if (verify) {
            fillBlock(buf, offset, wrand);
            writing.set(block, (writing.get(block) ?? 0) + 1);
            writesStarted.set(block, (writesStarted.get(block) ?? 0) + 1);
          }
        } else {
          check = verify && written.has(block) && !writing.has(block);
          startedBefore = writesStarted.get(block) ?? 0;
        }
        const start = performance.now();
        if (dir === 0) await dev.readInto(buf, offset);
        else await dev.write(buf, offset);
        const done = performance.now();
        now = done;
        if (dir === 1 && verify) {
          const n = writing.get(block)! - 1;
          if (n === 0) writing.delete(block);
          else writing.set(block, n);
          written.add(block);
        } else if (check && (writesStarted.get(block) ?? 0) === startedBefore) {
          checkBlock(buf, offset);
          verified++;
        }
        if (!measuring && done >= rampEnd) {
          startMeasuring(done);
          phase = 'run';
        }
        totalIos++;
        totalBytes += bs;
        if (measuring && start >= measureStart) {
          hist[dir]!.recordValue(Math.max(1, Math.round((done - start) * 1e6)));
          counters.ios[dir]!++;
          counters.bytes[dir]! += bs;
        }
      }
    } finally {
      if (o.direct && !dev.closed) dev.freeBuffer(buf);
    }
  };

  let measureEnd = NaN;
  let cpu = { user: 0, system: 0 };
  let maxDelay = 0;
  try {
    const workers: Promise<void>[] = [];
    for (let i = 0; i < iodepth; i++) {
      // One worker's failure ends the run: the others stop at their next I/O, not at runtime's end.
      workers.push(
        worker(i).catch((err: unknown) => {
          stopped = true;
          throw err;
        }),
      );
    }
    const results = await Promise.allSettled(workers);
    stopped = true;
    measureEnd = performance.now();
    // A ramp that outlasted the run measured nothing: no I/O, and no CPU or loop delay either
    // (the ramp's, over a measured time of ~0 s, made CPU percentages in the millions).
    const measured = measuring;
    if (!measured) startMeasuring(measureEnd);
    cpu = measured ? process.cpuUsage(cpuStart) : { user: 0, system: 0 };
    maxDelay = measured ? loopDelay.max : 0;
    gc.end();
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
    if (verify && written.size > 0 && signal?.aborted !== true) {
      phase = 'verify';
      verified += await verifyAll(
        dev,
        o,
        [...written].sort((a, b) => a - b),
      );
    }
  } finally {
    signal?.removeEventListener('abort', stop);
    clearInterval(timer);
    loopDelay.disable();
    await gc.stop();
  }

  const seconds = Math.max(1e-9, (measureEnd - measureStart) / 1000);
  const direction = (d: 0 | 1): DirectionResult => ({
    ios: counters.ios[d]!,
    bytes: counters.bytes[d]!,
    iops: counters.ios[d]! / seconds,
    bandwidth: counters.bytes[d]! / seconds,
    latency: latencyStats(hist[d]!),
  });
  const both = newHistogram(wasm);
  let totalLatency: LatencyStats;
  try {
    both.add(hist[0]!);
    both.add(hist[1]!);
    totalLatency = latencyStats(both);
  } finally {
    both.destroy();
  }
  const ios = counters.ios[0] + counters.ios[1];
  const bytes = counters.bytes[0] + counters.bytes[1];
  const stats = dev.stats as unknown as Record<string, number>;
  return {
    name: o.name,
    options: o,
    completion: o.completion ?? 'default',
    runtime: seconds,
    read: direction(0),
    write: direction(1),
    total: {
      ios,
      bytes,
      iops: ios / seconds,
      bandwidth: bytes / seconds,
      latency: totalLatency,
    },
    cpu: { user: cpu.user, system: cpu.system, perIo: ios > 0 ? (cpu.user + cpu.system) / ios : 0 },
    maxEventLoopDelay: Number.isFinite(maxDelay) ? maxDelay : 0,
    gc: gc.pauses,
    verified,
    deviceStats: { ...stats },
  };
}

/** Reads back every block the run wrote, `iodepth` at a time, and checks each. */
async function verifyAll(
  dev: BlockDevice,
  o: ResolvedBenchOptions,
  blocks: number[],
): Promise<number> {
  let next = 0;
  let count = 0;
  const reader = async () => {
    const buf = o.direct ? dev.allocBuffer(o.bs) : Buffer.alloc(o.bs);
    try {
      while (next < blocks.length) {
        const offset = o.offset + blocks[next++]! * o.bs;
        await dev.readInto(buf, offset);
        checkBlock(buf, offset);
        count++;
      }
    } finally {
      if (o.direct && !dev.closed) dev.freeBuffer(buf);
    }
  };
  const readers: Promise<void>[] = [];
  for (let i = 0; i < Math.min(o.iodepth, blocks.length); i++) readers.push(reader());
  await Promise.all(readers);
  return count;
}
