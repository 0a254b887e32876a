import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FioJson } from '../../src/bench/index.js';
import { startQsd, type Qsd } from '../helpers/qsd.js';
import { runCli, type CliRun } from '../helpers/cli.js';

function cli(...args: string[]): Promise<CliRun> {
  return runCli('bench', ...args);
}

type FioJob = FioJson['jobs'][number];

/** Runs bench with `--json` appended, checks it succeeded, and returns its one job. */
async function benchJob(...args: string[]): Promise<FioJob> {
  const run = await cli(...args, '--json');
  assert.equal(run.code, 0, run.stderr);
  return (JSON.parse(run.stdout) as FioJson).jobs[0]!;
}

let nullQsd: Qsd;
let fileQsd: Qsd;
let dir: string;

before(async () => {
  nullQsd = await startQsd({ driver: 'null', size: 64 * 1024 * 1024 });
  fileQsd = await startQsd({ driver: 'file', size: 8 * 1024 * 1024 });
  dir = mkdtempSync(join(tmpdir(), 'vhost-user-bench-'));
});

after(async () => {
  await nullQsd?.stop();
  await fileQsd?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test('bench --json --runtime 1: fio JSON and nothing else on stdout', async () => {
  const run = await cli(nullQsd.socketPath, '--json', '--runtime', '1', '--iodepth', '4');
  assert.equal(run.code, 0, run.stderr);
  const out = JSON.parse(run.stdout) as FioJson;
  const job = out.jobs[0]!;
  assert.ok(job.read.iops > 0, `iops ${job.read.iops}`);
  assert.ok(job.read.clat_ns.percentile['99.000000']! > 0);
  assert.ok(job.read.clat_ns.percentile['50.000000']! <= job.read.clat_ns.percentile['99.000000']!);
  assert.equal(typeof job.usr_cpu, 'number');
  assert.equal(typeof job.sys_cpu, 'number');
  assert.ok(job.usr_cpu + job.sys_cpu > 0);
  assert.equal(job['job options'].iodepth, '4');
  assert.equal(job.write.total_ios, 0);
});

test('bench: human summary with latency percentiles, CPU per I/O, loop delay, kicks/calls', async () => {
  const run = await cli(nullQsd.socketPath, '--runtime', '0.5', '--rw', 'randwrite', '--bs', '8k');
  assert.equal(run.code, 0, run.stderr);
  assert.match(run.stdout, /write: IOPS \d+/);
  assert.match(run.stdout, /p50 [\d.]+, p99 [\d.]+, p99\.9 [\d.]+, max/);
  assert.match(run.stdout, /cpu: [\d.]+ us per I\/O/);
  assert.match(run.stdout, /worst delay [\d.]+ ms/);
  assert.match(run.stdout, /kicks \d+ .*calls \d+/);
  assert.equal(run.stderr, '', 'no progress line when stderr is not a terminal');
});

test('bench --rw randrw --verify crc32c against a file-backed qsd', async () => {
  const job = await benchJob(
    fileQsd.socketPath,
    '--rw',
    'randrw',
    '--verify',
    'crc32c',
    '--iodepth',
    '8',
    '--runtime',
    '1',
  );
  assert.ok(job.read.total_ios > 0 && job.write.total_ios > 0);
  assert.ok(job['vhost-user'].verified_blocks > 0, 'nothing verified');
});

test('bench --completion poll, --no-direct-buffers, --rate_iops', async () => {
  const job = await benchJob(
    nullQsd.socketPath,
    '--completion',
    'poll',
    '--no-direct-buffers',
    '--rate_iops',
    '500',
    '--runtime',
    '1',
  );
  assert.equal(job['vhost-user'].completion, 'poll');
  assert.equal(job['job options'].direct, '0');
  assert.ok(job.read.iops > 300 && job.read.iops < 650, `paced at ${job.read.iops}`);
  assert.ok(job['vhost-user'].device_stats.bytesBounced! > 0);
});

test('bench --completion-options reaches the device: knobs that force blocking and spinning give opposite results', async () => {
  /** Interrupts per I/O at depth 1 with these adaptive knobs. */
  const callsPerIo = async (adaptive: object): Promise<number> => {
    // The file backend: its 12-15 µs answers outlast the re-check after arming a wait (null-co's
    // answer to a kick in the call often beat it: 0.28-0.99 calls per I/O measured there).
    const job = await benchJob(
      fileQsd.socketPath,
      '--completion-options',
      JSON.stringify({ adaptive }),
      '--runtime',
      '0.5',
    );
    const ios = job.read.total_ios;
    assert.ok(ios > 100, `${ios} I/Os`);
    return job['vhost-user'].device_stats.calls! / ios;
  };
  // No spin at all: every wait is armed for the device's interrupt. (A lone request is kicked
  // in the call, before its wait is armed, and a completion that lands first is taken by the
  // re-check without one: 0.96-0.97 calls per I/O here, but 0.32-0.44 where other processes
  // kept the CPUs busy, the frontend arming late. The floor fails a run that did not block at
  // all; the check against the spinning run below is what tells the two apart.)
  const blocking = await callsPerIo({ maxSpinNs: 0 });
  assert.ok(blocking >= 0.15, `${blocking.toFixed(3)} calls per I/O without spinning`);
  // Blocking priced out: spins catch most completions (0.00-0.05 calls per I/O here, 0.05-0.07
  // beside two busy loops; a host stall longer than the longest spin still ends in an
  // interrupt, and a fresh clone's run once saw 0.22, so the bound is against the blocking
  // run's, not an absolute near zero).
  const spinning = await callsPerIo({ blockCpuNs: 1_000_000, batching: 'off' });
  assert.ok(
    spinning < blocking / 3,
    `${spinning.toFixed(3)} calls per I/O when blocking costs 1 ms, ${blocking.toFixed(3)} without spinning`,
  );
});

test('bench --job: unimplemented fio keys warn once, the command line overrides the file', async () => {
  const path = join(dir, 'job.fio');
  writeFileSync(
    path,
    [
      '; a job file fio itself would run',
      '[global]',
      'ioengine=libaio',
      'iodepth_batch=4',
      'bs=4k',
      'runtime=30',
      '[randread-job]',
      'rw=randread',
      'iodepth=2',
      '',
    ].join('\n'),
  );
  const run = await cli(nullQsd.socketPath, '--job', path, '--runtime', '1', '--json');
  assert.equal(run.code, 0, run.stderr);
  const lines = run.stderr.trimEnd().split('\n');
  assert.equal(lines.length, 1, `one warning line, got:\n${run.stderr}`);
  assert.match(lines[0]!, /warning/);
  assert.match(lines[0]!, /ioengine/);
  assert.match(lines[0]!, /iodepth_batch/);
  const job = (JSON.parse(run.stdout) as FioJson).jobs[0]!;
  assert.equal(job.jobname, 'randread-job');
  assert.equal(job['job options'].iodepth, '2');
  assert.equal(job['job options'].runtime, '1');
  assert.ok(job.job_runtime < 5000);
});

test('bench --job with a key that is not fio: exit 2, one clear line', async () => {
  const path = join(dir, 'bad.fio');
  writeFileSync(path, '[global]\nbs=4k\n[job]\nfrobnicate=1\n');
  const run = await cli(nullQsd.socketPath, '--job', path);
  assert.equal(run.code, 2);
  assert.equal(run.stdout, '');
  assert.match(run.stderr, /^vhost-user: .*line 4: 'frobnicate' is not a fio option/);
  assert.equal(run.stderr.trimEnd().split('\n').length, 1);
});

test('bench: bad options exit 2 with one line', async () => {
  for (const args of [
    ['--bs', '1000'],
    ['--bs', 'big'],
    ['--completion', 'spin'],
    ['--completion-options', 'spin'],
    ['--completion-options', '{"adaptive":{"maxSpin":0}}'],
    ['--completion-options', '{"adaptive":{"yieldLateNs":-1}}'],
    ['--rw', 'trim'],
    ['--size', '1g'], // past the end of the 64 MiB device
  ]) {
    const run = await cli(nullQsd.socketPath, ...args, '--runtime', '0.2');
    assert.equal(run.code, 2, `${args.join(' ')}: ${run.stderr}`);
    assert.equal(run.stdout, '');
    assert.match(run.stderr, /^vhost-user: bench: /);
    assert.equal(run.stderr.trimEnd().split('\n').length, 1);
  }
  const missing = await cli();
  assert.equal(missing.code, 2);
});

test('bench --help', async () => {
  const run = await cli('--help');
  assert.equal(run.code, 0);
  for (const option of [
    '--rw',
    '--iodepth',
    '--ramp-time',
    '--rate_iops',
    '--job',
    '--completion',
  ]) {
    assert.ok(run.stdout.includes(option), option);
  }
});
