import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { runBench, toFioJson, type BenchProgress } from '../../src/bench/index.js';
import { startQsd, type Qsd } from '../helpers/qsd.js';

let qsd: Qsd;

before(async () => {
  qsd = await startQsd({ size: 8 * 1024 * 1024 });
});

after(async () => {
  await qsd?.stop();
});

test('runBench: randrw with crc32c verify, progress once a second, fio JSON', async () => {
  const progress: BenchProgress[] = [];
  const result = await runBench({
    socket: qsd.socketPath,
    rw: 'randrw',
    rwmixread: 60,
    bs: 4096,
    iodepth: 16,
    runtime: 2.2,
    ramp_time: 0.2,
    verify: 'crc32c',
    completion: 'adaptive',
    progress: (p) => progress.push(p),
  });
  assert.ok(result.read.ios > 100 && result.write.ios > 100);
  assert.ok(result.verified > 0, 'nothing was verified');
  assert.ok(progress.length >= 2, `${progress.length} progress reports`);
  assert.ok(progress.some((p) => p.phase === 'run' && p.iops > 0));
  const lat = result.total.latency;
  assert.ok(lat.min <= lat.p50 && lat.p50 <= lat.p99 && lat.p99 <= lat.p999 && lat.p999 <= lat.max);
  assert.ok(result.cpu.perIo > 0);
  assert.ok(result.maxEventLoopDelay > 0);
  const job = toFioJson(result).jobs[0]!;
  assert.equal(job.read.total_ios, result.read.ios);
  assert.ok(job.read.clat_ns.percentile['99.000000']! > 0);
});

test('runBench: sequential write + verify pass, then rate-limited reads', async () => {
  const w = await runBench({
    socket: qsd.socketPath,
    rw: 'write',
    bs: 65536,
    iodepth: 4,
    runtime: 0,
    size: 4 * 1024 * 1024,
    verify: 'crc32c',
    direct: false,
    completion: 'poll',
  });
  assert.equal(w.write.bytes, 4 * 1024 * 1024, 'one pass over size without time_based');
  assert.equal(w.verified, 64);
  const r = await runBench({
    socket: qsd.socketPath,
    rw: 'read',
    bs: 4096,
    iodepth: 2,
    runtime: 1,
    rate_iops: 200,
    completion: 'event',
  });
  assert.ok(r.read.iops > 120 && r.read.iops < 260, `paced at ${r.read.iops} IOPS`);
});
