import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import {
  closeSync,
  existsSync,
  mkdtempSync,
  openSync,
  readFileSync,
  rmSync,
  truncateSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openBlockDevice, type BlockDevice, type ServerStats } from '../../src/index.js';
import { prng, randomBytes, randomInt } from '../helpers/random.js';
import { CLI_MAIN, runCli } from '../helpers/cli.js';

const cli = runCli;

/** What each `serve` child wrote on stderr so far. */
const stderrOf = new WeakMap<ChildProcess, () => string>();

/** `vhost-user serve ...` in the background, resolved once it says it is listening. */
async function serve(...args: string[]): Promise<ChildProcess> {
  const child = spawn(process.execPath, [CLI_MAIN, 'serve', ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stderr!.on('data', (chunk: Buffer) => (err += chunk.toString()));
  stderrOf.set(child, () => err);
  await new Promise<void>((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`serve exited with ${code}: ${err}`)));
    child.stdout!.on('data', (chunk: Buffer) => {
      out += chunk.toString();
      if (out.includes('listening on')) resolve();
    });
  });
  child.removeAllListeners('exit');
  return child;
}

async function terminate(child: ChildProcess): Promise<number | null> {
  if (child.exitCode !== null) return child.exitCode;
  const exit = once(child, 'exit') as Promise<[number | null, string | null]>;
  child.kill('SIGTERM');
  const [code] = await exit;
  return code;
}

/** The `stats <json>` lines serve printed on stderr (SIGUSR2, and at exit with --verbose). */
function statsLines(child: ChildProcess): ServerStats[] {
  return stderrOf.get(child)!()
    .split('\n')
    .filter((l) => l.startsWith('stats '))
    .map((l) => JSON.parse(l.slice(6)) as ServerStats);
}

