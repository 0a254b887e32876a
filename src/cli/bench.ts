import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import {
  BENCH_RW,
  JobFileError,
  parseFioSize,
  parseFioTime,
  parseJobFile,
  runBench,
  toFioJson,
  type BenchOptions,
  type BenchResult,
  type BenchRw,
  type DirectionResult,
} from '../bench/index.js';
import {
  checkCompletionKnobs,
  COMPLETION_MODES,
  type CompletionMode,
  type CompletionOptions,
} from '../completion/index.js';
import {
  expectPositionals,
  flag,
  stringOption,
  type CommandSpec,
  type OptionValues,
  type ParsedArgs,
} from './args.js';
import { EXIT_INTERRUPTED, UsageError } from './errors.js';
import { printJson } from './output.js';
import { ProgressLine } from './progress.js';
import { formatSize } from './size.js';
import { asUsageError, deviceArgs } from './device.js';

export const spec: CommandSpec = {
  name: 'bench',
  usage: '<socket> [--job FILE] [options]',
  summary:
    'Measure a vhost-user-blk device (or with --type scsi a virtio-scsi LUN) with an fio-style ' +
    'job: IOPS, bandwidth, latency ' +
    'percentiles, CPU time per I/O of this process, the worst event-loop delay, kicks and calls.',
  details: `Options use fio's names and defaults (sizes take k/m/g suffixes, base 1024; times are
seconds unless suffixed ms/us/m). In a job file, KiB/MiB/GiB sizes are refused: fio reads them as
powers of 10 by default. --job reads a fio job file ([global] plus one job section; include lines read key=value lines
from a file beside it):
keys this command implements are used, other fio keys are ignored with one warning line on
stderr, keys that are not fio's are an error. Options on the command line override the file.
--json prints fio's JSON output (jobs[].read/write with clat_ns percentiles, usr_cpu, sys_cpu)
and nothing else on stdout. A progress line is drawn on stderr when it is a terminal. Ctrl-C
(SIGINT) stops the run and prints the results so far, with exit code 130; a second one kills.

examples:
  vhost-user bench /run/vhost.sock --rw randread --bs 4k --iodepth 32 --runtime 10
  vhost-user bench /run/vhost.sock --rw randrw --rwmixread 70 --verify crc32c --json
  vhost-user bench /run/vhost.sock --job randread.fio --completion poll`,
  options: {
    rw: {
      type: 'string',
      arg: 'MODE',
      help: `${BENCH_RW.join('|')} (default randread)`,
    },
    rwmixread: { type: 'string', arg: 'PCT', help: 'percentage of reads in randrw (default 50)' },
    bs: { type: 'string', arg: 'BYTES', help: 'block size, a multiple of 512 (default 4k)' },
    iodepth: { type: 'string', arg: 'N', help: 'I/Os kept in flight (default 1)' },
    runtime: {
      type: 'string',
      arg: 'TIME',
      help: 'seconds to measure (default 10; 0 = one pass over --size)',
    },
    'ramp-time': {
      type: 'string',
      arg: 'TIME',
      help: 'seconds of I/O before measuring (default 0)',
    },
    ramp_time: { type: 'string', arg: 'TIME', help: 'same as --ramp-time (fio spelling)' },
    size: {
      type: 'string',
      arg: 'BYTES',
      help: 'bytes of the device covered (default: to the end)',
    },
    offset: { type: 'string', arg: 'BYTES', help: 'first byte of the region (default 0)' },
    queues: {
      type: 'string',
      arg: 'N',
      help: 'request queues, I/O spread round-robin (default 1)',
    },
    verify: {
      type: 'string',
      arg: 'crc32c',
      help: 'write self-checking blocks and check every read of them (a job that writes)',
    },
    completion: {
      type: 'string',
      arg: 'MODE',
      help: `${COMPLETION_MODES.join('|')} (default: the library's, adaptive)`,
    },
    'completion-options': {
      type: 'string',
      arg: 'JSON',
      help: 'the strategies\' knobs (CompletionOptions), e.g. \'{"adaptive":{"yieldOnSharedCpu":false}}\'',
    },
    'direct-buffers': {
      type: 'boolean',
      help: 'I/O buffers from allocBuffer, zero copy (the default)',
    },
    'no-direct-buffers': {
      type: 'boolean',
      help: 'ordinary Buffers, copied through bounce buffers',
    },
    rate_iops: {
      type: 'string',
      arg: 'N[,M]',
      help: 'cap on IOPS per direction (read[,write]); 0 = none',
    },
    'rate-iops': { type: 'string', arg: 'N[,M]', help: 'same as --rate_iops' },
    randseed: { type: 'string', arg: 'N', help: 'seed of offsets and the read/write mix' },
    name: { type: 'string', arg: 'NAME', help: 'job name in the report' },
    job: { type: 'string', arg: 'FILE', help: 'fio job file ([global] + one job section)' },
  },
  json: true,
  device: true,
};

