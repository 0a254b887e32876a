import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { FioJson } from '../../src/bench/index.js';
import { withServer } from '../helpers/in-process-server.js';
import { CLI_MAIN, runCli, type CliRun } from '../helpers/cli.js';

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

test("cp: a file whose name holds an '@' is a file, whichever side it is on", async () => {
  await withServer({ size: 1 << 20 }, async (socket) => {
    const data = Buffer.from(Array.from({ length: 5000 }, (_, i) => (i * 7) & 0xff));
    const source = join(dir, 'in@v1.raw');
    writeFileSync(source, data);
    const imported = await runCli('cp', source, `${socket}@512`);
    assert.equal(imported.code, 0, imported.stderr);
    const target = join(dir, 'out@v2.raw');
    const exported = await runCli('cp', `${socket}@512`, target, '--length', '5000', '--verify');
    assert.equal(exported.code, 0, exported.stderr);
    assert.ok(readFileSync(target).equals(data));
    // The socket without an offset, the file with an '@' that is not one.
    const whole = join(dir, 'disk@2026-12-06.img');
    const plain = await runCli('cp', socket, whole);
    assert.equal(plain.code, 0, plain.stderr);
    assert.equal(readFileSync(whole).length, 1 << 20);
    // A real offset that is not a size is still a usage error.
    const bad = await runCli('cp', `${socket}@lots`, join(dir, 'x.raw'));
    assert.equal(bad.code, 2);
    assertOneLine(bad, /not a byte count: 'lots'/);
  });
});

test('cp: --depth or --chunk-size out of range is a usage error that leaves the destination file alone', async () => {
  await withServer({ size: 1 << 20 }, async (socket) => {
    const target = join(dir, 'keep.raw');
    const before = Buffer.alloc(3000, 0x5a);
    writeFileSync(target, before);
    for (const args of [
      ['--depth', '5000'],
      ['--depth', '0'],
      ['--chunk-size', '2g'],
    ]) {
      const run = await runCli('cp', socket, target, ...args);
      assert.equal(run.code, 2, `${args.join(' ')}: ${run.stderr}`);
      assertOneLine(run, new RegExp(args[0]!));
      // Before the fix the export truncated it to 0 bytes, then failed.
      assert.ok(readFileSync(target).equals(before), `${args.join(' ')} changed ${target}`);
    }
    const imported = await runCli('cp', target, socket, '--depth', '1025');
    assert.equal(imported.code, 2, imported.stderr);
  });
});

test('bench: a ramp that outlasts the run reports nothing measured, with no CPU time', async () => {
  await withServer({ size: 16 << 20 }, async (socket) => {
    // One pass over 64 KiB ends long before the 5 s ramp does.
    const args = ['--runtime', '0', '--ramp_time', '5', '--size', '64k'];
    const run = await runCli('bench', socket, ...args, '--json');
    assert.equal(run.code, 0, run.stderr);
    const job = (JSON.parse(run.stdout) as FioJson).jobs[0]!;
    assert.equal(job.read.total_ios, 0);
    // Before the fix the ramp's CPU over a measured time of 1 ns: usr_cpu in the millions.
    assert.equal(job.usr_cpu, 0);
    assert.equal(job.sys_cpu, 0);
    const text = await runCli('bench', socket, ...args);
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, /no I\/O completed in the measured time/);
    assert.match(text.stdout, /usr 0\.0%, sys 0\.0%/);
  });
});

test('bench: latency mean and percentiles stay within min..max, even for one I/O', async () => {
  await withServer({ size: 16 << 20 }, async (socket) => {
    // 5 IOPS for 0.3 s: one or two I/Os, where a histogram bucket's edges show most.
    const run = await runCli('bench', socket, '--rate_iops', '5', '--runtime', '0.3', '--json');
    assert.equal(run.code, 0, run.stderr);
    const read = (JSON.parse(run.stdout) as FioJson).jobs[0]!.read;
    assert.ok(read.total_ios >= 1);
    const { min, max, mean } = read.clat_ns;
    assert.ok(min <= mean && mean <= max, `mean ${mean} outside ${min}..${max}`);
    for (const [p, v] of Object.entries(read.clat_ns.percentile)) {
      assert.ok(min <= v && v <= max, `p${p} ${v} outside ${min}..${max}`);
    }
  });
});

