import type { ScsiOpenOptions } from '../api/open.js';

/** fio's rw= values that the benchmark implements. */
export type BenchRw = 'read' | 'write' | 'randread' | 'randwrite' | 'randrw';
export const BENCH_RW: readonly BenchRw[] = ['read', 'write', 'randread', 'randwrite', 'randrw'];

/** Completion modes (as OpenOptions['completion']). */
export type BenchCompletion = NonNullable<ScsiOpenOptions['completion']>;

/** Once a second while the benchmark runs. */
export interface BenchProgress {
  phase: 'ramp' | 'run' | 'verify';
  /** Seconds since the start of the phase. */
  elapsed: number;
  /** Over the last second. */
  iops: number;
  /** MB/s (10^6 bytes) over the last second. */
  mbps: number;
  /** Seconds left in the run (ramp included), NaN when unknown (a verify pass). */
  eta: number;
}

/**
 * A benchmark job, in fio's vocabulary (and units: sizes in bytes, times in seconds) where fio
 * has a word for it.
 */
export interface BenchOptions {
  /** vhost-user socket of the device (fio: filename / libblkio_path). */
  socket: string;
  rw?: BenchRw;
  /** Percentage of reads in 'randrw' (default 50). */
  rwmixread?: number;
  /** Block size of each I/O, bytes (default 4096). */
  bs?: number;
  /** I/Os kept in flight (default 1). */
  iodepth?: number;
  /** Seconds to measure (default 10; 0 = until `size` bytes were done once). */
  runtime?: number;
  /**
   * Keep going over `size` until `runtime` ends (fio: time_based). Default true when runtime > 0;
   * ignored when runtime is 0, as fio ignores it without a runtime (it would never end).
   */
  time_based?: boolean;
  /** Seconds of I/O before measuring starts (default 0). */
  ramp_time?: number;
  /** Bytes of the device the job covers, from `offset` (default: to the end). */
  size?: number;
  /** First byte of the region (default 0). */
  offset?: number;
  /** Request queues (default 1); I/Os are spread round-robin. */
  queues?: number;
  /**
   * 'crc32c': every written block carries a header with its crc32c; reads of blocks written by
   * this run are checked, and a write job reads everything back at the end. A job that writes
   * nothing (read, randread, randrw with rwmixread 100) is refused: unlike fio's, this verify does
   * not check data an earlier job left.
   */
  verify?: 'none' | 'crc32c';
  /** true: buffers from allocBuffer (zero copy); false: ordinary Buffers (copied). Default true. */
  direct?: boolean;
  /** Cap on IOPS, per direction like fio (a number for both, or [read, write]); 0 = none. */
  rate_iops?: number | readonly [number, number];
  /** Completion strategy (default: the device's default). */
  completion?: BenchCompletion;
  /** Seed of the random offsets and mix (fio: randseed). */
  randseed?: number;
  /** Name of the job in reports. */
  name?: string;
  /**
   * More device options (queueSize, memorySize, completionOptions...), and the device type:
   * 'blk' (default) or 'scsi' (then target / lun, or the first disk LUN found).
   */
  open?: Omit<ScsiOpenOptions, 'completion' | 'queues'> & { type?: 'blk' | 'scsi' };
  progress?: (progress: BenchProgress) => void;
  /** Called once the device is open (errors before it are the open's: its options, the device). */
  opened?: () => void;
  /**
   * Ends the run early (fio's Ctrl-C): no new I/O starts, the result covers the time until the
   * I/Os in flight completed, and the final verify pass is skipped.
   */
  signal?: AbortSignal;
}

/** Latency statistics of one direction, in ns. */
export interface LatencyStats {
  count: number;
  min: number;
  mean: number;
  stddev: number;
  p50: number;
  p99: number;
  p999: number;
  max: number;
  /** fio's percentile list, keyed like fio ("99.000000"). */
  percentiles: Record<string, number>;
}

export interface DirectionResult {
  ios: number;
  bytes: number;
  iops: number;
  /** Bytes per second. */
  bandwidth: number;
  latency: LatencyStats;
}

export interface BenchResult {
  name: string;
  /** The options as run, with defaults filled in. */
  options: ResolvedBenchOptions;
  completion: string;
  /** Measured seconds (ramp excluded). */
  runtime: number;
  read: DirectionResult;
  write: DirectionResult;
  /** Both directions. */
  total: DirectionResult;
  /** Process CPU over the measured time, µs. */
  cpu: { user: number; system: number; perIo: number };
  /** Worst event-loop delay seen over the measured time, ns. */
  maxEventLoopDelay: number;
  /** Garbage-collection pauses over the measured time (one cause of loop delays). */
  gc: GcPauses;
  /** Blocks checked by verify (0 without verify). */
  verified: number;
  /** Device counters at the end. */
  deviceStats: Record<string, number>;
}

