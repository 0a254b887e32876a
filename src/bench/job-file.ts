import type { BenchCompletion, BenchOptions, BenchRw } from './options.js';

/**
 * fio job files: `[global]` plus exactly one job section, `key=value` or bare `key` lines,
 * `;` / `#` comments (from either to the end of any line, as fio reads them), `include` lines. Keys
 * the benchmark implements become {@link BenchOptions}; other fio keys are reported as warnings
 * (ignored); anything that is not a fio key is an error.
 */

/** fio's option names (fio 3.x HOWTO), for telling "not implemented" from "not fio". */
export const FIO_KEYS: ReadonlySet<string> = new Set(
  `
name description wait_for filename filename_format unique_filename lockfile directory opendir
readwrite rw rw_sequencer rwmixread rwmixwrite unified_rw_reporting randrepeat randseed
allrandrepeat fallocate fadvise_hint fadvise_stream fdatasync fsync fsync_on_close end_fsync
sync_file_range write_barrier overwrite create_serialize create_fsync create_on_open
create_only allow_file_create allow_mounted_write pre_read unlink unlink_each_loop zonemode
zonerange zonesize zonecapacity zoneskip read_beyond_wp max_open_zones job_max_open_zones
ignore_zone_limits zone_reset_threshold zone_reset_frequency size io_size io_limit filesize
file_append fill_device fill_fs offset offset_align offset_increment number_ios
random_distribution percentage_random norandommap softrandommap random_generator
random_split random_split_granularity blocksize bs blocksize_range bsrange bssplit
blocksize_unaligned bs_unaligned bs_is_seq_rand blockalign ba zero_buffers refill_buffers
scramble_buffers buffer_compress_percentage buffer_compress_chunk dedupe_percentage
dedupe_mode dedupe_working_set_percentage dedupe_global buffer_pattern invalidate
sync direct atomic buffered ioengine iodepth iodepth_batch iodepth_batch_submit
iodepth_batch_complete iodepth_batch_complete_min iodepth_batch_complete_max iodepth_low
serialize_overlap io_submit_mode thinktime thinktime_spin thinktime_blocks
thinktime_blocks_type thinktime_iotime rate rate_min rate_iops rate_iops_min rate_process
rate_ignore_thinktime rate_cycle latency_target latency_window latency_percentile
latency_run max_latency ratemin ratecycle numjobs nice prio prioclass cmdprio_percentage
cmdprio_class cmdprio cmdprio_bssplit cpus_allowed cpumask cpus_allowed_policy
numa_cpu_nodes numa_mem_policy startdelay runtime timeout time_based ramp_time
clocksource gtod_reduce gtod_cpu disable_lat disable_clat disable_slat disable_bw
clat_percentiles lat_percentiles slat_percentiles percentile_list significant_figures
log_avg_msec log_hist_msec log_hist_coarseness log_max_value log_offset log_prio
log_compression log_compression_cpus log_store_compressed log_alternate_epoch
log_alternate_epoch_clock_id log_entries log_unix_epoch block_error_percentiles
write_bw_log write_lat_log write_hist_log write_iops_log write_iolog read_iolog
read_iolog_chunked replay_no_stall replay_redirect replay_scale replay_align
replay_time_scale replay_skip merge_blktrace_file merge_blktrace_scalars
merge_blktrace_iters iolog iopsavgtime bwavgtime group_reporting stats
per_job_logs exitall exitall_on_error exit_what stonewall wait_for_previous new_group
loops do_verify verify verifyonly verify_offset verify_interval verify_pattern
verify_fatal verify_dump verify_async verify_async_cpus verify_backlog
verify_backlog_batch verify_state_load verify_state_save verify_header_seed
experimental_verify trim_percentage trim_verify_zero trim_backlog
trim_backlog_batch continue_on_error ignore_error error_dump profile cgroup
cgroup_weight cgroup_nodelete uid gid flow_id flow flow_sleep steadystate ss
steadystate_duration ss_dur steadystate_ramp_time ss_ramp mem iomem mem_align
iomem_align hugepage-size lockmem pre_read kb_base unit_base nrfiles openfiles
file_service_type ioscheduler disk_util thread exec_prerun exec_postrun
ioprio ioprio_class hipri hipri_percentage fixedbufs registerfiles sqthread_poll
sqthread_poll_cpu nonvectored uncached nowait force_async cmd_type
libblkio_driver libblkio_path libblkio_pre_connect_props libblkio_num_entries
libblkio_queue_size libblkio_pre_start_props libblkio_vectored
libblkio_write_zeroes_on_trim libblkio_wait_mode libblkio_force_enable_completion_eventfd
userspace_reap ignore_zone_limits fdp fdp_pli_select fdp_pli dataplacement plids
plid_select sg_write_mode readfua writefua sg verify_only
`
    .split(/\s+/)
    .filter((k) => k.length > 0),
);