test('io write --pattern: an empty or non-byte pattern is a usage error, not a fill of zeroes', async () => {
  await withServer({ size: 1 << 20 }, async (socket) => {
    const fill = await runCli('io', socket, 'write', '0', '16', '--pattern', '0x5a');
    assert.equal(fill.code, 0, fill.stderr);
    for (const pattern of ['', ' ', '1e2', '0b11', 'x']) {
      const run = await runCli('io', socket, 'write', '0', '16', '--pattern', pattern);
      assert.equal(run.code, 2, `'${pattern}': ${run.stderr}`);
      assertOneLine(run, /--pattern: not a byte value/);
    }
    const read = await runCli('io', socket, 'read', '0', '16', '--json');
    assert.equal((JSON.parse(read.stdout) as { hex: string }).hex, '5a'.repeat(16));
    const hex = await runCli('io', socket, 'write', '0', '1', '--pattern', '0xFF');
    assert.equal(hex.code, 0, hex.stderr);
  });
});

/** `vhost-user <args>` in a child process, with its exit and output once it ends. */
function spawnCli(...args: string[]): {
  child: ChildProcess;
  done: Promise<{ code: number | null; signal: string | null; stdout: string; stderr: string }>;
} {
  const child = spawn(process.execPath, [CLI_MAIN, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, DEBUG: '' },
  });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const done = new Promise<{
    code: number | null;
    signal: string | null;
    stdout: string;
    stderr: string;
  }>((resolve) => child.once('close', (code, signal) => resolve({ code, signal, stdout, stderr })));
  return { child, done };
}

test('bench: Ctrl-C (SIGINT) ends the run with the results so far and exit code 130', async () => {
  await withServer({ size: 16 << 20 }, async (socket, server) => {
    for (const extra of [[], ['--rate_iops', '1', '--iodepth', '4']]) {
      const { child, done } = spawnCli('bench', socket, '--runtime', '120', '--json', ...extra);
      // Interrupt once the run is under way (the backend has seen I/O).
      const started = server.stats.requests;
      while (server.stats.requests < started + 2) await sleep(20);
      const sent = Date.now();
      child.kill('SIGINT');
      const end = await done;
      const seconds = (Date.now() - sent) / 1000;
      assert.equal(end.code, 130, `${extra.join(' ')}: ${end.signal ?? ''} ${end.stderr}`);
      // Paced at 1 IOPS over 4 workers, a worker may be waiting 4 s for its turn: the wait is cut.
      assert.ok(seconds < 10, `${extra.join(' ')}: ended ${seconds.toFixed(1)} s after SIGINT`);
      const job = (JSON.parse(end.stdout) as FioJson).jobs[0]!;
      assert.ok(job.read.total_ios >= 1, `${extra.join(' ')}: ${job.read.total_ios} I/Os`);
      assert.equal(end.stderr.trimEnd().split('\n').length, 1, end.stderr);
      assert.match(end.stderr, /^vhost-user: bench: interrupted/);
    }
  });
});

test('cp: importing from a pipe is a usage error, not a copy of 0 bytes that succeeds', async () => {
  await withServer({ size: 1 << 20 }, async (socket) => {
    const run = await new Promise<CliRun>((resolve) => {
      const child = execFile(
        process.execPath,
        [CLI_MAIN, 'cp', '/dev/stdin', socket],
        { encoding: 'utf8', env: { ...process.env, DEBUG: '' } },
        (error, stdout, stderr) => {
          const code = error ? (typeof error.code === 'number' ? error.code : -1) : 0;
          resolve({ code, stdout, stderr });
        },
      );
      child.stdin!.end(Buffer.alloc(4096, 1));
    });
    // Before the fix: exit 0 and "0 bytes", the pipe's size as stat() gives it.
    assert.equal(run.code, 2, run.stdout + run.stderr);
    assertOneLine(run, /not a regular file/);
  });
});
