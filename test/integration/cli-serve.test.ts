import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import {
  existsSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  truncateSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const MAIN = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function cli(...args: string[]): Promise<Run> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [MAIN, ...args],
      { encoding: 'utf8', env: { ...process.env, DEBUG: '' } },
      (error, stdout, stderr) => {
        const code = error ? (typeof error.code === 'number' ? error.code : -1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

/** `vhost-user serve ...` in the background, resolved once it says it is listening. */
async function serve(...args: string[]): Promise<ChildProcess> {
  const child = spawn(process.execPath, [MAIN, 'serve', ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stderr!.on('data', (chunk: Buffer) => (err += chunk.toString()));
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