/** A job file that is not valid for the benchmark (syntax, unknown key, bad value). */
export class JobFileError extends Error {
  readonly code = 'VHOST_USER_ERR_BENCH_JOB_FILE' as const;
  constructor(
    readonly line: number,
    message: string,
    /** The included file the line is in (undefined: the job file itself). */
    readonly file?: string,
  ) {
    const where = file === undefined ? 'job file' : file;
    super(line > 0 ? `${where} line ${line}: ${message}` : `${where}: ${message}`);
    this.name = 'JobFileError';
  }
}

export interface ParsedJobFile {
  /** The job section's name. */
  name: string;
  /** Options from the file (`socket` only if filename / libblkio_path was given). */
  options: Partial<BenchOptions>;
  /** fio keys this benchmark does not implement (ignored), one message each. */
  warnings: string[];
}

const SIZE_UNITS: Record<string, number> = {
  '': 1,
  k: 1024,
  m: 1024 ** 2,
  g: 1024 ** 3,
  t: 1024 ** 4,
  p: 1024 ** 5,
  kib: 1024,
  mib: 1024 ** 2,
  gib: 1024 ** 3,
  tib: 1024 ** 4,
  kb: 1024,
  mb: 1024 ** 2,
  gb: 1024 ** 3,
  tb: 1024 ** 4,
  b: 1,
};

/**
 * fio's size syntax: an integer with an optional k/m/g/t/p suffix (base 1024, fio's default
 * kb_base). KiB/MiB... are read as 1024 too, as the other vhost-user commands read them (fio reads
 * them as powers of 10): job files refuse them before they get here.
 */
export function parseFioSize(value: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$/i.exec(value);
  const unit = m ? SIZE_UNITS[m[2]!.toLowerCase()] : undefined;
  if (!m || unit === undefined) throw new Error(`not a size: '${value}'`);
  const n = Number(m[1]) * unit;
  if (!Number.isSafeInteger(n)) throw new Error(`not a whole number of bytes: '${value}'`);
  return n;
}

/**
 * A size in a job file. fio, at its default kb_base=1024, reads the IEC spellings backwards
 * (KiB as 1000, MiB as 1000^2...) for old scripts' sake; parseFioSize reads them as 1024, as the
 * command line does. A job file is refused rather than run with other sizes than fio's.
 */
function jobFileSize(value: string): number {
  const iec = /^\s*(\d+(?:\.\d+)?)\s*([kmgtp])ib\s*$/i.exec(value);
  if (iec) {
    const letter = iec[2]!.toLowerCase();
    const power = 'kmgtp'.indexOf(letter) + 1;
    const fio = Number(iec[1]) * 1000 ** power;
    const of = (base: number): string => (power === 1 ? `${base}` : `${base}^${power}`);
    throw new Error(
      `'${value}': fio reads ${iec[2]!.toUpperCase()}iB as ${of(1000)} bytes at its default ` +
        `kb_base (${fio} bytes here); write ${iec[1]}${letter} for ${iec[1]} x ${of(1024)} bytes, ` +
        `or ${fio}`,
    );
  }
  return parseFioSize(value);
}

const TIME_UNITS: Record<string, number> = {
  '': 1,
  s: 1,
  sec: 1,
  m: 60,
  min: 60,
  h: 3600,
  d: 86400,
  ms: 1e-3,
  msec: 1e-3,
  us: 1e-6,
  usec: 1e-6,
};

/** fio's time syntax: seconds by default, or with s/m/h/d/ms/us. Returns seconds. */
export function parseFioTime(value: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$/i.exec(value);
  const unit = m ? TIME_UNITS[m[2]!.toLowerCase()] : undefined;
  if (!m || unit === undefined) throw new Error(`not a time: '${value}'`);
  return Number(m[1]) * unit;
}

function parseBool(value: string): boolean {
  if (value === '' || value === '1' || value === 'true') return true;
  if (value === '0' || value === 'false') return false;
  throw new Error(`expected 0 or 1, got '${value}'`);
}