/** SIGUSR2, then the stats line it prints. */
async function askStats(child: ChildProcess): Promise<ServerStats> {
  const before = statsLines(child).length;
  child.kill('SIGUSR2');
  for (let i = 0; i < 200 && statsLines(child).length === before; i++) {
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  const lines = statsLines(child);
  assert.equal(lines.length, before + 1, stderrOf.get(child)!());
  return lines.at(-1)!;
}

/** Random unaligned writes and reads, each read checked against a model of the disk. */
async function verifiedRandomIo(dev: BlockDevice, seed: number, rounds: number): Promise<void> {
  const rand = prng(seed);
  const model = Buffer.alloc(dev.size);
  for (let i = 0; i < rounds; i++) {
    const length = randomInt(rand, 1, 40_000);
    const position = randomInt(rand, 0, dev.size - length);
    const data = randomBytes(rand, length);
    assert.equal(await dev.write(data, position), length);
    data.copy(model, position);
    const rl = randomInt(rand, 1, 60_000);
    const rp = randomInt(rand, 0, dev.size - rl);
    assert.ok((await dev.read(rp, rl)).equals(model.subarray(rp, rp + rl)), `seed ${seed} i ${i}`);
  }
  // And many at once, to fill the ring.
  const all = await Promise.all(Array.from({ length: 64 }, (_, i) => dev.read(i * 10_007, 5_003)));
  all.forEach((b, i) => assert.ok(b.equals(model.subarray(i * 10_007, i * 10_007 + 5_003))));
}

let dir: string;
const children: ChildProcess[] = [];

before(() => {
  dir = mkdtempSync(join(tmpdir(), 'vhost-user-cli-serve-'));
});

after(async () => {
  for (const child of children) if (child.exitCode === null) child.kill('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
});

test('serve --print-capabilities prints the block capabilities and exits 0', async () => {
  const run = await cli('serve', '--print-capabilities');
  assert.equal(run.code, 0, run.stderr);
  const caps = JSON.parse(run.stdout) as { type: string; features?: string[] };
  assert.equal(caps.type, 'block');
});

test('serve --size on a temp socket: info --json sees it; SIGTERM exits 0 and removes the socket', async () => {
  const socket = join(dir, 'ram.sock');
  const child = await serve('--size', '4M', '--socket', socket, '--serial', 'cli-test');
  children.push(child);
  const run = await cli('info', socket, '--json');
  assert.equal(run.code, 0, run.stderr);
  const info = JSON.parse(run.stdout) as { size: number; readOnly: boolean };
  assert.equal(info.size, 4 * 1024 * 1024);
  assert.equal(info.readOnly, false);
  const id = await cli('io', socket, 'get-id');
  assert.equal(id.stdout.trim(), 'cli-test');
  const verify = await cli('verify', socket, '-i', '100', '-S', '4097', '--async');
  assert.equal(verify.code, 0, verify.stdout + verify.stderr);
  assert.equal(await terminate(child), 0);
  assert.ok(!existsSync(socket), 'the socket file is removed on exit');
});

test('serve --file --read-only: writes fail with VHOST_USER_ERR_READ_ONLY, reads see the file', async () => {
  const image = join(dir, 'ro.img');
  writeFileSync(image, Buffer.alloc(0));
  truncateSync(image, 1 << 20);
  writeFileSync(image, Buffer.from('hello, vhost-user'), { flag: 'r+' });
  const socket = join(dir, 'ro.sock');
  const child = await serve('--file', image, '--socket-path', socket, '--read-only');
  children.push(child);
  const read = await cli('io', socket, 'read', '0', '17', '--json');
  assert.equal(read.code, 0, read.stderr);
  assert.equal(
    Buffer.from((JSON.parse(read.stdout) as { hex: string }).hex, 'hex').toString(),
    'hello, vhost-user',
  );
  const write = await cli('io', socket, 'write', '0', '512');
  assert.equal(write.code, 1);
  assert.match(write.stderr, /VHOST_USER_ERR_READ_ONLY/);
  assert.equal(await terminate(child), 0);
});

test('serve --file: io writes reach the file', async () => {
  const image = join(dir, 'rw.img');
  writeFileSync(image, Buffer.alloc(0));
  truncateSync(image, 1 << 20);
  const socket = join(dir, 'rw.sock');
  const child = await serve('--file', image, '--socket-path', socket);
  children.push(child);
  const write = await cli('io', socket, 'write', '4097', '3000', '--pattern', '0x5a');
  assert.equal(write.code, 0, write.stderr);
  assert.equal(await terminate(child), 0);
  const bytes = readFileSync(image);
  assert.ok(bytes.subarray(4097, 7097).equals(Buffer.alloc(3000, 0x5a)));
  assert.equal(bytes[4096], 0);
  assert.equal(bytes[7097], 0);
});

test('demo --seconds 1 exits 0 and prints a summary', async () => {
  const run = await cli('demo', '--seconds', '1', '--iterations', '500');
  assert.equal(run.code, 0, run.stdout + run.stderr);
  assert.match(run.stdout, /verify: 500 iterations OK/);
  assert.match(run.stdout, /IOPS/);
  assert.match(run.stdout, /p50 .* p99/);
  assert.match(run.stdout, /kicks \d+, calls \d+/);
  assert.match(run.stdout, /raw file: 500 verify ranges match/);
  assert.match(run.stdout, /demo: OK/);
});

test('serve --size-max 4096 --seg-max 4: verified random unaligned I/O, the backend rejects nothing', async () => {
  const socket = join(dir, 'limits.sock');
  const child = await serve(
    '--size',
    '16M',
    '--socket-path',
    socket,
    '--size-max',
    '4096',
    '--seg-max',
    '4',
    '--verbose',
  );
  children.push(child);
  const dev = await openBlockDevice(socket, { timeout: 2000 });
  try {
    assert.equal(dev.size, 16 << 20);
    assert.equal(dev.info.maxSegmentBytes, 4096);
    assert.equal(dev.info.maxSegments, 4);
    await verifiedRandomIo(dev, 4096, 150);
  } finally {
    await dev.close();
  }
  assert.equal(await terminate(child), 0);
  // --verbose: the final counters on stderr.
  const stats = statsLines(child).at(-1);
  assert.ok(stats, stderrOf.get(child)!());
  assert.equal(stats.rejected, 0);
  // Every request carries at most 4 x 4096 bytes: 150 rounds of up to 100 KB need many.
  assert.ok(stats.requests > 300, `${stats.requests} requests`);
  assert.equal(stats.connections, 1);
});

for (const eventIdx of [true, false]) {
  test(`serve --polling (frontend EVENT_IDX ${eventIdx ? 'on' : 'off'}): no kicks, verified I/O`, async () => {
    const socket = join(dir, `polling-${eventIdx}.sock`);
    const child = await serve('--size', '16M', '--socket-path', socket, '--polling');
    children.push(child);
    const dev = await openBlockDevice(socket, {
      timeout: 2000,
      disableFeatures: { eventIdx: !eventIdx },
    });
    try {
      assert.equal(dev.info.eventIdx, eventIdx);
      await verifiedRandomIo(dev, eventIdx ? 7 : 8, 100);
      assert.equal(dev.stats.kicks, 0);
      const stats = await askStats(child);
      assert.equal(stats.kicksReceived, 0);
      assert.equal(stats.rejected, 0);
      assert.ok(stats.requests > 200, `${stats.requests} requests`);
    } finally {
      await dev.close();
    }
    assert.equal(await terminate(child), 0);
  });
}

test('serve: option values the backend refuses are usage errors (exit 2), one line each (what listen finds, a file or an fd, stays exit 1)', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'vhost-user-serve-usage-'));
  try {
    const socket = join(dir, 'sock');
    for (const args of [
      ['--size', '1048576', '--block-size', '1000'],
      ['--size', '1048576', '--queue-size', '3'],
      ['--size', '1048576', '--size-max', '8'],
    ]) {
      const r = await runCli('serve', ...args, '--socket-path', socket);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('serve --fd: a closed fd or a non-socket is a one-line error, exit 1', async () => {
  const closed = await cli('serve', '--size', '1M', '--fd', '99');
  assert.equal(closed.code, 1, closed.stderr);
  assert.match(closed.stderr, /^vhost-user: listening fd 99 is not an open file descriptor.*\n$/);
  assert.doesNotMatch(closed.stderr, /close:/);

  // fd 3 of the child: a regular file.
  const file = join(dir, 'not-a-socket');
  writeFileSync(file, '');
  const fd = openSync(file, 'r');
  try {
    const child = spawn(process.execPath, [CLI_MAIN, 'serve', '--size', '1M', '--fd', '3'], {
      stdio: ['ignore', 'pipe', 'pipe', fd],
    });
    let err = '';
    child.stderr!.on('data', (chunk: Buffer) => (err += chunk.toString()));
    const [code] = (await once(child, 'exit')) as [number | null];
    assert.equal(code, 1, err);
    assert.match(
      err,
      /^vhost-user: listening fd 3 is not a socket \[VHOST_USER_ERR_INVALID_ARGUMENT\]\n$/,
    );
  } finally {
    closeSync(fd);
  }
});
