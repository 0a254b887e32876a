/** The embedded backend's option limits and lifecycle misuse: typed errors, before any socket. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createBlockServer } from '../../src/backend/index.js';
import { DeviceClosedError, InvalidArgumentError, openScsiDevice } from '../../src/index.js';

function withDir(body: (dir: string) => Promise<void> | void): () => Promise<void> {
  return async () => {
    const dir = mkdtempSync(join(tmpdir(), 'vhost-user-options-'));
    try {
      await body(dir);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  };
}

test(
  'vhost-user-scsi has at most 254 request queues (rings 0..255, two of them control and event); blk 256',
  withDir((dir) => {
    const socketPath = join(dir, 'sock');
    assert.throws(
      () => createBlockServer({ type: 'scsi', socketPath, size: 1 << 20, queues: 255 }),
      (err: unknown) => err instanceof InvalidArgumentError && /queues/.test(err.message),
    );
    assert.doesNotThrow(() =>
      createBlockServer({ type: 'scsi', socketPath, size: 1 << 20, queues: 254 }),
    );
    assert.doesNotThrow(() => createBlockServer({ socketPath, size: 1 << 20, queues: 256 }));
  }),
);

test(
  'openScsiDevice refuses more request queues than vhost-user can address, before connecting',
  withDir(async (dir) => {
    // No socket there: the option is refused first, not the connection.
    await assert.rejects(
      openScsiDevice(join(dir, 'none.sock'), { queues: 255 }),
      (err: unknown) => err instanceof InvalidArgumentError && /at most 254/.test(err.message),
    );
  }),
);

test(
  'listen() after close() is a DeviceClosedError; a file smaller than one block an InvalidArgumentError',
  withDir(async (dir) => {
    const server = createBlockServer({ socketPath: join(dir, 'a.sock'), size: 1 << 20 });
    await server.close();
    await assert.rejects(server.listen(), DeviceClosedError);

    const file = join(dir, 'tiny.img');
    writeFileSync(file, Buffer.alloc(4000));
    const tiny = createBlockServer({ socketPath: join(dir, 'b.sock'), file, blockSize: 4096 });
    try {
      await assert.rejects(
        tiny.listen(),
        (err: unknown) =>
          err instanceof InvalidArgumentError && /smaller than one/.test(err.message),
      );
    } finally {
      await tiny.close();
    }
  }),
);