function parseInteger(value: string, min: number, max: number): number {
  // Number('') is 0: a bare `rwmixread` or `randseed=` would pass for 0.
  const n = value.trim() === '' ? NaN : Number(value);
  if (!Number.isSafeInteger(n) || n < min || n > max) {
    throw new Error(`expected an integer in ${min}..${max}, got '${value}'`);
  }
  return n;
}

const RW_ALIASES: Record<string, BenchRw | undefined> = {
  read: 'read',
  write: 'write',
  randread: 'randread',
  randwrite: 'randwrite',
  randrw: 'randrw',
};

/** One implemented key: writes into `out`, or returns a warning (a value it cannot honour). */
type Apply = (value: string, out: Partial<BenchOptions>, ctx: { warn(msg: string): void }) => void;

const WAIT_MODES: Record<string, BenchCompletion> = {
  block: 'event',
  eventfd: 'event',
  loop: 'poll',
};

const IMPLEMENTED: Record<string, Apply> = {
  name: () => {},
  description: () => {},
  rw: (v, o) => {
    const base = v.split(':')[0]!;
    const rw = RW_ALIASES[base];
    if (rw === undefined) {
      throw new Error(
        `rw=${v} is not implemented (implemented: ${Object.keys(RW_ALIASES).join(', ')})`,
      );
    }
    if (base !== v) throw new Error(`rw=${v}: the ':<nr>' suffix is not implemented`);
    o.rw = rw;
  },
  rwmixread: (v, o) => {
    o.rwmixread = parseInteger(v, 0, 100);
  },
  rwmixwrite: (v, o) => {
    o.rwmixread = 100 - parseInteger(v, 0, 100);
  },
  bs: (v, o) => {
    if (v.includes(',')) throw new Error(`bs=${v}: separate read/write sizes are not implemented`);
    o.bs = jobFileSize(v);
  },
  iodepth: (v, o) => {
    o.iodepth = parseInteger(v, 1, 65536);
  },
  runtime: (v, o) => {
    o.runtime = parseFioTime(v);
  },
  time_based: (v, o) => {
    o.time_based = parseBool(v);
  },
  ramp_time: (v, o) => {
    o.ramp_time = parseFioTime(v);
  },
  size: (v, o) => {
    if (v.endsWith('%')) throw new Error(`size=${v}: percentages are not implemented`);
    o.size = jobFileSize(v);
  },
  offset: (v, o) => {
    if (v.endsWith('%')) throw new Error(`offset=${v}: percentages are not implemented`);
    o.offset = jobFileSize(v);
  },
  verify: (v, o) => {
    if (v === '0' || v === 'none') o.verify = 'none';
    else if (v === 'crc32c' || v === 'crc32c-intel') o.verify = 'crc32c';
    else throw new Error(`verify=${v} is not implemented (implemented: crc32c, none)`);
  },
  direct: (v, o) => {
    o.direct = parseBool(v);
  },
  rate_iops: (v, o) => {
    const parts = v.split(',');
    if (parts.length > 2) throw new Error(`rate_iops=${v}: trim rate is not implemented`);
    const read = parts[0] === '' ? 0 : parseInteger(parts[0]!, 0, 1e9);
    const write =
      parts.length === 2 ? (parts[1] === '' ? 0 : parseInteger(parts[1]!, 0, 1e9)) : read;
    o.rate_iops = [read, write];
  },
  randseed: (v, o) => {
    o.randseed = parseInteger(v, 0, 2 ** 32 - 1);
  },
  filename: (v, o) => {
    o.socket = v;
  },
  libblkio_path: (v, o) => {
    o.socket = v;
  },
  ioengine: (v, _o, ctx) => {
    if (v !== 'libblkio')
      ctx.warn(`ioengine=${v} ignored: this benchmark is its own engine (vhost-user)`);
  },
  libblkio_driver: (v) => {
    if (v !== 'virtio-blk-vhost-user') {
      throw new Error(`libblkio_driver=${v}: only virtio-blk-vhost-user is implemented`);
    }
  },
  libblkio_num_entries: (v, o) => {
    o.open = { ...o.open, queueSize: parseInteger(v, 1, 32768) };
  },
  libblkio_queue_size: (v, o) => {
    o.open = { ...o.open, queueSize: parseInteger(v, 1, 32768) };
  },
  libblkio_wait_mode: (v, o) => {
    const mode = WAIT_MODES[v];
    if (mode === undefined)
      throw new Error(`libblkio_wait_mode must be block, eventfd or loop, got '${v}'`);
    o.completion = mode;
  },
  hipri: (v, o) => {
    if (parseBool(v)) o.completion = 'poll';
  },
  kb_base: (v) => {
    // 1000 would make k (and KB) 1000 bytes; sizes here are read at fio's default only.
    if (v !== '1024') throw new Error(`kb_base=${v} is not implemented (only 1024, the default)`);
  },
  numjobs: (v, _o, ctx) => {
    if (parseInteger(v, 1, 65536) !== 1) ctx.warn(`numjobs=${v} ignored: one job is run`);
  },
  // Accepted because fio prints this report anyway.
  group_reporting: () => {},
  thread: () => {},
};

