/**
 * An independent frontend for the embedded backend: Linux's virtio_blk driver, and its
 * virtio_scsi + sd drivers, in a QEMU guest (../shared/guest) drive `vhost-user serve --file`
 * (and `serve --type scsi`). The host writes a marker the guest must read; the guest writes
 * 1 MiB that must reach the host file.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileBytes } from '../helpers/files.js';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
// The guest scripts are kept in the repository (test/guest, from ../shared/guest) so that a
// clone anywhere can run this test; VHOST_USER_GUEST_DIR points at another copy.
const guestDir = process.env.VHOST_USER_GUEST_DIR ?? join(root, 'test', 'guest');
const cli = join(root, 'dist', 'src', 'cli', 'main.js');
const guestOut = join(tmpdir(), 'vhost-user-guest');

/**
 * Boots the guest against `serve <serveArgs>` on a 16 MiB file whose first bytes are a marker:
 * the guest must read the marker, and the 1 MiB it writes must reach the file.
 */
async function guestRoundTrip(type: 'blk' | 'scsi', serveArgs: string[]): Promise<void> {
  assert.ok(existsSync(join(guestDir, 'build.sh')), `guest scripts not found at ${guestDir}`);
  if (!existsSync(join(guestOut, 'vmlinuz')) || !existsSync(join(guestOut, 'initrd.gz'))) {
    execFileSync('bash', [join(guestDir, 'build.sh')], {
      env: { ...process.env, OUT: guestOut },
      stdio: 'inherit',
    });
  }
  const dir = mkdtempSync(join(tmpdir(), 'vhost-user-guest-test-'));
  const image = join(dir, 'disk.img');
  const socketPath = join(dir, 'vhost.sock');
  const marker = Buffer.from('vhost-user-host!');
  const disk = Buffer.alloc(16 * 1024 * 1024);
  marker.copy(disk, 0);
  writeFileSync(image, disk);
  const server = spawn(
    process.execPath,
    [cli, 'serve', ...serveArgs, '--file', image, '--socket-path', socketPath, '--verbose'],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let serverErr = '';
  server.stderr.on('data', (c: Buffer) => (serverErr += c.toString()));
  try {
    for (let i = 0; !existsSync(socketPath); i++) {
      assert.ok(i < 500 && server.exitCode === null, `serve did not start: ${serverErr}`);
      await sleep(20);
    }
    const out = execFileSync('bash', [join(guestDir, 'run.sh'), socketPath, type], {
      env: { ...process.env, OUT: guestOut },
      encoding: 'utf8',
      timeout: 240_000,
    });
    assert.match(out, /GUEST-RESULT: ok/, `guest output:\n${out}\nserve stderr:\n${serverErr}`);
    const head = /GUEST-HEAD: ([0-9a-f]+)/.exec(out)?.[1];
    assert.equal(head, marker.toString('hex'), 'the guest did not read what the host wrote');
    const md5 = /GUEST-MD5: ([0-9a-f]{32})/.exec(out)?.[1];
    assert.ok(md5, `no GUEST-MD5 in:\n${out}`);
    // init writes 256 x 4 KiB at block 16 (byte 65536) with O_DIRECT and fsync.
    const written = fileBytes(image, 65536, 1024 * 1024);
    assert.equal(
      createHash('md5').update(written).digest('hex'),
      md5,
      'the guest’s write did not reach the file',
    );
    assert.doesNotMatch(serverErr, /client dropped/, 'the backend refused the guest');
  } finally {
    server.kill('SIGTERM');
    await new Promise((r) => (server.exitCode !== null ? r(undefined) : server.once('exit', r)));
    rmSync(dir, { recursive: true, force: true });
  }
}

test(
  'Linux virtio_blk in a QEMU guest reads and writes through `serve --file`',
  { timeout: 600_000 },
  () => guestRoundTrip('blk', []),
);

// QEMU's vhost-user-scsi-pci gives the guest its own config; Linux scans targets 0..255 (the
// others must answer BAD_TARGET fast), sends TMFs on the controlq and posts eventq buffers.
test(
  'Linux virtio_scsi + sd in a QEMU guest read and write through `serve --type scsi`',
  { timeout: 600_000 },
  () => guestRoundTrip('scsi', ['--type', 'scsi']),
);
