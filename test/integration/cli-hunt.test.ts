import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FioJson } from '../../src/bench/index.js';
import { withServer } from '../helpers/in-process-server.js';
import { runCli, type CliRun } from '../helpers/cli.js';

/** One error line starting 'vhost-user: ', no stack. */
function assertOneLine(run: CliRun, pattern: RegExp): void {
  const lines = run.stderr.trimEnd().split('\n');
  assert.equal(lines.length, 1, `expected one line on stderr, got:\n${run.stderr}`);
  assert.match(lines[0]!, /^vhost-user: /);
  assert.match(lines[0]!, pattern);
}

let dir: string;

before(() => {
  dir = mkdtempSync(join(tmpdir(), 'vhost-user-cli-hunt-'));
});

after(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test('bench: a worker that fails ends the run at once, not at --runtime', async () => {
  // 100 buffers of 1 MiB do not fit the 64 MiB of shared memory: the last workers fail at once
  // (OutOfMemoryError), the first ones could run on.
  await withServer({ size: 16 << 20 }, async (socket) => {
    const started = Date.now();
    const run = await runCli('bench', socket, '--bs', '1m', '--iodepth', '100', '--runtime', '30');
    const seconds = (Date.now() - started) / 1000;
    assert.equal(run.code, 1, run.stderr);
    assertOneLine(run, /VHOST_USER_ERR_NO_MEMORY/);
    // Before the fix the workers that had a buffer ran on for the whole --runtime.
    assert.ok(seconds < 15, `took ${seconds.toFixed(1)} s`);
  });
});

test('bench --job with time_based and --runtime 0: one pass over --size, not a run without end', async () => {
  await withServer({ size: 16 << 20 }, async (socket) => {
    const job = join(dir, 'time-based.fio');
    writeFileSync(job, '[global]\ntime_based\n[pass]\nrw=read\nbs=64k\n');
    const run = await runCli(
      'bench',
      socket,
      '--job',
      job,
      '--runtime',
      '0',
      '--size',
      '1m',
      '--json',
    );
    assert.equal(run.code, 0, run.stderr);
    const result = JSON.parse(run.stdout) as FioJson;
    assert.equal(result.jobs[0]!.read.total_ios, 16);
  });
});
