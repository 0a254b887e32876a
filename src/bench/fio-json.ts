import type { BenchResult, DirectionResult } from './options.js';

/** One direction as fio's JSON output has it (jobs[].read / write / trim). */
export interface FioDirection {
  io_bytes: number;
  io_kbytes: number;
  bw_bytes: number;
  /** KiB/s */
  bw: number;
  iops: number;
  /** ms */
  runtime: number;
  total_ios: number;
  short_ios: number;
  drop_ios: number;
  slat_ns: FioLat;
  clat_ns: FioLat & { percentile: Record<string, number> };
  lat_ns: FioLat;
}

export interface FioLat {
  min: number;
  max: number;
  mean: number;
  stddev: number;
  N: number;
}

export interface FioJob {
  jobname: string;
  groupid: number;
  error: number;
  'job options': Record<string, string>;
  read: FioDirection;
  write: FioDirection;
  trim: FioDirection;
  /** ms */
  job_runtime: number;
  /** percent of the runtime */
  usr_cpu: number;
  sys_cpu: number;
  ctx: number;
  majf: number;
  minf: number;
  /** Not in fio: what this frontend adds. */
  'vhost-user': {
    completion: string;
    cpu_per_io_us: number;
    max_event_loop_delay_ns: number;
    gc_pauses: number;
    longest_gc_pause_ns: number;
    total_gc_pause_ns: number;
    verified_blocks: number;
    device_stats: Record<string, number>;
  };
}

export interface FioJson {
  'fio version': string;
  timestamp: number;
  timestamp_ms: number;
  time: string;
  'global options': Record<string, string>;
  jobs: FioJob[];
}

function direction(d: DirectionResult, runtimeMs: number): FioDirection {
  const l = d.latency;
  const lat: FioLat = { min: l.min, max: l.max, mean: l.mean, stddev: l.stddev, N: l.count };
  return {
    io_bytes: d.bytes,
    io_kbytes: Math.floor(d.bytes / 1024),
    bw_bytes: Math.round(d.bandwidth),
    bw: Math.round(d.bandwidth / 1024),
    iops: d.iops,
    runtime: d.ios > 0 ? runtimeMs : 0,
    total_ios: d.ios,
    short_ios: 0,
    drop_ios: 0,
    // Submission is synchronous inside the call, so fio's slat is not measured apart: the
    // latency of a call covers submission and completion (clat_ns = lat_ns).
    slat_ns: { min: 0, max: 0, mean: 0, stddev: 0, N: 0 },
    clat_ns: { ...lat, percentile: d.ios > 0 ? { ...l.percentiles } : {} },
    lat_ns: lat,
  };
}

const EMPTY: DirectionResult = {
  ios: 0,
  bytes: 0,
  iops: 0,
  bandwidth: 0,
  latency: {
    count: 0,
    min: 0,
    mean: 0,
    stddev: 0,
    p50: 0,
    p99: 0,
    p999: 0,
    max: 0,
    percentiles: {},
  },
};

/** fio's `--output-format=json` shape for one or more results (one job each). */
export function toFioJson(
  results: BenchResult | readonly BenchResult[],
  now = new Date(),
): FioJson {
  const list = Array.isArray(results)
    ? (results as readonly BenchResult[])
    : [results as BenchResult];
  return {
    'fio version': 'vhost-user-bench',
    timestamp: Math.floor(now.getTime() / 1000),
    timestamp_ms: now.getTime(),
    time: now.toString(),
    'global options': {},
    jobs: list.map((r, i) => {
      const ms = Math.round(r.runtime * 1000);
      const o = r.options;
      const jobOptions: Record<string, string> = {
        name: o.name,
        filename: o.socket,
        rw: o.rw,
        bs: String(o.bs),
        iodepth: String(o.iodepth),
        size: String(o.size),
        offset: String(o.offset),
        runtime: String(o.runtime),
        ramp_time: String(o.ramp_time),
        direct: o.direct ? '1' : '0',
        verify: o.verify,
        randseed: String(o.randseed),
      };
      if (o.rw === 'randrw') jobOptions.rwmixread = String(o.rwmixread);
      if (o.time_based) jobOptions.time_based = '1';
      if (o.rate_iops[0] > 0 || o.rate_iops[1] > 0) jobOptions.rate_iops = o.rate_iops.join(',');
      const pct = (us: number) => (r.runtime > 0 ? (us / 1e6 / r.runtime) * 100 : 0);
      return {
        jobname: r.name,
        groupid: i,
        error: 0,
        'job options': jobOptions,
        read: direction(r.read, ms),
        write: direction(r.write, ms),
        trim: direction(EMPTY, ms),
        job_runtime: ms,
        usr_cpu: pct(r.cpu.user),
        sys_cpu: pct(r.cpu.system),
        ctx: 0,
        majf: 0,
        minf: 0,
        'vhost-user': {
          completion: r.completion,
          cpu_per_io_us: r.cpu.perIo,
          max_event_loop_delay_ns: r.maxEventLoopDelay,
          gc_pauses: r.gc.count,
          longest_gc_pause_ns: r.gc.longestNs,
          total_gc_pause_ns: r.gc.totalNs,
          verified_blocks: r.verified,
          device_stats: r.deviceStats,
        },
      };
    }),
  };
}
