import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import type { BlockDevice } from '../../src/index.js';
import { ALL_PEERS, startPeer, type Peer } from '../helpers/peers.js';
import { prng, randomBytes, randomInt } from '../helpers/random.js';
import { fileBytes } from '../helpers/files.js';

const SIZE = 8 * 1024 * 1024;

// The data-integrity suite: the same for virtio-blk and virtio-scsi.
for (const kind of ALL_PEERS) {
  describe(`against ${kind}`, () => {
    let qsd: Peer;
    let dev: BlockDevice;

    before(async () => {
      qsd = await startPeer(kind, { size: SIZE });
      dev = await qsd.open({ queueSize: 64 });
    });

    after(async () => {
      await dev?.close();
      await qsd?.stop();
    });

    test('device geometry matches the exported file', () => {
      assert.equal(dev.size, SIZE);
      assert.equal(dev.blockSize, 512);
      assert.equal(dev.readOnly, false);
      const names = dev.info.features.names;
      assert.ok(names.includes('VIRTIO_F_VERSION_1'));
      assert.ok(names.includes('VIRTIO_RING_F_EVENT_IDX'));
      assert.ok(names.includes('VIRTIO_RING_F_INDIRECT_DESC'));
      // Offered by qemu-storage-daemon, never negotiated by us.
      if (kind === 'qsd')
        assert.ok(dev.info.features.offeredNames.includes('VIRTIO_F_NOTIFY_ON_EMPTY'));
      assert.ok(!names.includes('VIRTIO_F_NOTIFY_ON_EMPTY'));
      assert.ok(!names.includes('VHOST_F_LOG_ALL'));
      assert.ok(dev.info.replyAck);
      if (dev.info.type === 'virtio-blk') assert.equal(dev.info.config.capacity, SIZE / 512);
      else assert.equal(dev.info.type, kind === 'embedded-scsi' ? 'virtio-scsi' : 'virtio-blk');
    });

    test('random unaligned writes and reads match a model and the file on disk', async () => {
      const seed = 1234;
      const rand = prng(seed);
      const model = Buffer.alloc(SIZE);
      for (let i = 0; i < 300; i++) {
        const length = randomInt(rand, 1, 20000);
        const position = randomInt(rand, 0, SIZE - length);
        const data = randomBytes(rand, length);
        assert.equal(await dev.write(data, position), length);
        data.copy(model, position);
        const rl = randomInt(rand, 1, 30000);
        const rp = randomInt(rand, 0, SIZE - rl);
        const got = await dev.read(rp, rl);
        assert.ok(
          got.equals(model.subarray(rp, rp + rl)),
          `seed ${seed} iteration ${i}: read ${rp}+${rl}`,
        );
      }
      await dev.flush();
      assert.ok(readFileSync(qsd.imagePath).equals(model), 'raw file differs from the model');
      const stats = dev.stats;
      assert.ok(stats.readModifyWrites > 0);
      assert.ok(stats.bytesBounced > 0);
    });

    test('concurrent unaligned writes sharing blocks do not lose each other’s bytes', async () => {
      const base = 3 * 1024 * 1024 + 7;
      const pieces = 200;
      const width = 100; // five writes per 512-byte block
      const rand = prng(99);
      const expected = randomBytes(rand, pieces * width);
      // Interleave the order so neighbours are in flight together.
      const order = Array.from({ length: pieces }, (_, i) => i).sort(() => rand() - 0.5);
      await Promise.all(
        order.map((i) =>
          dev.write(expected.subarray(i * width, (i + 1) * width), base + i * width),
        ),
      );
      const got = await dev.read(base, pieces * width);
      assert.ok(got.equals(expected));
      await dev.flush();
      assert.ok(fileBytes(qsd.imagePath, base, pieces * width).equals(expected));
    });

    test('aligned and unaligned writes racing on the same blocks keep every byte of the last writer', async () => {
      const base = 5 * 1024 * 1024;
      // An aligned 4 KiB write and many small unaligned writes inside it, issued in one tick:
      // whatever the order, the unaligned bytes issued after the aligned write must survive.
      const aligned = Buffer.alloc(4096, 0xaa);
      const small = Array.from({ length: 16 }, (_, i) => Buffer.alloc(10, i + 1));
      const writes = [
        dev.write(aligned, base),
        ...small.map((b, i) => dev.write(b, base + i * 256 + 3)),
      ];
      await Promise.all(writes);
      const got = await dev.read(base, 4096);
      const expected = Buffer.from(aligned);
      small.forEach((b, i) => b.copy(expected, i * 256 + 3));
      assert.ok(got.equals(expected));
    });

    test('flush, get-id, discard and write-zeroes', async () => {
      await dev.flush();
      const id = await dev.getId();
      assert.equal(typeof id, 'string');
      // virtio-blk ids have at most 20 bytes; SCSI unit serial numbers may be longer.
      assert.ok(id.length > 0 && (kind === 'embedded-scsi' || id.length <= 20), `id ${id}`);

      const base = 6 * 1024 * 1024;
      const pattern = Buffer.alloc(8192, 0x5a);
      await dev.write(pattern, base);
      // Discard an unaligned range: only whole blocks inside it may change.
      const discarded = await dev.discard(base + 100, 3000);
      assert.equal(discarded, 2560); // blocks [512, 3072) lie inside [100, 3100)
      await dev.flush();
      const after = fileBytes(qsd.imagePath, base, 8192);
      assert.ok(
        after.subarray(0, 512).equals(pattern.subarray(0, 512)),
        'bytes before the range changed',
      );
      assert.ok(
        after.subarray(3072).equals(pattern.subarray(3072)),
        'bytes after the rounded range changed',
      );
      assert.ok(
        after.subarray(512, 3072).every((b) => b === 0),
        'discarded blocks still hold data',
      );

      await dev.write(pattern, base);
      assert.equal(await dev.writeZeroes(base + 17, 5000), 5000);
      const z = await dev.read(base, 8192);
      const expected = Buffer.from(pattern);
      expected.fill(0, 17, 5017);
      assert.ok(z.equals(expected));
      await dev.flush();
      assert.ok(fileBytes(qsd.imagePath, base, 8192).equals(expected));
    });

    test('zero-copy I/O on allocBuffer memory bounces nothing', async () => {
      const before = dev.stats.bytesBounced;
      const buf = dev.allocBuffer(64 * 1024);
      buf.fill(0x3c);
      await dev.write(buf, 1024 * 1024);
      const into = dev.allocBuffer(64 * 1024);
      assert.equal(await dev.readInto(into, 1024 * 1024), 64 * 1024);
      assert.ok(into.equals(buf));
      assert.equal(dev.stats.bytesBounced, before);
      dev.freeBuffer(buf);
      dev.freeBuffer(into);
      assert.throws(() => dev.freeBuffer(into), { code: 'VHOST_USER_ERR_INVALID_ARGUMENT' });
    });

    test('large requests are split and pipelined', async () => {
      const rand = prng(7);
      const data = randomBytes(rand, 3 * 1024 * 1024 + 333);
      const before = dev.stats.requests;
      await dev.write(data, 4097);
      const got = await dev.read(4097, data.length);
      assert.ok(got.equals(data));
      assert.ok(dev.stats.requests - before >= 8, 'expected several requests per 3 MiB transfer');
    });

    test('bad ranges are RangeErrors before anything is sent', async () => {
      const before = dev.stats.requests;
      await assert.rejects(dev.read(-1, 10), RangeError);
      await assert.rejects(dev.read(1.5, 10), RangeError);
      await assert.rejects(dev.read(0, -3), RangeError);
      await assert.rejects(dev.read(SIZE - 10, 11), RangeError);
      await assert.rejects(dev.write(Buffer.alloc(2), SIZE - 1), RangeError);
      await assert.rejects(dev.discard(0, SIZE + 1), RangeError);
      await assert.rejects(dev.writeZeroes(Number.NaN, 1), RangeError);
      assert.throws(() => dev.readSync(Buffer.alloc(1), SIZE), RangeError);
      await assert.rejects(dev.write('abc' as unknown as Buffer, 0), {
        code: 'VHOST_USER_ERR_INVALID_ARGUMENT',
      });
      assert.equal(dev.stats.requests, before);
      // Zero-length I/O is valid and sends nothing, even at the very end of the device.
      assert.equal((await dev.read(SIZE, 0)).length, 0);
      assert.equal(await dev.write(Buffer.alloc(0), SIZE), 0);
      assert.equal(dev.readSync(Buffer.alloc(0), 5), 0);
      assert.equal(await dev.writeZeroes(100, 0), 0);
      assert.equal(dev.stats.requests, before);
      // Reading exactly up to the end is fine.
      assert.equal((await dev.read(SIZE - 10, 10)).length, 10);
    });

    test('sync API, also with async I/O in flight', async () => {
      const rand = prng(5);
      const data = randomBytes(rand, 10000);
      assert.equal(dev.writeSync(data, 777), 10000);
      const back = Buffer.alloc(10000);
      assert.equal(dev.readSync(back, 777), 10000);
      assert.ok(back.equals(data));
      dev.flushSync();
      assert.ok(fileBytes(qsd.imagePath, 777, 10000).equals(data));

      // Async requests in flight while a sync read-modify-write runs: both finish, nothing deadlocks.
      const asyncData = randomBytes(rand, 50 * 1000);
      const inflight = Array.from({ length: 50 }, (_, i) =>
        dev.write(asyncData.subarray(i * 1000, (i + 1) * 1000), 2 * 1024 * 1024 + i * 1000),
      );
      const syncData = randomBytes(rand, 333);
      dev.writeSync(syncData, 2 * 1024 * 1024 + 10 * 1000 + 500 + 100000);
      const check = Buffer.alloc(333);
      dev.readSync(check, 2 * 1024 * 1024 + 10 * 1000 + 500 + 100000);
      assert.ok(check.equals(syncData));
      await Promise.all(inflight);
      assert.ok((await dev.read(2 * 1024 * 1024, 50 * 1000)).equals(asyncData));
      assert.equal(dev.getIdSync(), await dev.getId());
    });
  });
}
