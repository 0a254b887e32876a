import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess, type StdioOptions } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { runBench, type FioJson } from '../../src/bench/index.js';
import { withServer } from '../helpers/in-process-server.js';
import { CLI_MAIN } from '../helpers/cli.js';

let dir: string;

before(() => {
  dir = mkdtempSync(join(tmpdir(), 'vhost-user-cli-fixes-'));
});

after(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

interface Ended {
  code: number | null;
  signal: string | null;
  stdout: Buffer;
  stderr: string;
}

/** `vhost-user <args>` in a child process; stdout kept as bytes (it may carry data). */
function spawnCli(
  stdio: StdioOptions,
  ...args: string[]
): { child: ChildProcess; done: Promise<Ended> } {
  const child = spawn(process.execPath, [CLI_MAIN, ...args], {
    stdio: stdio.length === 0 ? ['ignore', 'pipe', 'pipe'] : stdio,
    env: { ...process.env, DEBUG: '' },
  });
  const stdout: Buffer[] = [];
  let stderr = '';
  child.stdout?.on('data', (chunk: Buffer) => stdout.push(chunk));
  child.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const done = new Promise<Ended>((resolve) =>
    child.once('close', (code, signal) =>
      resolve({ code, signal, stdout: Buffer.concat(stdout), stderr }),
    ),
  );
  return { child, done };
}

test('cp: an export to /dev/stdout gets the data alone on stdout, the summary on stderr', async () => {
  await withServer({ size: 1 << 20 }, async (socket) => {
    const data = Buffer.from(Array.from({ length: 8192 }, (_, i) => (i * 13 + 1) & 0xff));
    const source = join(dir, 'pattern.raw');
    writeFileSync(source, data);
    assert.equal((await spawnCli([], 'cp', source, `${socket}@0`).done).code, 0);
    for (const json of [false, true]) {
      // stdout redirected to a file, as `> out.img` does.
      const out = join(dir, `stdout-${json}.raw`);
      const fd = openSync(out, 'w');
      const run = await spawnCli(
        ['ignore', fd, 'pipe'],
        'cp',
        `${socket}@0`,
        '/dev/stdout',
        '--length',
        '8192',
        ...(json ? ['--json'] : []),
      ).done;
      closeSync(fd);
      assert.equal(run.code, 0, run.stderr);
      // Before the fix the summary went to stdout too, over the data's first bytes.
      const got = readFileSync(out);
      assert.equal(got.length, 8192, `json ${json}: ${got.length} bytes on stdout`);
      assert.ok(got.equals(data), `json ${json}: stdout is not the device's bytes`);
      if (json) assert.equal((JSON.parse(run.stderr) as { bytes: number }).bytes, 8192);
      else assert.match(run.stderr, /^cp: .* -> \/dev\/stdout: 8192 bytes/);
    }
  });
});

test('cp: the argument with @offset on a socket is the device, even when the other is a socket too', async () => {
  await withServer({ size: 1 << 20 }, async (socket) => {
    const data = Buffer.alloc(4096, 0x3c);
    const source = join(dir, 'fill.raw');
    writeFileSync(source, data);
    assert.equal((await spawnCli([], 'cp', source, `${socket}@4096`).done).code, 0);
    // Node's child stdio pipes are socket pairs: /dev/stdout is a socket here, as under systemd.
    const run = await spawnCli([], 'cp', `${socket}@4096`, '/dev/stdout', '--length', '4096').done;
    // Before the fix /dev/stdout was taken for the device: ConnectError, exit 1.
    assert.equal(run.code, 0, run.stderr);
    assert.ok(run.stdout.equals(data), `${run.stdout.length} bytes on stdout`);
  });
});

test('cp --verify to a destination that cannot be read back is a usage error, before copying', async () => {
  await withServer({ size: 1 << 20 }, async (socket, server) => {
    for (const target of ['/dev/null', '/dev/stdout']) {
      const requests = server.stats.requests;
      const run = await spawnCli([], 'cp', `${socket}@0`, target, '--length', '4k', '--verify')
        .done;
      // Before the fix: /dev/null 'verify FAILED at byte 0' (exit 1), stdout ENXIO (exit 1).
      assert.equal(run.code, 2, `${target}: ${run.stderr}`);
      assert.match(run.stderr, /^vhost-user: cp: --verify .*not a regular file/);
      assert.equal(run.stderr.trimEnd().split('\n').length, 1, run.stderr);
      assert.equal(run.stdout.length, 0);
      assert.equal(server.stats.requests, requests, `${target}: the device was read`);
    }
  });
});

test('cp: Ctrl-C (SIGINT) stops the copy, lets the I/O in flight finish and says what was copied, exit 130', async () => {
  // 20 ms per request, 4 KiB a request: 1 MiB takes over 5 s, long enough to interrupt.
  await withServer(
    { size: 1 << 20, faults: { delayCompletionsMs: 20 } },
    async (socket, server) => {
      const data = Buffer.from(Array.from({ length: 1 << 20 }, (_, i) => (i * 31 + 7) & 0xff));
      const source = join(dir, 'big.raw');
      writeFileSync(source, data);
      const target = join(dir, 'big-out.raw');
      for (const [from, to] of [
        [source, `${socket}@0`],
        [`${socket}@0`, target],
      ] as const) {
        const { child, done } = spawnCli([], 'cp', from, to, '--chunk-size', '4k', '--depth', '2');
        const started = server.stats.requests;
        while (server.stats.requests < started + 6) await sleep(10);
        const sent = Date.now();
        child.kill('SIGINT');
        const end = await done;
        const seconds = (Date.now() - sent) / 1000;
        // Before the fix: killed by the signal at once (code null), nothing said.
        assert.equal(end.code, 130, `${from} -> ${to}: ${end.signal ?? ''} ${end.stderr}`);
        assert.ok(seconds < 10, `ended ${seconds.toFixed(1)} s after SIGINT`);
        const lines = end.stderr.trimEnd().split('\n');
        assert.equal(lines.length, 1, end.stderr);
        const match = /^vhost-user: cp: interrupted: the first (\d+) bytes /.exec(lines[0]!);
        assert.ok(match, end.stderr);
        const copied = Number(match[1]);
        assert.ok(copied >= 4096 && copied < data.length, `${copied} bytes copied`);
        assert.equal(copied % 4096, 0);
        if (to === target) {
          assert.ok(readFileSync(target).equals(data.subarray(0, copied)));
        } else {
          // The device holds the first `copied` bytes: every write in flight finished.
          const back = await spawnCli(
            [],
            'cp',
            `${socket}@0`,
            '/dev/stdout',
            '--length',
            `${copied}`,
          ).done;
          assert.ok(back.stdout.equals(data.subarray(0, copied)), 'device holds other bytes');
        }
      }
    },
  );
});

test('device options the device or the library refuses at open are usage errors (exit 2), as other bad options are', async () => {
  await withServer({ size: 1 << 20 }, async (socket) => {
    for (const args of [
      ['io', socket, 'read', '0', '512', '--queue-size', '100'],
      ['info', socket, '--queue-size', '65536'],
      ['bench', socket, '--runtime', '1', '--queue-size', '100'],
      // The embedded backend exports one queue.
      ['bench', socket, '--runtime', '1', '--queues', '4'],
    ]) {
      const run = await spawnCli([], ...args).done;
      // Before the fix: exit 1, as a device failure.
      assert.equal(run.code, 2, `${args.join(' ')}: ${run.stderr}`);
      assert.equal(run.stderr.trimEnd().split('\n').length, 1, run.stderr);
      assert.match(run.stderr, /^vhost-user: .*(queue-size|queueSize|queues)/);
    }
  });
});

test('bench --job: include reads a file beside the job file, whatever the working directory', async () => {
  await withServer({ size: 1 << 20 }, async (socket) => {
    const jobs = mkdtempSync(join(dir, 'jobs-'));
    writeFileSync(join(jobs, 'common.fio'), 'rw=read\nbs=64k\n');
    writeFileSync(join(jobs, 'main.fio'), '[pass]\ninclude common.fio\n');
    const run = await spawnCli(
      [],
      'bench',
      socket,
      '--job',
      join(jobs, 'main.fio'),
      '--runtime',
      '0',
      '--size',
      '256k',
      '--json',
    ).done;
    // Before the fix: 'include directives are not implemented', exit 2.
    assert.equal(run.code, 0, run.stderr);
    const job = (JSON.parse(run.stdout.toString()) as FioJson).jobs[0]!;
    assert.equal(job.read.total_ios, 4, 'one pass of 64 KiB reads over 256 KiB');
    assert.equal(job.write.total_ios, 0);
  });
});

test('runBench says when the device is open (the CLI maps only errors before it to usage errors)', async () => {
  let opened = 0;
  const missing = join(tmpdir(), `vhost-user-none-${process.pid}.sock`);
  await assert.rejects(runBench({ socket: missing, runtime: 0.1, opened: () => opened++ }));
  assert.equal(opened, 0, 'a device that never opened');
  await withServer({ size: 1 << 20 }, async (socket) => {
    await runBench({ socket, runtime: 0.2, opened: () => opened++ });
    assert.equal(opened, 1, 'once');
  });
});
