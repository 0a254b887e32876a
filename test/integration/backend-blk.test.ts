import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { openBlockDevice, type BlockDevice } from '../../src/index.js';
import { startEmbedded, type Embedded, type EmbeddedOptions } from '../helpers/embedded-backend.js';
import { prng, randomBytes, randomInt } from '../helpers/random.js';
import { fileBytes } from '../helpers/files.js';

const SIZE = 8 * 1024 * 1024;

/** Runs `body` against a fresh backend and device; both are always released. */
async function withDevice(
  options: EmbeddedOptions,
  open: Parameters<typeof openBlockDevice>[1],
  body: (dev: BlockDevice, backend: Embedded) => Promise<void>,
): Promise<void> {
  const backend = await startEmbedded(options);
  let dev: BlockDevice | undefined;
  try {
    dev = await openBlockDevice(backend.socketPath, { timeout: 2000, ...open });
    await body(dev, backend);
  } finally {
    await dev?.close();
    await backend.stop();
  }
}

async function randomIo(
  dev: BlockDevice,
  model: Buffer,
  seed: number,
  rounds: number,
): Promise<void> {
  const rand = prng(seed);
  for (let i = 0; i < rounds; i++) {
    const length = randomInt(rand, 1, 20000);
    const position = randomInt(rand, 0, model.length - length);
    const data = randomBytes(rand, length);
    assert.equal(await dev.write(data, position), length);
    data.copy(model, position);
    const rl = randomInt(rand, 1, 30000);
    const rp = randomInt(rand, 0, model.length - rl);
    assert.ok((await dev.read(rp, rl)).equals(model.subarray(rp, rp + rl)), `seed ${seed} i ${i}`);
  }
}

test('file backend: random unaligned I/O matches a model and the raw file', async () => {
  await withDevice({ fileSize: SIZE }, { queueSize: 64 }, async (dev, backend) => {
    assert.equal(dev.size, SIZE);
    assert.equal(dev.blockSize, 512);
    assert.ok(dev.info.replyAck);
    assert.ok(dev.info.eventIdx && dev.info.indirect);
    assert.ok(!dev.info.features.offeredNames.includes('VIRTIO_F_NOTIFY_ON_EMPTY'));
    // sizeMax 0 (the default) is no limit: SIZE_MAX is not offered (size_max 0 would forbid all).
    assert.ok(!dev.info.features.offeredNames.includes('VIRTIO_BLK_F_SIZE_MAX'));
    assert.equal(dev.info.maxSegmentBytes, Infinity);
    const model = Buffer.alloc(SIZE);
    await randomIo(dev, model, 4321, 200);
    // Concurrent writes to disjoint ranges, then the file checked independently.
    const rand = prng(77);
    await Promise.all(
      Array.from({ length: 32 }, (_, i) => {
        const data = randomBytes(rand, 3000);
        data.copy(model, 100_000 + i * 5000);
        return dev.write(data, 100_000 + i * 5000);
      }),
    );
    await dev.flush();
    assert.ok(readFileSync(backend.imagePath).equals(model), 'raw file differs from the model');
    const stats = await backend.stats();
    assert.equal(stats.rejected, 0);
    assert.ok(stats.requests > 400 && stats.callsSent > 0);
  });
});

test('RAM backend, 4 KiB blocks, two queues', async () => {
  await withDevice({ size: SIZE, blockSize: 4096, queues: 2 }, { queues: 2 }, async (dev) => {
    assert.equal(dev.blockSize, 4096);
    assert.equal(dev.info.queues, 2);
    const model = Buffer.alloc(SIZE);
    await randomIo(dev, model, 99, 100);
    const all = await Promise.all(Array.from({ length: 16 }, (_, i) => dev.read(i * 65536, 65536)));
    all.forEach((b, i) => assert.ok(b.equals(model.subarray(i * 65536, (i + 1) * 65536))));
  });
});

test('flush, get-id, discard and write-zeroes reach the file', async () => {
  await withDevice({ fileSize: SIZE, serial: 'disk-42' }, {}, async (dev, backend) => {
    assert.equal(await dev.getId(), 'disk-42');
    const base = 3 * 1024 * 1024;
    const pattern = Buffer.alloc(8192, 0x5a);
    await dev.write(pattern, base);
    assert.equal(await dev.discard(base + 100, 3000), 2560);
    await dev.flush();
    const after = fileBytes(backend.imagePath, base, 8192);
    assert.ok(after.subarray(0, 512).equals(pattern.subarray(0, 512)));
    assert.ok(after.subarray(3072).equals(pattern.subarray(3072)));
    assert.ok(
      after.subarray(512, 3072).every((b) => b === 0),
      'discarded blocks hold data',
    );

    await dev.write(pattern, base);
    assert.equal(await dev.writeZeroes(base + 17, 5000), 5000);
    const expected = Buffer.from(pattern);
    expected.fill(0, 17, 5017);
    assert.ok((await dev.read(base, 8192)).equals(expected));
    await dev.flush();
    assert.ok(fileBytes(backend.imagePath, base, 8192).equals(expected));
  });
});