export interface GcPauses {
  count: number;
  longestNs: number;
  totalNs: number;
}

export type ResolvedBenchOptions = Required<
  Omit<BenchOptions, 'progress' | 'opened' | 'signal' | 'open' | 'completion' | 'rate_iops'>
> & {
  completion: BenchCompletion | undefined;
  rate_iops: readonly [number, number];
};

function check(cond: boolean, message: string): void {
  if (!cond) throw new RangeError(`bench: ${message}`);
}

/** Fills in defaults and checks ranges (RangeError with the option's fio name). */
export function resolveBenchOptions(o: BenchOptions, deviceSize?: number): ResolvedBenchOptions {
  check(typeof o.socket === 'string' && o.socket.length > 0, 'socket must be a non-empty path');
  const rw = o.rw ?? 'randread';
  check(BENCH_RW.includes(rw), `rw must be one of ${BENCH_RW.join(', ')}, got ${String(rw)}`);
  const int = (name: string, v: number, min: number, max: number) =>
    check(
      Number.isSafeInteger(v) && v >= min && v <= max,
      `${name} must be an integer in ${min}..${max}, got ${v}`,
    );
  const rwmixread = o.rwmixread ?? 50;
  int('rwmixread', rwmixread, 0, 100);
  const bs = o.bs ?? 4096;
  int('bs', bs, 512, 64 << 20);
  check(bs % 512 === 0, `bs must be a multiple of 512, got ${bs}`);
  const iodepth = o.iodepth ?? 1;
  int('iodepth', iodepth, 1, 65536);
  const runtime = o.runtime ?? 10;
  check(Number.isFinite(runtime) && runtime >= 0, `runtime must be >= 0 seconds, got ${runtime}`);
  const rampTime = o.ramp_time ?? 0;
  check(Number.isFinite(rampTime) && rampTime >= 0, `ramp_time must be >= 0, got ${rampTime}`);
  const offset = o.offset ?? 0;
  int('offset', offset, 0, Number.MAX_SAFE_INTEGER);
  check(offset % 512 === 0, `offset must be a multiple of 512, got ${offset}`);
  let size = o.size ?? (deviceSize === undefined ? 0 : deviceSize - offset);
  if (deviceSize !== undefined) {
    check(
      offset + size <= deviceSize,
      `offset + size (${offset + size}) is past the device end (${deviceSize})`,
    );
    size = Math.floor(size / bs) * bs;
    check(size >= bs, `size must hold at least one block of ${bs} bytes`);
  }
  const queues = o.queues ?? 1;
  int('queues', queues, 1, 256);
  const verify = o.verify ?? 'none';
  check(
    verify === 'none' || verify === 'crc32c',
    `verify must be 'none' or 'crc32c', got ${String(verify)}`,
  );
  // Only blocks this run wrote are checked. fio's verify on a read job checks what an earlier
  // write job left, which this benchmark cannot tell from other data: refused, not a silent 0.
  check(
    verify === 'none' ||
      (rw !== 'read' && rw !== 'randread' && !(rw === 'randrw' && rwmixread === 100)),
    `verify=crc32c checks the blocks this run writes, and rw=${rw}` +
      `${rw === 'randrw' ? ' with rwmixread=100' : ''} writes nothing (use write, randwrite or ` +
      'randrw; unlike fio, data left by an earlier job is not checked)',
  );
  const rate = o.rate_iops ?? 0;
  const rateIops: readonly [number, number] = typeof rate === 'number' ? [rate, rate] : rate;
  for (const r of rateIops) check(Number.isFinite(r) && r >= 0, `rate_iops must be >= 0, got ${r}`);
  return {
    socket: o.socket,
    rw,
    rwmixread,
    bs,
    iodepth,
    runtime,
    time_based: (o.time_based ?? true) && runtime > 0,
    ramp_time: rampTime,
    size,
    offset,
    queues,
    verify,
    direct: o.direct ?? true,
    rate_iops: rateIops,
    completion: o.completion,
    randseed: o.randseed ?? 0x5eed,
    name: o.name ?? `${rw}-bs${bs}-qd${iodepth}`,
  };
}
