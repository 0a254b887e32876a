import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  crc32c,
  parseFioSize,
  parseFioTime,
  parseJobFile,
  resolveBenchOptions,
  toFioJson,
  JobFileError,
  type BenchResult,
  type DirectionResult,
} from '../../src/bench/index.js';
import { fillBlock, checkBlock, VerifyError } from '../../src/bench/run.js';
import { prng } from '../helpers/random.js';

function direction(ios: number, seconds: number, bs: number): DirectionResult {
  const percentiles: Record<string, number> = {};
  for (const p of [1, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 99, 99.5, 99.9, 99.95, 99.99]) {
    percentiles[p.toFixed(6)] = 1000 * p;
  }
  return {
    ios,
    bytes: ios * bs,
    iops: ios / seconds,
    bandwidth: (ios * bs) / seconds,
    latency: {
      count: ios,
      min: 1000,
      mean: 20_000,
      stddev: 3000,
      p50: 50_000,
      p99: 99_000,
      p999: 99_900,
      max: 500_000,
      percentiles,
    },
  };
}

function result(): BenchResult {
  const options = resolveBenchOptions(
    { socket: '/tmp/x.sock', rw: 'randrw', bs: 4096, iodepth: 8, runtime: 2, completion: 'poll' },
    1 << 30,
  );
  const read = direction(30_000, 2, 4096);
  const write = direction(10_000, 2, 4096);
  return {
    name: 'job1',
    options,
    completion: 'poll',
    runtime: 2,
    read,
    write,
    total: direction(40_000, 2, 4096),
    cpu: { user: 1_500_000, system: 500_000, perIo: 50 },
    maxEventLoopDelay: 1_200_000,
    gc: { count: 12, longestNs: 450_000, totalNs: 2_000_000 },
    verified: 0,
    deviceStats: { requests: 40_000, completions: 40_000 },
  };
}

test('toFioJson has fio’s job fields, units and percentile keys', () => {
  const json = toFioJson(result(), new Date(1_700_000_000_000));
  assert.equal(json.timestamp, 1_700_000_000);
  assert.equal(json.jobs.length, 1);
  const job = json.jobs[0]!;
  assert.equal(job.jobname, 'job1');
  assert.equal(job['job options'].rw, 'randrw');
  assert.equal(job['job options'].rwmixread, '50');
  assert.equal(job.job_runtime, 2000);
  // 1.5 s user + 0.5 s system over a 2 s run.
  assert.equal(job.usr_cpu, 75);
  assert.equal(job.sys_cpu, 25);
  for (const [dir, ios] of [
    ['read', 30_000],
    ['write', 10_000],
  ] as const) {
    const d = job[dir];
    assert.equal(d.io_bytes, ios * 4096);
    assert.equal(d.total_ios, ios);
    assert.equal(d.iops, ios / 2);
    assert.equal(d.bw_bytes, (ios * 4096) / 2);
    assert.equal(d.bw, Math.round((ios * 4096) / 2 / 1024), 'bw is in KiB/s');
    assert.equal(d.runtime, 2000);
    for (const lat of [d.lat_ns, d.clat_ns]) {
      assert.equal(lat.min, 1000);
      assert.equal(lat.max, 500_000);
      assert.equal(lat.mean, 20_000);
      assert.equal(lat.N, ios);
    }
    assert.equal(d.clat_ns.percentile['99.000000'], 99_000);
    assert.equal(d.clat_ns.percentile['50.000000'], 50_000);
    assert.equal(d.clat_ns.percentile['99.900000'], 99_900);
  }
  assert.equal(job.trim.total_ios, 0);
  assert.equal(job['vhost-user'].completion, 'poll');
  assert.equal(job['vhost-user'].max_event_loop_delay_ns, 1_200_000);
  assert.equal(job['vhost-user'].gc_pauses, 12);
  assert.equal(job['vhost-user'].longest_gc_pause_ns, 450_000);
  // It survives a JSON round trip (what fio tooling reads).
  assert.deepEqual(JSON.parse(JSON.stringify(json)), json);
});

test('job file: implemented keys become options', () => {
  const parsed = parseJobFile(`
; a comment
[global]
ioengine=libblkio
libblkio_driver=virtio-blk-vhost-user
libblkio_path=/run/qsd.sock
libblkio_wait_mode=loop
direct=1
time_based
runtime=30s
ramp_time=500ms

# the job
[rand-4k]
rw=randrw
rwmixread=70
bs=4k
iodepth=32
size=1G
offset=1m
verify=crc32c
rate_iops=1000,500
randseed=42
`);
  assert.equal(parsed.name, 'rand-4k');
  assert.deepEqual(parsed.warnings, []);
  const o = parsed.options;
  assert.equal(o.socket, '/run/qsd.sock');
  assert.equal(o.completion, 'poll');
  assert.equal(o.direct, true);
  assert.equal(o.time_based, true);
  assert.equal(o.runtime, 30);
  assert.equal(o.ramp_time, 0.5);
  assert.equal(o.rw, 'randrw');
  assert.equal(o.rwmixread, 70);
  assert.equal(o.bs, 4096);
  assert.equal(o.iodepth, 32);
  assert.equal(o.size, 1 << 30);
  assert.equal(o.offset, 1 << 20);
  assert.equal(o.verify, 'crc32c');
  assert.deepEqual(o.rate_iops, [1000, 500]);
  assert.equal(o.randseed, 42);
});