/** Parses with `parse`, turning its error into a UsageError that names the option. */
function parsed<T>(
  values: OptionValues,
  names: string[],
  parse: (text: string) => T,
): T | undefined {
  const given = names.filter((n) => stringOption(values, n) !== undefined);
  if (given.length > 1) {
    throw new UsageError(`bench: --${given[0]} and --${given[1]} are the same option, give one`);
  }
  const name = given[0];
  if (name === undefined) return undefined;
  const text = stringOption(values, name)!;
  try {
    return parse(text);
  } catch (err) {
    if (err instanceof UsageError) throw err;
    const message = err instanceof Error ? err.message : String(err);
    throw new UsageError(`bench: --${name}: ${message}`);
  }
}

function integer(min: number, max: number): (text: string) => number {
  return (text) => {
    const n = Number(text);
    if (text.trim() === '' || !Number.isSafeInteger(n) || n < min || n > max) {
      throw new Error(`expected an integer in ${min}..${max}, got '${text}'`);
    }
    return n;
  };
}

function oneOf<T extends string>(allowed: readonly T[]): (text: string) => T {
  return (text) => {
    if (!allowed.includes(text as T)) {
      throw new Error(`expected one of ${allowed.join(', ')}, got '${text}'`);
    }
    return text as T;
  };
}

/** --completion-options: JSON, checked as openBlockDevice would check it. */
function completionOptions(text: string): CompletionOptions {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new Error(`not JSON: ${err instanceof Error ? err.message : String(err)}`);
  }
  checkCompletionKnobs(value as CompletionOptions);
  return value as CompletionOptions;
}

function rateIops(text: string): number | readonly [number, number] {
  const parts = text.split(',');
  if (parts.length > 2) throw new Error(`expected N or N,M, got '${text}'`);
  const one = (p: string) => (p === '' ? 0 : integer(0, 1e9)(p));
  return parts.length === 1 ? one(parts[0]!) : [one(parts[0]!), one(parts[1]!)];
}

/** The command line's options (only those given), in BenchOptions form. */
function optionsFromArgs(values: OptionValues): Partial<BenchOptions> {
  const o: Partial<BenchOptions> = {};
  const set = <K extends keyof BenchOptions>(key: K, value: BenchOptions[K] | undefined) => {
    if (value !== undefined) o[key] = value;
  };
  set('rw', parsed(values, ['rw'], oneOf<BenchRw>(BENCH_RW)));
  set('rwmixread', parsed(values, ['rwmixread'], integer(0, 100)));
  set('bs', parsed(values, ['bs'], parseFioSize));
  set('iodepth', parsed(values, ['iodepth'], integer(1, 65536)));
  set('runtime', parsed(values, ['runtime'], parseFioTime));
  set('ramp_time', parsed(values, ['ramp-time', 'ramp_time'], parseFioTime));
  set('size', parsed(values, ['size'], parseFioSize));
  set('offset', parsed(values, ['offset'], parseFioSize));
  set('queues', parsed(values, ['queues'], integer(1, 256)));
  set(
    'verify',
    parsed(values, ['verify'], (t) => oneOf(['crc32c', 'none'] as const)(t)),
  );
  set('completion', parsed(values, ['completion'], oneOf<CompletionMode>(COMPLETION_MODES)));
  set('rate_iops', parsed(values, ['rate_iops', 'rate-iops'], rateIops));
  set('randseed', parsed(values, ['randseed'], integer(0, 2 ** 32 - 1)));
  set('name', stringOption(values, 'name'));
  const direct = flag(values, 'direct-buffers');
  const indirect = flag(values, 'no-direct-buffers');
  if (direct && indirect) {
    throw new UsageError('bench: --direct-buffers and --no-direct-buffers contradict each other');
  }
  if (direct || indirect) o.direct = direct;
  return o;
}

