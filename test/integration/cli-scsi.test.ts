/** The CLI on a virtio-scsi controller (the embedded backend in scsi mode, in a child process). */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startEmbedded, type Embedded } from '../helpers/embedded-backend.js';
import { fileBytes } from '../helpers/files.js';
import { runCli } from '../helpers/cli.js';

const SIZE = 4 * 1024 * 1024;
let backend: Embedded;

before(async () => {
  backend = await startEmbedded({
    type: 'scsi',
    target: 2,
    lun: 7,
    serial: 'CLI-SCSI-1',
    fileSize: SIZE,
  });
});

after(async () => {
  await backend?.stop();
});

test('info --type scsi --json lists the LUN it found and what it negotiated', async () => {
  const run = await runCli('info', backend.socketPath, '--type', 'scsi', '--json');
  assert.equal(run.code, 0, run.stderr);
  const info = JSON.parse(run.stdout) as {
    type: string;
    size: number;
    scsi: { target: number; lun: number; serial: string; luns: { target: number; lun: number }[] };
  };
  assert.equal(info.type, 'virtio-scsi');
  assert.equal(info.size, SIZE);
  assert.equal(info.scsi.target, 2);
  assert.equal(info.scsi.lun, 7);
  assert.equal(info.scsi.serial, 'CLI-SCSI-1');
  assert.deepEqual(
    info.scsi.luns.map((l) => [l.target, l.lun]),
    [[2, 7]],
  );
  const text = await runCli('info', backend.socketPath, '--type', 'scsi');
  assert.equal(text.code, 0, text.stderr);
  assert.match(text.stdout, /target 2 lun 7/);
});

test('io --type scsi writes and reads back; the file has the bytes', async () => {
  const write = await runCli(
    'io',
    backend.socketPath,
    '--type',
    'scsi',
    'write',
    '1000',
    '3000',
    '-P',
    '0x5c',
  );
  assert.equal(write.code, 0, write.stderr);
  assert.ok(fileBytes(backend.imagePath, 1000, 3000).every((b) => b === 0x5c));
  const id = await runCli(
    'io',
    backend.socketPath,
    '--type',
    'scsi',
    '--lun',
    '7',
    '--target',
    '2',
    'get-id',
  );
  assert.equal(id.code, 0, id.stderr);
  assert.match(id.stdout, /CLI-SCSI-1/);
});

test('--target without --type scsi, and a bad --type, are usage errors', async () => {
  const bad = await runCli('info', backend.socketPath, '--target', '1');
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /--target needs --type scsi/);
  const type = await runCli('info', backend.socketPath, '--type', 'nvme');
  assert.equal(type.code, 2);
  const none = await runCli(
    'info',
    backend.socketPath,
    '--type',
    'scsi',
    '--target',
    '1',
    '--lun',
    '0',
  );
  assert.equal(none.code, 1);
  assert.match(none.stderr, /VHOST_USER_ERR_UNSUPPORTED/);
});

test('bench --type scsi runs against the controller; scsi on a blk backend is a clear error', async () => {
  const run = await runCli(
    'bench',
    backend.socketPath,
    '--type',
    'scsi',
    '--rw',
    'randread',
    '--bs',
    '4k',
    '--iodepth',
    '4',
    '--runtime',
    '0.3',
    '--size',
    '1m',
    '--json',
  );
  assert.equal(run.code, 0, run.stderr);
  const result = JSON.parse(run.stdout) as { jobs: { read: { iops: number } }[] };
  assert.ok(result.jobs[0]!.read.iops > 0);

  const blk = await startEmbedded({ fileSize: SIZE });
  try {
    const wrong = await runCli('info', blk.socketPath, '--type', 'scsi');
    assert.equal(wrong.code, 1);
    assert.match(
      wrong.stderr,
      /is this a vhost-user-scsi backend\? \[VHOST_USER_ERR_UNSUPPORTED\]/,
    );
  } finally {
    await blk.stop();
  }
});