test('read-only backend', async () => {
  const contents = randomBytes(prng(3), 1024 * 1024);
  await withDevice({ readOnly: true, fileSize: 1024 * 1024, contents }, {}, async (dev) => {
    assert.equal(dev.readOnly, true);
    assert.ok((await dev.read(1000, 50000)).equals(contents.subarray(1000, 51000)));
    await assert.rejects(dev.write(Buffer.alloc(10), 0), { code: 'VHOST_USER_ERR_READ_ONLY' });
    await dev.flush();
  });
});

test('a ring larger than the backend accepts is refused at open', async () => {
  const backend = await startEmbedded({ size: SIZE, queueSize: 64 });
  try {
    await assert.rejects(openBlockDevice(backend.socketPath, { queueSize: 128 }), {
      code: 'VHOST_USER_ERR_NACK',
      request: 'VHOST_USER_SET_VRING_NUM',
    });
    // The refused frontend left cleanly: the next one gets in.
    const dev = await openBlockDevice(backend.socketPath, { queueSize: 64 });
    await dev.write(Buffer.alloc(512, 1), 0);
    await dev.close();
  } finally {
    await backend.stop();
  }
});

test('size_max 4096 and seg_max 4: the frontend splits, the backend rejects nothing', async () => {
  await withDevice({ size: SIZE, sizeMax: 4096, segMax: 4 }, {}, async (dev, backend) => {
    assert.ok(dev.info.features.offeredNames.includes('VIRTIO_BLK_F_SIZE_MAX'));
    assert.equal(dev.info.maxSegmentBytes, 4096);
    assert.equal(dev.info.maxSegments, 4);
    const data = randomBytes(prng(11), 300_000);
    await dev.write(data, 12345);
    assert.ok((await dev.read(12345, data.length)).equals(data));
    const stats = await backend.stats();
    assert.equal(stats.rejected, 0);
    assert.ok(stats.requests >= (2 * 300_000) / (4 * 4096));
  });
});

test('polling backend: no kicks, I/O still verified', async () => {
  await withDevice({ size: SIZE, polling: true }, {}, async (dev, backend) => {
    const model = Buffer.alloc(SIZE);
    await randomIo(dev, model, 5, 100);
    await Promise.all(Array.from({ length: 64 }, (_, i) => dev.read(i * 4096, 4096)));
    assert.equal(dev.stats.kicks, 0);
    const stats = await backend.stats();
    assert.equal(stats.kicksReceived, 0);
    assert.ok(stats.requests > 200);
  });
});

test('polling backend without EVENT_IDX: VRING_USED_F_NO_NOTIFY keeps the driver from kicking', async () => {
  await withDevice(
    { size: SIZE, polling: true },
    { disableFeatures: { eventIdx: true } },
    async (dev, backend) => {
      assert.equal(dev.info.eventIdx, false);
      const model = Buffer.alloc(SIZE);
      await randomIo(dev, model, 6, 100);
      await Promise.all(Array.from({ length: 64 }, (_, i) => dev.read(i * 4096, 4096)));
      assert.equal(dev.stats.kicks, 0);
      const stats = await backend.stats();
      assert.equal(stats.kicksReceived, 0);
      assert.equal(stats.rejected, 0);
      assert.ok(stats.requests > 200);
    },
  );
});

test('one frontend at a time; the next connects after the first leaves', async () => {
  const backend = await startEmbedded({ size: SIZE });
  try {
    const first = await openBlockDevice(backend.socketPath);
    await first.write(Buffer.from('from the first'), 4096);
    await assert.rejects(
      openBlockDevice(backend.socketPath, { timeout: 1000 }),
      (err: Error & { code?: string }) =>
        err.code === 'VHOST_USER_ERR_DISCONNECTED' || err.code === 'VHOST_USER_ERR_CONNECT',
    );
    await first.close();
    const second = await openBlockDevice(backend.socketPath);
    assert.equal((await second.read(4096, 14)).toString(), 'from the first');
    await second.close();
    assert.equal((await backend.stats()).connections, 2);
  } finally {
    await backend.stop();
  }
});