function readJob(path: string): ReturnType<typeof parseJobFile> {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    throw new UsageError(`bench: cannot read job file: ${message}`);
  }
  try {
    // fio reads an included file's relative path from the job file's folder.
    return parseJobFile(text, (name) => readFileSync(resolve(dirname(path), name), 'utf8'));
  } catch (err) {
    if (err instanceof JobFileError) throw new UsageError(`bench: ${path}: ${err.message}`);
    throw err;
  }
}

/** runBench's own option checks are RangeErrors worded 'bench: ...': usage errors here. */
function isOptionError(err: unknown): err is RangeError {
  return (
    err instanceof RangeError &&
    !('code' in err && typeof (err as { code: unknown }).code === 'string') &&
    err.message.startsWith('bench: ')
  );
}

const us = (ns: number): string => (ns / 1000).toFixed(ns < 100_000 ? 2 : 1);

function directionLines(label: string, d: DirectionResult, seconds: number): string[] {
  if (d.ios === 0) return [];
  const l = d.latency;
  return [
    `  ${label}: IOPS ${d.iops.toFixed(0)}, BW ${formatSize(Math.round(d.bandwidth))}/s ` +
      `(${(d.bandwidth / 1e6).toFixed(1)} MB/s), ${d.ios} I/Os in ${seconds.toFixed(2)} s`,
    `    lat (us): min ${us(l.min)}, mean ${us(l.mean)}, p50 ${us(l.p50)}, p99 ${us(l.p99)}, ` +
      `p99.9 ${us(l.p999)}, max ${us(l.max)}`,
  ];
}

const ms = (ns: number): string => (ns / 1e6).toFixed(2);

/**
 * How long the polling turns' spins and sleeps lasted (over the whole run, ramp included, unlike
 * the lines above): on the clock, and what they held the thread for themselves.
 */
function pollingLine(s: Record<string, number>): string[] {
  const turns = s.pollingTurns ?? 0;
  if (turns === 0) return [];
  return [
    `  polling turns (whole run): ${turns}, longest ${ms(s.longestPollingTurnNs ?? 0)} ms ` +
      `(${ms(s.longestPollingHoldNs ?? 0)} ms of its own), ${s.pollingTurnsOver1ms ?? 0} of 1 ms ` +
      `or more (${s.pollingHoldsOver1ms ?? 0} of their own)`,
  ];
}