test('job file: fio keys that are not implemented are warnings', () => {
  const parsed = parseJobFile(`[global]
norandommap
numjobs=4
ioengine=io_uring
[job]
rw=read
thinktime=10
`);
  assert.equal(parsed.warnings.length, 4);
  assert.match(parsed.warnings[0]!, /line 2: fio option 'norandommap' is not implemented/);
  assert.match(parsed.warnings[1]!, /numjobs=4 ignored/);
  assert.match(parsed.warnings[2]!, /ioengine=io_uring ignored/);
  assert.match(parsed.warnings[3]!, /line 7: fio option 'thinktime' is not implemented/);
  assert.equal(parsed.options.rw, 'read');
});

test('job file: keys that are not fio keys, and bad values, are errors with the line', () => {
  const cases: [string, RegExp][] = [
    ['[job]\nrw=read\nqueue_count=4\n', /line 3: 'queue_count' is not a fio option/],
    ['[job]\ncompletion=poll\n', /line 2: 'completion' is not a fio option/],
    ['[job]\nrw=trim\n', /line 2: rw=trim is not implemented/],
    ['[job]\nbs=4q\n', /line 2: not a size: '4q'/],
    ['[job]\niodepth=0\n', /line 2: expected an integer in 1\.\.65536/],
    ['[job]\nverify=md5\n', /line 2: verify=md5 is not implemented/],
    ['[job]\nlibblkio_driver=io_uring\n', /only virtio-blk-vhost-user/],
    ['rw=read\n', /line 1: 'rw=read' is outside any \[section\]/],
    ['[global]\nrw=read\n', /exactly one job section/],
    ['[a]\n[b]\n', /line 2: exactly one job section/],
    ['[job]\nrw read\n', /line 2: malformed line/],
  ];
  for (const [text, message] of cases) {
    assert.throws(
      () => parseJobFile(text),
      (err: unknown) => err instanceof JobFileError && message.test(err.message),
      `${JSON.stringify(text)} should fail with ${message}`,
    );
  }
});

test('fio sizes and times', () => {
  assert.equal(parseFioSize('4k'), 4096);
  assert.equal(parseFioSize('4KiB'), 4096);
  assert.equal(parseFioSize('2M'), 2 << 20);
  assert.equal(parseFioSize('512'), 512);
  assert.throws(() => parseFioSize('1.3'), /not a whole number/);
  assert.equal(parseFioTime('10'), 10);
  assert.equal(parseFioTime('2m'), 120);
  assert.equal(parseFioTime('250ms'), 0.25);
});

test('bench options: defaults and range checks name the fio option', () => {
  const o = resolveBenchOptions({ socket: '/s' }, 1 << 20);
  assert.equal(o.rw, 'randread');
  assert.equal(o.bs, 4096);
  assert.equal(o.iodepth, 1);
  assert.equal(o.size, 1 << 20);
  assert.equal(o.time_based, true);
  assert.throws(
    () => resolveBenchOptions({ socket: '/s', bs: 1000 }),
    /bs must be a multiple of 512/,
  );
  assert.throws(() => resolveBenchOptions({ socket: '/s', iodepth: 0 }), /iodepth/);
  assert.throws(
    () => resolveBenchOptions({ socket: '/s', offset: 1 << 20 }, 1 << 20),
    /size must hold at least one block/,
  );
});

test('crc32c matches the standard check value', () => {
  assert.equal(crc32c(Buffer.from('123456789')), 0xe3069283);
  assert.equal(crc32c(Buffer.alloc(0)), 0);
  const b = Buffer.from('xx123456789yy');
  assert.equal(crc32c(b, 2, 11), 0xe3069283);
});

test('verify blocks: header crc32c and offset are checked', () => {
  const block = Buffer.alloc(4096);
  fillBlock(block, 8192, prng(1));
  checkBlock(block, 8192);
  assert.throws(
    () => checkBlock(block, 4096),
    (e: unknown) => e instanceof VerifyError && /written for offset 8192/.test(e.message),
  );
  block[100]! ^= 1;
  assert.throws(
    () => checkBlock(block, 8192),
    (e: unknown) => e instanceof VerifyError && /crc32c/.test(e.message),
  );
  assert.throws(() => checkBlock(Buffer.alloc(4096), 0), VerifyError);
});
