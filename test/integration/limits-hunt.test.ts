/**
 * Data integrity at the device's limits: random I/O against a model Buffer and the raw file under
 * extreme negotiated limits (size_max, seg_max, blk_size, queue sizes, missing ring features),
 * through plain Buffers and allocBuffer memory alike.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { openBlockDevice, type BlockDevice, type OpenOptions } from '../../src/index.js';
import { startEmbedded, type EmbeddedOptions } from '../helpers/embedded-backend.js';
import { prng, randomBytes, randomInt } from '../helpers/random.js';

/** Random I/O at random unaligned places (the last block often), checked against `model`. */
async function fuzz(dev: BlockDevice, model: Buffer, seed: number, rounds: number): Promise<void> {
  const rand = prng(seed);
  const size = dev.size;
  const maxLen = Math.min(size, 3 * dev.blockSize + 20_000);
  const pick = (length: number): number =>
    rand() < 0.25 ? size - length : randomInt(rand, 0, size - length);
  for (let i = 0; i < rounds; i++) {
    const where = `seed ${seed} round ${i}`;
    const op = randomInt(rand, 0, 5);
    const length = randomInt(rand, 1, maxLen);
    const position = pick(length);
    const shared = rand() < 0.5;
    if (op <= 1) {
      const data = randomBytes(rand, length);
      if (shared) {
        const buf = dev.allocBuffer(length);
        data.copy(buf);
        assert.equal(await dev.write(buf, position), length, where);
        dev.freeBuffer(buf);
      } else {
        assert.equal(await dev.write(data, position), length, where);
      }
      data.copy(model, position);
    } else if (op <= 3) {
      let got: Buffer;
      if (shared) {
        const buf = dev.allocBuffer(length);
        assert.equal(await dev.readInto(buf, position), length, where);
        got = Buffer.from(buf);
        dev.freeBuffer(buf);
      } else {
        got = await dev.read(position, length);
      }
      const want = model.subarray(position, position + length);
      assert.ok(got.equals(want), `${where}: read ${position}+${length}`);
    } else if (op === 4) {
      assert.equal(await dev.writeZeroes(position, length), length, where);
      model.fill(0, position, position + length);
    } else if (
      dev.info.type === 'virtio-blk' &&
      dev.info.features.names.includes('VIRTIO_BLK_F_DISCARD')
    ) {
      const done = await dev.discard(position, length);
      const bs = dev.blockSize;
      const start = Math.ceil(position / bs) * bs;
      const end = Math.floor((position + length) / bs) * bs;
      assert.equal(done, Math.max(0, end - start), where);
      // The embedded backend zeroes what it discards.
      if (end > start) model.fill(0, start, end);
    }
  }
}

async function withEmbedded(
  backend: EmbeddedOptions,
  open: OpenOptions,
  body: (dev: BlockDevice, model: Buffer, imagePath: string) => Promise<void>,
): Promise<void> {
  const fileSize = backend.fileSize ?? 1024 * 1024;
  const contents = randomBytes(prng(fileSize), fileSize);
  const peer = await startEmbedded({ ...backend, fileSize, contents });
  try {
    const dev = await openBlockDevice(peer.socketPath, open);
    try {
      const model = Buffer.from(contents.subarray(0, dev.size));
      await body(dev, model, peer.imagePath);
      await dev.flush();
      const file = readFileSync(peer.imagePath);
      assert.ok(file.subarray(0, dev.size).equals(model), 'raw file differs from the model');
      assert.ok(
        file.subarray(dev.size).equals(contents.subarray(dev.size)),
        'bytes past the capacity changed',
      );
    } finally {
      await dev.close();
    }
  } finally {
    await peer.stop();
  }
}

const CASES: { name: string; backend: EmbeddedOptions; open?: OpenOptions }[] = [
  { name: 'seg_max 1, size_max 512', backend: { segMax: 1, sizeMax: 512 } },
  { name: 'size_max 700 (not a block multiple), seg_max 3', backend: { segMax: 3, sizeMax: 700 } },
  { name: 'size_max 100 (below a block), seg_max 16', backend: { segMax: 16, sizeMax: 100 } },
  {
    name: 'blk_size 4096, seg_max 1, size_max 4096',
    backend: { blockSize: 4096, segMax: 1, sizeMax: 4096 },
  },
  {
    name: 'blk_size 4096, file not a multiple of it',
    backend: { blockSize: 4096, fileSize: 40960 + 1536 },
  },
  { name: 'one-block device', backend: { fileSize: 512 } },
  { name: 'one 4096-byte block', backend: { blockSize: 4096, fileSize: 4096 } },
  {
    name: 'queueSize 4 without indirect',
    backend: {},
    open: { queueSize: 4, disableFeatures: { indirect: true } },
  },
  {
    name: 'queueSize 4, no EVENT_IDX',
    backend: { segMax: 2, sizeMax: 1024 },
    open: { queueSize: 4, disableFeatures: { eventIdx: true } },
  },
];

describe('random I/O at the limits (embedded backend)', () => {
  for (const c of CASES) {
    test(c.name, async () => {
      await withEmbedded(c.backend, c.open ?? {}, async (dev, model) => {
        await fuzz(dev, model, 7, 150);
      });
    });
  }
});

test('a queue too small for one request (3 descriptors) is refused at open, 4 works', async () => {
  const peer = await startEmbedded({ fileSize: 64 * 1024 });
  try {
    for (const queueSize of [1, 2]) {
      for (const indirect of [true, false]) {
        // It opened, and then every read or write failed with OutOfMemoryError ("0 bytes").
        await assert.rejects(
          openBlockDevice(peer.socketPath, { queueSize, disableFeatures: { indirect: !indirect } }),
          { code: 'VHOST_USER_ERR_INVALID_ARGUMENT', message: /queueSize/ },
        );
      }
    }
    const dev = await openBlockDevice(peer.socketPath, {
      queueSize: 4,
      disableFeatures: { indirect: true },
    });
    try {
      await dev.write(Buffer.alloc(1000, 7), 100);
      assert.ok((await dev.read(100, 1000)).equals(Buffer.alloc(1000, 7)));
    } finally {
      await dev.close();
    }
  } finally {
    await peer.stop();
  }
});
