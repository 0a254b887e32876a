import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startQsd, type Qsd } from '../helpers/qsd.js';
import { prng, randomBytes } from '../helpers/random.js';
import { fileBytes } from '../helpers/files.js';
import { CLI_MAIN, runCli, type CliRun } from '../helpers/cli.js';

const SIZE = 16 * 1024 * 1024;

const cli = runCli;

/** One error line, no stack. */
function assertOneLine(run: CliRun, pattern: RegExp): void {
  const lines = run.stderr.trimEnd().split('\n');
  assert.equal(lines.length, 1, `expected one line on stderr, got:\n${run.stderr}`);
  assert.match(lines[0]!, /^vhost-user: /);
  assert.match(lines[0]!, pattern);
  assert.doesNotMatch(run.stderr, /\n\s+at /);
}

let qsd: Qsd;
let dir: string;

before(async () => {
  qsd = await startQsd({ size: SIZE, blockdevOptions: ['discard=unmap'] });
  dir = mkdtempSync(join(tmpdir(), 'vhost-user-cli-'));
});

after(async () => {
  await qsd?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const HELP: Record<string, string[]> = {
  info: ['--json', '--trace'],
  io: ['--pattern', '--raw', '--output', 'write-zeroes', 'get-id'],
  verify: ['--iterations', '--step', '--async', '--size'],
  cp: ['--length', '--verify'],
  serve: ['--socket-path', '--fd', '--print-capabilities', '--read-only', '--size-max'],
  demo: ['--backend', '--seconds'],
};

test('--help of every command exits 0 and lists its options', async () => {
  for (const [command, words] of Object.entries(HELP)) {
    const run = await cli(command, '--help');
    assert.equal(run.code, 0, `${command} --help: ${run.stderr}`);
    assert.match(run.stdout, new RegExp(`usage: vhost-user ${command}`));
    for (const word of words)
      assert.ok(run.stdout.includes(word), `${command} --help lacks ${word}`);
  }
  const top = await cli('--help');
  assert.equal(top.code, 0);
  for (const command of Object.keys(HELP)) assert.ok(top.stdout.includes(command));
});

test('bad arguments exit 2 with one line and no stack', async () => {
  const cases: string[][] = [
    [],
    ['nonsense'],
    ['info', '--bogus'],
    ['info'],
    ['io', qsd.socketPath, 'frobnicate'],
    ['io', qsd.socketPath, 'read', '0'],
    ['io', qsd.socketPath, 'read', '0', 'twelve'],
    ['verify', qsd.socketPath, '-i', '10'],
    ['verify', qsd.socketPath, '-i', '0', '-S', '4k'],
    ['serve', '--size', '1M'],
    ['demo', '--backend', 'spdk'],
    ['info', qsd.socketPath, '--hugepages', '4M'],
  ];
  for (const args of cases) {
    const run = await cli(...args);
    assert.equal(run.code, 2, `${args.join(' ')}: exit ${run.code}\n${run.stderr}`);
    if (args.length > 0) assertOneLine(run, /./);
  }
});

test('a socket that does not exist: exit 1 with VHOST_USER_ERR_CONNECT', async () => {
  const missing = join(dir, 'nothing-here.sock');
  for (const args of [
    ['info', missing],
    ['io', missing, 'read', '0', '512'],
  ]) {
    const run = await cli(...args);
    assert.equal(run.code, 1);
    assertOneLine(run, /VHOST_USER_ERR_CONNECT/);
  }
  const debug = await cli('info', missing, '--debug');
  assert.equal(debug.code, 1);
  assert.match(debug.stderr, /\n\s+at /, '--debug shows the stack');
});

test('info --json shows capacity and features', async () => {
  const run = await cli('info', qsd.socketPath, '--json');
  assert.equal(run.code, 0, run.stderr);
  const info = JSON.parse(run.stdout) as {
    size: number;
    blockSize: number;
    readOnly: boolean;
    config: { capacity: number };
    features: { names: string[]; offeredNames: string[]; negotiated: string };
    protocolFeatures: { names: string[] };
  };
  assert.equal(info.size, SIZE);
  assert.equal(info.config.capacity, SIZE / 512);
  assert.equal(info.blockSize, 512);
  assert.equal(info.readOnly, false);
  assert.ok(info.features.names.includes('VIRTIO_F_VERSION_1'));
  assert.ok(info.features.offeredNames.includes('VIRTIO_F_NOTIFY_ON_EMPTY'));
  assert.match(info.features.negotiated, /^0x[0-9a-f]+$/);
  assert.ok(info.protocolFeatures.names.includes('CONFIG'));
  const text = await cli('info', qsd.socketPath);
  assert.equal(text.code, 0);
  assert.match(text.stdout, /size\s+16777216 bytes/);
});

test('io write then read: hexdump, raw file, JSON and -o', async () => {
  const write = await cli('io', qsd.socketPath, 'write', '1000', '100', '--pattern', '0xab');
  assert.equal(write.code, 0, write.stderr);
  assert.match(write.stdout, /wrote 100 bytes at offset 1000/);
  assert.ok(fileBytes(qsd.imagePath, 1000, 100).equals(Buffer.alloc(100, 0xab)));
  assert.equal(fileBytes(qsd.imagePath, 999, 1)[0], 0);

  const dump = await cli('io', qsd.socketPath, 'read', '992', '16');
  assert.equal(dump.code, 0, dump.stderr);
  assert.equal(
    dump.stdout,
    '000003e0:  00 00 00 00 00 00 00 00 ab ab ab ab ab ab ab ab  ................\n',
  );

  const json = await cli('io', qsd.socketPath, 'read', '1096', '8', '--json');
  assert.equal((JSON.parse(json.stdout) as { hex: string }).hex, 'abababab00000000');

  const out = join(dir, 'read.bin');
  const toFile = await cli('io', qsd.socketPath, 'read', '1000', '100', '-o', out);
  assert.equal(toFile.code, 0, toFile.stderr);
  assert.ok(readFileSync(out).equals(Buffer.alloc(100, 0xab)));

  const data = randomBytes(prng(3), 5000);
  const src = join(dir, 'data.bin');
  writeFileSync(src, data);
  const fromFile = await cli('io', qsd.socketPath, 'write', '1M', '--file', src);
  assert.equal(fromFile.code, 0, fromFile.stderr);
  assert.ok(fileBytes(qsd.imagePath, 1 << 20, 5000).equals(data));
  const raw = await new Promise<Buffer>((resolve, reject) =>
    execFile(
      process.execPath,
      [CLI_MAIN, 'io', qsd.socketPath, 'read', '1M', '5000', '--raw'],
      { encoding: 'buffer' },
      (error, stdout) => (error ? reject(error) : resolve(stdout)),
    ),
  );
  assert.ok(raw.equals(data));
});

test('io write-zeroes, discard, flush, get-id', async () => {
  const fill = await cli('io', qsd.socketPath, 'write', '8k', '8k', '--pattern', '1');
  assert.equal(fill.code, 0, fill.stderr);
  const zero = await cli('io', qsd.socketPath, 'write-zeroes', '8193', '100', '--json');
  assert.equal(zero.code, 0, zero.stderr);
  assert.deepEqual(fileBytes(qsd.imagePath, 8192, 102), Buffer.from([1, ...Array(100).fill(0), 1]));
  const discard = await cli('io', qsd.socketPath, 'discard', '8k', '4k');
  assert.equal(discard.code, 0, discard.stderr);
  assert.match(discard.stdout, /discarded 4096 of 4096 bytes/);
  const flush = await cli('io', qsd.socketPath, 'flush');
  assert.equal(flush.code, 0, flush.stderr);
  const id = await cli('io', qsd.socketPath, 'get-id', '--json');
  assert.equal(id.code, 0, id.stderr);
  const result = JSON.parse(id.stdout) as { op: string; id: string };
  assert.equal(result.op, 'get-id');
  assert.equal(typeof result.id, 'string');
});

test('io past the end: exit 1 with VHOST_USER_ERR_OUT_OF_RANGE', async () => {
  const run = await cli('io', qsd.socketPath, 'read', '16M', '1');
  assert.equal(run.code, 1);
  assertOneLine(run, /VHOST_USER_ERR_OUT_OF_RANGE/);
});

test('verify -i 200 -S 4097 --async and sync', async () => {
  const run = await cli('verify', qsd.socketPath, '-i', '200', '-S', '4097', '--async');
  assert.equal(run.code, 0, run.stderr);
  assert.match(run.stdout, /200 iterations OK \(async\): 819400 bytes/);
  const sync = await cli(
    'verify',
    qsd.socketPath,
    '-i',
    '50',
    '-S',
    '1000',
    '--size',
    '3000',
    '--json',
  );
  assert.equal(sync.code, 0, sync.stderr);
  const result = JSON.parse(sync.stdout) as { ok: boolean; bytes: number; mode: string };
  assert.deepEqual([result.ok, result.bytes, result.mode], [true, 150_000, 'sync']);
  const tooBig = await cli('verify', qsd.socketPath, '-i', '10', '-S', '2M');
  assert.equal(tooBig.code, 1);
  assertOneLine(tooBig, /the device has 16777216/);
});

/** The region sizes of the SET_MEM_TABLE that a --trace run sent. */
function memTableSizes(stderr: string): number[] {
  const line = stderr.split('\n').find((l) => l.includes('-> VHOST_USER_SET_MEM_TABLE')) ?? '';
  return [...line.matchAll(/memorySize=0x([0-9a-f]+)/g)].map((m) => Number.parseInt(m[1]!, 16));
}

test('--hugepages 2M shares 2 MiB pages (as SPDK needs): regions of whole pages, data verifies', async () => {
  const pages = '/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages';
  const previous = readFileSync(pages, 'utf8').trim();
  const huge = 2 * 1024 * 1024;
  // The buffers (64 MiB by default) and the rings, each in whole pages.
  writeFileSync(pages, String(Number(previous) + 40));
  try {
    const run = await cli(
      'verify',
      qsd.socketPath,
      '-i',
      '20',
      '-S',
      '70001',
      '--hugepages',
      '2M',
      '--trace',
    );
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stdout, /20 iterations OK/);
    const sizes = memTableSizes(run.stderr);
    assert.equal(sizes.length, 2, run.stderr);
    for (const size of sizes) assert.equal(size % huge, 0, `a region of ${size} bytes`);
    // Without it: memfd in 4 KiB pages, and the rings' region is not a whole 2 MiB page.
    const plain = memTableSizes((await cli('info', qsd.socketPath, '--trace')).stderr);
    assert.equal(plain.length, 2);
    assert.ok(
      plain.some((size) => size % huge !== 0),
      `regions of ${plain.join(', ')} bytes`,
    );
  } finally {
    writeFileSync(pages, previous);
  }
});

test('cp import then export with --verify: the bytes survive both ways', async () => {
  const image = randomBytes(prng(11), 3_000_001);
  const src = join(dir, 'image.raw');
  const dst = join(dir, 'export.raw');
  writeFileSync(src, image);
  const imported = await cli('cp', src, `${qsd.socketPath}@4097`, '--verify');
  assert.equal(imported.code, 0, imported.stderr);
  assert.match(imported.stdout, /3000001 bytes .* verified/);
  assert.ok(fileBytes(qsd.imagePath, 4097, image.length).equals(image));
  const exported = await cli(
    'cp',
    `${qsd.socketPath}@4097`,
    dst,
    '--length',
    '3000001',
    '--verify',
    '--json',
  );
  assert.equal(exported.code, 0, exported.stderr);
  assert.equal((JSON.parse(exported.stdout) as { verified: boolean }).verified, true);
  assert.ok(readFileSync(dst).equals(image));

  // Whole device by default.
  const whole = await cli('cp', qsd.socketPath, dst);
  assert.equal(whole.code, 0, whole.stderr);
  assert.ok(readFileSync(dst).equals(readFileSync(qsd.imagePath)));

  const tooLong = await cli('cp', src, `${qsd.socketPath}@15M`);
  assert.equal(tooLong.code, 1);
  assertOneLine(tooLong, /VHOST_USER_ERR_OUT_OF_RANGE/);
});