function summary(r: BenchResult): string {
  const o = r.options;
  const s = r.deviceStats;
  const ios = r.total.ios;
  const per = (n: number | undefined) => (ios > 0 && n !== undefined ? (n / ios).toFixed(2) : '-');
  const pct = (v: number) => ((v / 1e6 / r.runtime) * 100).toFixed(1);
  const lines = [
    `bench: ${r.name}: ${o.rw}${o.rw === 'randrw' ? ` (${o.rwmixread}% reads)` : ''}, ` +
      `bs ${o.bs}, iodepth ${o.iodepth}, ${o.queues} queue${o.queues === 1 ? '' : 's'}, ` +
      `completion ${r.completion === 'default' ? 'adaptive (default)' : r.completion}, ${o.direct ? 'direct (allocBuffer)' : 'copied'} buffers` +
      `${o.rate_iops[0] > 0 || o.rate_iops[1] > 0 ? `, rate_iops ${o.rate_iops.join(',')}` : ''}`,
    ...directionLines('read', r.read, r.runtime),
    ...directionLines('write', r.write, r.runtime),
  ];
  if (r.read.ios > 0 && r.write.ios > 0) lines.push(...directionLines('total', r.total, r.runtime));
  if (ios === 0) lines.push('  no I/O completed in the measured time');
  lines.push(
    `  cpu: ${r.cpu.perIo.toFixed(2)} us per I/O (usr ${pct(r.cpu.user)}%, sys ${pct(r.cpu.system)}% ` +
      `of one CPU)`,
    `  event loop: worst delay ${ms(r.maxEventLoopDelay)} ms; GC pauses ${r.gc.count}, ` +
      `longest ${ms(r.gc.longestNs)} ms`,
    ...pollingLine(s),
    `  device: kicks ${s.kicks ?? 0} (${per(s.kicks)} per I/O; ${s.kicksAhead ?? 0} of them ahead` +
      `${s.kickAheadTrials ? `, ${s.kickAheadTrials} trials of it, ${s.kickAheadTrialsAgainst ?? 0} against` : ''}), ` +
      `calls ${s.calls ?? 0} ` +
      `(${per(s.calls)} per I/O), requests ${s.requests ?? 0}` +
      `${s.bytesBounced ? `, ${formatSize(s.bytesBounced)} bounced` : ''}`,
  );
  if (o.verify === 'crc32c') lines.push(`  verify: crc32c, ${r.verified} blocks checked, all good`);
  return `${lines.join('\n')}\n`;
}

export async function run({ values, positionals }: ParsedArgs): Promise<number> {
  const jobPath = stringOption(values, 'job');
  const job = jobPath === undefined ? undefined : readJob(jobPath);
  expectPositionals(spec, positionals, job?.options.socket === undefined ? 1 : 0, 1);
  const fromArgs = optionsFromArgs(values);
  const socket = positionals[0] ?? job?.options.socket;
  if (socket === undefined) throw new UsageError('bench: missing <socket>');
  if (job && job.warnings.length > 0) {
    process.stderr.write(
      `vhost-user: warning: ${jobPath}: ignored ${job.warnings.length} option` +
        `${job.warnings.length === 1 ? '' : 's'} not implemented: ${job.warnings.join('; ')}\n`,
    );
  }
  const open = deviceArgs(values, job?.options.open);
  const knobs = parsed(values, ['completion-options'], completionOptions);
  if (knobs !== undefined) open.completionOptions = knobs;
  const json = flag(values, 'json');
  const progress = new ProgressLine();
  const options: BenchOptions = {
    ...job?.options,
    ...fromArgs,
    socket,
    open,
    progress: (p) =>
      progress.update(
        () =>
          `bench: ${p.phase} ${p.iops.toFixed(0)} IOPS, ${p.mbps.toFixed(1)} MB/s` +
          (Number.isFinite(p.eta) ? `, ETA ${Math.ceil(p.eta)} s` : ''),
        true,
      ),
  };
  // Ctrl-C ends the run as fio's does, with the results so far; a second one kills at once.
  const interrupt = new AbortController();
  const onSigint = (): void => interrupt.abort();
  process.once('SIGINT', onSigint);
  let result: BenchResult;
  let opened = false;
  try {
    result = await runBench({
      ...options,
      signal: interrupt.signal,
      opened: () => (opened = true),
    });
  } catch (err) {
    if (isOptionError(err)) throw new UsageError(err.message);
    // Open options the library or the device refuses (a queue size, more queues than it has);
    // an InvalidArgumentError once the run is under way is no mistake of the command line.
    throw opened ? err : asUsageError(err);
  } finally {
    process.off('SIGINT', onSigint);
    progress.done();
  }
  if (json) printJson(toFioJson(result));
  else process.stdout.write(summary(result));
  if (interrupt.signal.aborted) {
    process.stderr.write('vhost-user: bench: interrupted: the results cover the time until then\n');
    return EXIT_INTERRUPTED;
  }
  return 0;
}