/**
 * Parses a fio job file. Throws {@link JobFileError} on syntax errors, keys that are not fio
 * keys, more or fewer than one job section, or values the benchmark cannot use. `include NAME`
 * lines take their key=value lines from `include(NAME)` (the caller resolves NAME, fio does so
 * against the job file's folder) into the section they are in; without `include`, or with a
 * section or another include in the included file, they are an error.
 */
export function parseJobFile(text: string, include?: (name: string) => string): ParsedJobFile {
  const sections: {
    name: string;
    line: number;
    entries: { key: string; value: string; line: number; file?: string }[];
  }[] = [];
  const readLines = (content: string, file: string | undefined): void => {
    function fail(line: number, message: string): never {
      throw new JobFileError(line, message, file);
    }
    const lines = content.split(/\r?\n/);
    for (let i = 0; i < lines.length; i++) {
      const lineNo = i + 1;
      // fio ends every line at its first ';' or '#': a comment may follow a value or a [section].
      const line = lines[i]!.replace(/[;#].*/, '').trim();
      if (line === '') continue;
      const section = /^\[([^\]]+)\]$/.exec(line);
      if (section) {
        if (file !== undefined) fail(lineNo, `'${line}': a section in an included file`);
        sections.push({ name: section[1]!.trim(), line: lineNo, entries: [] });
        continue;
      }
      if (sections.length === 0) fail(lineNo, `'${line}' is outside any [section]`);
      const included = /^include\s+(.+)$/.exec(line);
      if (included) {
        if (include === undefined || file !== undefined) {
          fail(
            lineNo,
            `'${line}': include directives ${file ? 'in included files ' : ''}are not implemented`,
          );
        }
        let content: string;
        try {
          content = include(included[1]!);
        } catch (err) {
          fail(
            lineNo,
            `cannot read ${included[1]!}: ${err instanceof Error ? err.message : String(err)}`,
          );
        }
        readLines(content, included[1]!);
        continue;
      }
      const eq = line.indexOf('=');
      const key = (eq < 0 ? line : line.slice(0, eq)).trim();
      const value = eq < 0 ? '' : line.slice(eq + 1).trim();
      if (!/^[a-z0-9_-]+$/i.test(key)) fail(lineNo, `malformed line '${line}'`);
      sections[sections.length - 1]!.entries.push({
        key: key.toLowerCase(),
        value,
        line: lineNo,
        ...(file !== undefined ? { file } : {}),
      });
    }
  };
  readLines(text, undefined);
  const globals = sections.filter((s) => s.name === 'global');
  const jobs = sections.filter((s) => s.name !== 'global');
  if (jobs.length !== 1) {
    throw new JobFileError(
      jobs[1]?.line ?? 0,
      `exactly one job section is supported (besides [global]), found ${jobs.length}`,
    );
  }
  const job = jobs[0]!;
  const options: Partial<BenchOptions> = { name: job.name };
  const warnings: string[] = [];
  for (const section of [...globals, job]) {
    for (const { key, value, line, file } of section.entries) {
      const where = `${file === undefined ? '' : `${file} `}line ${line}`;
      const canonical = KEY_ALIASES[key] ?? key;
      const apply = IMPLEMENTED[canonical];
      if (apply === undefined) {
        if (!FIO_KEYS.has(key)) throw new JobFileError(line, `'${key}' is not a fio option`, file);
        warnings.push(`${where}: fio option '${key}' is not implemented (ignored)`);
        continue;
      }
      try {
        apply(value, options, { warn: (msg) => warnings.push(`${where}: ${msg}`) });
      } catch (err) {
        throw new JobFileError(line, err instanceof Error ? err.message : String(err), file);
      }
    }
  }
  return { name: job.name, options, warnings };
}

const KEY_ALIASES: Record<string, string> = {
  readwrite: 'rw',
  blocksize: 'bs',
};
