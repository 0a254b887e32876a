/**
 * Data integrity at the device's limits: random I/O against a model Buffer and the raw file under
 * extreme negotiated limits (size_max, seg_max, blk_size, queue sizes, missing ring features),
 * through plain Buffers and allocBuffer memory alike.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import {
  createBlockServer,
  openBlockDevice,
  type BlockDevice,
  type OpenOptions,
} from '../../src/index.js';
import { startScriptedBackend } from '../helpers/scripted-backend.js';
import { startEmbedded, type EmbeddedOptions } from '../helpers/embedded-backend.js';
import { startQsd, type QsdOptions } from '../helpers/qsd.js';
import { prng, randomBytes, randomInt } from '../helpers/random.js';

/** Random I/O at random unaligned places (the last block often), checked against `model`. */
async function fuzz(
  dev: BlockDevice,
  model: Buffer,
  seed: number,
  rounds: number,
  longest = 3 * dev.blockSize + 20_000,
): Promise<void> {
  const rand = prng(seed);
  const size = dev.size;
  const maxLen = Math.min(size, longest);
  const pick = (length: number): number =>
    rand() < 0.25 ? size - length : randomInt(rand, 0, size - length);
  for (let i = 0; i < rounds; i++) {
    const where = `seed ${seed} round ${i}`;
    const op = randomInt(rand, 0, 5);
    const length = randomInt(rand, 1, maxLen);
    const position = pick(length);
    const shared = rand() < 0.5;
    // The blocking calls, a quarter of the time: the same engine driven from a wait loop.
    const sync = rand() < 0.25;
    if (op <= 1) {
      const data = randomBytes(rand, length);
      if (sync) {
        assert.equal(dev.writeSync(data, position), length, where);
      } else if (shared) {
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
      if (sync) {
        got = Buffer.alloc(length);
        assert.equal(dev.readSync(got, position), length, where);
      } else if (shared) {
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
      const done = sync
        ? dev.writeZeroesSync(position, length)
        : await dev.writeZeroes(position, length);
      assert.equal(done, length, where);
      model.fill(0, position, position + length);
    } else if (
      dev.info.type === 'virtio-blk' &&
      dev.info.features.names.includes('VIRTIO_BLK_F_DISCARD')
    ) {
      const done = sync ? dev.discardSync(position, length) : await dev.discard(position, length);
      const bs = dev.blockSize;
      const start = Math.ceil(position / bs) * bs;
      const end = Math.floor((position + length) / bs) * bs;
      assert.equal(done, Math.max(0, end - start), where);
      // The embedded backend zeroes what it discards.
      if (end > start) model.fill(0, start, end);
    }
  }
}

/**
 * `depth` workers at once, each on its own stretch of the device (unaligned, sharing edge blocks
 * with its neighbours), writing, zeroing and reading back through both buffer kinds.
 */
async function concurrentFuzz(
  dev: BlockDevice,
  model: Buffer,
  seed: number,
  depth: number,
  rounds: number,
  sharedBudget = 64 * 1024 * 1024,
): Promise<void> {
  const stretch = Math.floor(dev.size / depth);
  // allocBuffer memory in use, kept under half of `sharedBudget` so bounce buffers find room.
  let allocated = 0;
  const worker = async (w: number): Promise<void> => {
    const rand = prng(seed * 1000 + w);
    const base = w * stretch;
    for (let i = 0; i < rounds; i++) {
      const where = `seed ${seed} worker ${w} round ${i}`;
      const length = randomInt(rand, 1, stretch);
      const position = base + randomInt(rand, 0, stretch - length);
      const op = randomInt(rand, 0, 2);
      const shared = rand() < 0.5 && allocated + length <= sharedBudget / 2;
      if (shared) allocated += length;
      if (op === 0) {
        const data = randomBytes(rand, length);
        data.copy(model, position);
        if (shared) {
          const buf = dev.allocBuffer(length);
          data.copy(buf);
          assert.equal(await dev.write(buf, position), length, where);
          dev.freeBuffer(buf);
          allocated -= length;
        } else {
          assert.equal(await dev.write(data, position), length, where);
        }
      } else if (op === 1) {
        model.fill(0, position, position + length);
        assert.equal(await dev.writeZeroes(position, length), length, where);
      } else {
        const want = Buffer.from(model.subarray(position, position + length));
        let got: Buffer;
        if (shared) {
          const buf = dev.allocBuffer(length);
          assert.equal(await dev.readInto(buf, position), length, where);
          got = Buffer.from(buf);
          dev.freeBuffer(buf);
          allocated -= length;
        } else {
          got = await dev.read(position, length);
        }
        assert.ok(got.equals(want), `${where}: read ${position}+${length}`);
      }
    }
  };
  await Promise.all(Array.from({ length: depth }, (_, w) => worker(w)));
  const all = await dev.read(0, dev.size);
  assert.ok(all.equals(model), `seed ${seed}: device differs from the model`);
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

/** The same as withEmbedded, against qemu-storage-daemon (discard=unmap: discards read as zeroes). */
async function withQsd(
  qsdOptions: QsdOptions,
  open: OpenOptions,
  body: (dev: BlockDevice, model: Buffer) => Promise<void>,
): Promise<void> {
  const size = qsdOptions.size ?? 1024 * 1024;
  const contents = randomBytes(prng(size), size);
  const qsd = await startQsd({
    ...qsdOptions,
    size,
    contents,
    blockdevOptions: ['discard=unmap', ...(qsdOptions.blockdevOptions ?? [])],
  });
  try {
    const dev = await openBlockDevice(qsd.socketPath, open);
    try {
      const model = Buffer.from(contents.subarray(0, dev.size));
      await body(dev, model);
      await dev.flush();
      const file = readFileSync(qsd.imagePath);
      assert.ok(file.subarray(0, dev.size).equals(model), 'raw file differs from the model');
    } finally {
      await dev.close();
    }
  } finally {
    await qsd.stop();
  }
}

const QSD_CASES: { name: string; qsd: QsdOptions; open?: OpenOptions }[] = [
  {
    name: 'logical-block-size 4096, file not a multiple of it',
    qsd: { size: 1024 * 1024 + 1536, exportOptions: ['logical-block-size=4096'] },
  },
  {
    name: 'logical-block-size 4096, queueSize 4 without indirect',
    qsd: { exportOptions: ['logical-block-size=4096'] },
    open: { queueSize: 4, disableFeatures: { indirect: true, eventIdx: true } },
  },
  { name: 'one-block device', qsd: { size: 512 } },
];

describe('random I/O at the limits (qemu-storage-daemon)', () => {
  for (const c of QSD_CASES) {
    test(c.name, async () => {
      await withQsd(c.qsd, c.open ?? {}, async (dev, model) => {
        await fuzz(dev, model, 5, 150);
        if (dev.size >= 64 * 1024) await concurrentFuzz(dev, model, 6, 32, 10);
      });
    });
  }
});

const CASES: {
  name: string;
  backend: EmbeddedOptions;
  open?: OpenOptions;
  longest?: number;
}[] = [
  {
    name: 'seg_max 1000 > indirect table, size_max 512, long transfers',
    backend: { segMax: 1000, sizeMax: 512, fileSize: 16 * 1024 * 1024 },
    open: { queueSize: 1024 },
    longest: 3 * 1024 * 1024,
  },
  {
    name: 'no size_max, long transfers through a small bounce chunk',
    backend: { fileSize: 16 * 1024 * 1024, blockSize: 4096 },
    open: { bounceChunkSize: 8192, memorySize: 8 * 1024 * 1024 },
    longest: 3 * 1024 * 1024,
  },
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

const DEEP: {
  name: string;
  backend: EmbeddedOptions;
  open?: OpenOptions;
  depth: number;
  budget?: number;
}[] = [
  {
    name: 'depth 64 on queueSize 4 without indirect, seg_max 1',
    backend: { segMax: 1, sizeMax: 512 },
    open: { queueSize: 4, disableFeatures: { indirect: true } },
    depth: 64,
  },
  {
    name: 'depth 64 on queueSize 4 without EVENT_IDX, blk_size 4096',
    backend: { blockSize: 4096, fileSize: 4 * 1024 * 1024 },
    open: { queueSize: 4, disableFeatures: { eventIdx: true } },
    depth: 64,
  },
  {
    name: 'depth 32, 64 KiB of shared memory, blk_size 16384',
    backend: { blockSize: 16384, fileSize: 2 * 1024 * 1024 },
    open: { memorySize: 64 * 1024 },
    depth: 32,
    budget: 0,
  },
  {
    name: 'depth 16, big writes without indirect, size_max 4096',
    backend: { sizeMax: 4096, segMax: 126, fileSize: 32 * 1024 * 1024 },
    open: { queueSize: 16, disableFeatures: { indirect: true } },
    depth: 16,
  },
  {
    name: 'depth 64, 4 queues of 4',
    backend: { queues: 4, sizeMax: 1000, segMax: 5 },
    open: { queues: 4, queueSize: 4 },
    depth: 64,
  },
];

describe('concurrent I/O at the limits (embedded backend)', () => {
  for (const c of DEEP) {
    test(c.name, async () => {
      await withEmbedded(c.backend, c.open ?? {}, async (dev, model) => {
        await concurrentFuzz(dev, model, 11, c.depth, 20, c.budget);
      });
    });
  }
});

describe('random I/O at the limits (embedded backend)', () => {
  for (const c of CASES) {
    test(c.name, async () => {
      await withEmbedded(c.backend, c.open ?? {}, async (dev, model) => {
        await fuzz(dev, model, 7, 150, c.longest);
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

test('a queue too small for one block of a valid device is the caller’s error; a device that cannot carry one is the device’s', async () => {
  const valid = await startEmbedded({
    blockSize: 4096,
    sizeMax: 512,
    segMax: 126,
    fileSize: 64 * 1024,
  });
  try {
    for (const indirect of [true, false]) {
      // 8 descriptors leave 6 segments of 512 bytes: the device's seg_max 126 was blamed, as a
      // ProtocolError, for what the caller's queueSize limited.
      await assert.rejects(
        openBlockDevice(valid.socketPath, {
          queueSize: 8,
          disableFeatures: { indirect: !indirect },
        }),
        { code: 'VHOST_USER_ERR_INVALID_ARGUMENT', message: /queueSize 8 .*at least 16/ },
      );
    }
    const dev = await openBlockDevice(valid.socketPath, { queueSize: 16 });
    try {
      await dev.write(Buffer.alloc(5000, 3), 1000);
      assert.ok((await dev.read(1000, 5000)).equals(Buffer.alloc(5000, 3)));
    } finally {
      await dev.close();
    }
  } finally {
    await valid.stop();
  }
  // A device that sets no seg_max (no VIRTIO_BLK_F_SEG_MAX) limits nothing: a queue too small
  // for one 4096-byte block in 512-byte segments is again the caller's, named as such.
  const noSegMax = await startScriptedBackend(() => ({ kind: 'default' }), {
    sizeMax: 512,
    blkSize: 4096,
  });
  try {
    await assert.rejects(openBlockDevice(noSegMax.socketPath, { queueSize: 4 }), {
      code: 'VHOST_USER_ERR_INVALID_ARGUMENT',
      message: /queueSize 4 /,
    });
  } finally {
    await noSegMax.stop();
  }
  const broken = await startEmbedded({
    blockSize: 4096,
    sizeMax: 512,
    segMax: 2,
    fileSize: 64 * 1024,
  });
  try {
    await assert.rejects(openBlockDevice(broken.socketPath, { queueSize: 256 }), {
      code: 'VHOST_USER_ERR_PROTOCOL',
      message: /size_max 512 x seg_max 2 cannot carry one 4096-byte block/,
    });
  } finally {
    await broken.stop();
  }
});

test('discard and write-zeroes longer than max_discard / max_write_zeroes are split and land', async () => {
  const MiB = 1024 * 1024;
  await withEmbedded({ fileSize: 40 * MiB, blockSize: 4096 }, {}, async (dev, model) => {
    // The embedded backend takes 16 MiB per request and fails a longer one.
    assert.equal(await dev.writeZeroes(1000, 35 * MiB), 35 * MiB);
    model.fill(0, 1000, 1000 + 35 * MiB);
    const done = await dev.discard(3, 40 * MiB - 3);
    assert.equal(done, 40 * MiB - 4096);
    model.fill(0, 4096, 40 * MiB);
    assert.equal(dev.writeZeroesSync(5, 33 * MiB + 7), 33 * MiB + 7);
    model.fill(0, 5, 5 + 33 * MiB + 7);
  });
});

for (const peer of ['embedded', 'qsd'] as const) {
  test(`a read-only device (${peer}) refuses every kind of write and still reads and flushes`, async () => {
    const contents = randomBytes(prng(3), 64 * 1024);
    const started =
      peer === 'embedded'
        ? await startEmbedded({ readOnly: true, fileSize: contents.length, contents })
        : await startQsd({ writable: false, size: contents.length, contents });
    try {
      const dev = await openBlockDevice(started.socketPath);
      try {
        assert.equal(dev.readOnly, true);
        const ro = { code: 'VHOST_USER_ERR_READ_ONLY' };
        await assert.rejects(dev.write(Buffer.alloc(10), 0), ro);
        await assert.rejects(dev.write(Buffer.alloc(512), 512), ro);
        await assert.rejects(dev.writeZeroes(0, 4096), ro);
        await assert.rejects(dev.discard(0, 4096), ro);
        assert.throws(() => dev.writeSync(Buffer.alloc(1), 0), ro);
        assert.throws(() => dev.writeZeroesSync(0, 1), ro);
        assert.throws(() => dev.discardSync(0, 512), ro);
        const shared = dev.allocBuffer(4096);
        await assert.rejects(dev.write(shared, 0), ro);
        dev.freeBuffer(shared);
        await dev.flush();
        dev.flushSync();
        assert.ok((await dev.read(100, 60_000)).equals(contents.subarray(100, 60_100)));
        const last = Buffer.alloc(1);
        assert.equal(dev.readSync(last, contents.length - 1), 1);
        assert.equal(last[0], contents[contents.length - 1]);
      } finally {
        await dev.close();
      }
      assert.ok(readFileSync(started.imagePath).equals(contents));
    } finally {
      await started.stop();
    }
  });
}

test('the embedded backend refuses a size_max below 16 (16-byte header descriptors), takes 16', async () => {
  // size_max 8 made a device that failed every request: even a flush's 16-byte header broke it.
  for (const sizeMax of [1, 8, 15]) {
    assert.throws(() => createBlockServer({ socketPath: '/nonexistent/s', size: 4096, sizeMax }), {
      code: 'VHOST_USER_ERR_INVALID_ARGUMENT',
      message: /sizeMax/,
    });
  }
  await withEmbedded({ sizeMax: 16, segMax: 64, fileSize: 64 * 1024 }, {}, async (dev, model) => {
    await fuzz(dev, model, 9, 40, 2000);
    await dev.flush();
    assert.equal(await dev.getId(), 'vhost-user-embedded');
  });
});
