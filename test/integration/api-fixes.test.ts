/**
 * Fixes to the block API's streams and engine: write streams whose buffer size is not whole
 * blocks, stream range messages, when OutOfMemoryError is declared. Bytes that reach the disk
 * are checked in the backing file itself.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { openBlockDevice, OutOfMemoryError, OutOfRangeError } from '../../src/index.js';
import { startEmbedded } from '../helpers/embedded-backend.js';
import { fileBytes } from '../helpers/files.js';
import { prng, randomBytes, randomInt } from '../helpers/random.js';

const KiB = 1024;
const MiB = 1024 * KiB;

/** Chunks of random sizes (1..max bytes) adding up to `total`. */
function randomChunks(seed: number, total: number, max: number): Buffer[] {
  const rand = prng(seed);
  const chunks: Buffer[] = [];
  let left = total;
  while (left > 0) {
    const chunk = randomBytes(rand, Math.min(left, randomInt(rand, 1, max)));
    chunks.push(chunk);
    left -= chunk.length;
  }
  return chunks;
}

for (const highWaterMark of [6000, 1000]) {
  test(`a write stream with highWaterMark ${highWaterMark} (not whole 4 KiB blocks) read-modify-writes only its edges, even in little memory`, async () => {
    const backend = await startEmbedded({ fileSize: 4 * MiB, blockSize: 4096 });
    try {
      // 64 KiB (the least allowed): the stream's buffers may take all of it.
      const dev = await openBlockDevice(backend.socketPath, { memorySize: 64 * KiB });
      try {
        assert.equal(dev.blockSize, 4096);
        const start = 3 * 4096 + 100;
        const chunks = randomChunks(highWaterMark, 300 * KiB + 7, 9000);
        const data = Buffer.concat(chunks);
        // Sentinels on both sides: the edge read-modify-writes must leave them alone.
        await dev.write(Buffer.alloc(1, 0x5a), start - 1);
        await dev.write(Buffer.alloc(1, 0xa5), start + data.length);
        const before = dev.stats.readModifyWrites;
        const sink = dev.createWriteStream({ start, highWaterMark, depth: 16 });
        await pipeline(Readable.from(chunks), sink);
        const rmw = dev.stats.readModifyWrites - before;
        assert.ok(rmw <= 2, `${rmw} read-modify-writes for one sequential stream`);
        assert.equal(sink.bytesWritten, data.length);
        assert.ok(fileBytes(backend.imagePath, start, data.length).equals(data));
        assert.equal(fileBytes(backend.imagePath, start - 1, 1)[0], 0x5a);
        assert.equal(fileBytes(backend.imagePath, start + data.length, 1)[0], 0xa5);
        // The stream gave all its memory back.
        dev.freeBuffer(dev.allocBuffer(64 * KiB));
      } finally {
        await dev.close();
      }
    } finally {
      await backend.stop();
    }
  });
}

test('a stream starting past the end of the device says so, whether or not end is given', async () => {
  const backend = await startEmbedded({ fileSize: MiB });
  try {
    const dev = await openBlockDevice(backend.socketPath);
    try {
      const pastEnd = /past the end of the device \(1048576 bytes\)/;
      for (const options of [
        { start: MiB + 100 },
        { start: MiB + 100, end: MiB + 200 },
        { start: MiB - 10, end: MiB + 10 },
      ]) {
        const stream = dev.createReadStream(options);
        const [err] = (await once(stream, 'error')) as [Error];
        assert.ok(err instanceof OutOfRangeError, `${JSON.stringify(options)}: ${String(err)}`);
        assert.match(err.message, pastEnd);
      }
      // Starting at the end is an empty range, as for a file.
      const chunks: Buffer[] = [];
      for await (const chunk of dev.createReadStream({ start: MiB })) chunks.push(chunk as Buffer);
      assert.deepEqual(chunks, []);
      // Both given and end before start: that is what the message says.
      assert.throws(
        () => dev.createReadStream({ start: 10, end: 5 }),
        /end \(5\) is before start \(10\)/,
      );
      const sink = dev.createWriteStream({ start: MiB + 1 });
      const [err] = (await once(sink, 'error')) as [Error];
      assert.ok(err instanceof OutOfRangeError, String(err));
      assert.match(err.message, pastEnd);
    } finally {
      await dev.close();
    }
  } finally {
    await backend.stop();
  }
});

for (const completion of ['adaptive', 'event', 'poll'] as const) {
  test(`${completion}: a call waiting for shared memory is saved by a buffer freed once the call holding the rest returns; OutOfMemoryError when none is`, async () => {
    const backend = await startEmbedded({ fileSize: MiB });
    try {
      const dev = await openBlockDevice(backend.socketPath, { memorySize: 64 * KiB, completion });
      try {
        // All the shared memory is the application's: the zero-copy write needs no more, the
        // bounced one waits for what the first one's caller frees after its await.
        const source = dev.allocBuffer(16 * KiB).fill(0x11);
        const hold = dev.allocBuffer(48 * KiB);
        const first = dev.write(source, 0);
        const waiting = dev.write(Buffer.alloc(4096, 0x22), 64 * KiB, { timeout: 10_000 });
        const settled = waiting.then(
          (value) => ({ value }),
          (error: unknown) => ({ error }),
        );
        assert.equal(await first, 16 * KiB);
        dev.freeBuffer(source);
        assert.deepEqual(await settled, { value: 4096 });
        await dev.flush();
        assert.ok(fileBytes(backend.imagePath, 0, 16 * KiB).equals(Buffer.alloc(16 * KiB, 0x11)));
        assert.ok(fileBytes(backend.imagePath, 64 * KiB, 4096).equals(Buffer.alloc(4096, 0x22)));

        // Nothing freed: the waiting call fails (it does not wait for the timeout), alone.
        const again = dev.allocBuffer(16 * KiB).fill(0x33);
        const second = dev.write(again, 0);
        const starved = dev.write(Buffer.alloc(4096, 0x44), 128 * KiB, { timeout: 10_000 });
        const started = Date.now();
        assert.equal(await second, 16 * KiB);
        await assert.rejects(starved, OutOfMemoryError);
        assert.ok(Date.now() - started < 5000, 'waited for the timeout');
        // A blocking call has no later turn to wait for: at once.
        assert.throws(
          () => dev.writeSync(Buffer.alloc(4096), 0, { timeout: 10_000 }),
          OutOfMemoryError,
        );
        dev.freeBuffer(again);
        dev.freeBuffer(hold);
        assert.equal(await dev.write(Buffer.alloc(4096, 0x55), 128 * KiB), 4096);
        assert.ok(fileBytes(backend.imagePath, 128 * KiB, 4096).equals(Buffer.alloc(4096, 0x55)));
        assert.equal(dev.closed, false);
      } finally {
        await dev.close();
      }
    } finally {
      await backend.stop();
    }
  });
}

test('streams with more than 10 requests in flight give no MaxListenersExceededWarning', async () => {
  const backend = await startEmbedded({ fileSize: MiB });
  const warnings: Error[] = [];
  const onWarning = (warning: Error): void => {
    warnings.push(warning);
  };
  process.on('warning', onWarning);
  try {
    const dev = await openBlockDevice(backend.socketPath);
    try {
      const data = randomBytes(prng(11), 512 * KiB);
      await pipeline(
        Readable.from([data]),
        dev.createWriteStream({ highWaterMark: 4096, depth: 32 }),
      );
      const chunks: Buffer[] = [];
      for await (const chunk of dev.createReadStream({ highWaterMark: 4096, depth: 32 })) {
        chunks.push(chunk as Buffer);
      }
      assert.ok(Buffer.concat(chunks).subarray(0, data.length).equals(data));
      // Warnings are emitted on a later tick.
      await new Promise((resolve) => setImmediate(resolve));
      assert.deepEqual(
        warnings.filter((w) => w.name === 'MaxListenersExceededWarning').map((w) => w.message),
        [],
      );
    } finally {
      await dev.close();
    }
  } finally {
    process.off('warning', onWarning);
    await backend.stop();
  }
});

test('a write stream destroyed while a write() is getting its buffer gives that buffer back', async () => {
  // Completions held 200 ms, so the stream's buffers fill the shared memory while it writes;
  // every second request fails (EIO).
  const backend = await startEmbedded({
    fileSize: MiB,
    faults: { delayCompletionsMs: 200, ioErrorEvery: 2 },
  });
  try {
    const dev = await openBlockDevice(backend.socketPath, { memorySize: 64 * KiB });
    try {
      const allFree = async (): Promise<void> => {
        // Past the held completions: the device has given every request back.
        await new Promise((resolve) => setTimeout(resolve, 600));
        dev.freeBuffer(dev.allocBuffer(64 * KiB));
      };
      // Destroyed in the tick of a write(): its buffer comes after _destroy released the rest.
      const first = dev.createWriteStream({ highWaterMark: 16 * KiB });
      await new Promise((resolve) => setImmediate(resolve)); // constructed
      first.write(Buffer.alloc(100, 1));
      first.destroy();
      await allFree();
      // A write() waits for memory its writes in flight hold; one of them fails.
      const second = dev.createWriteStream({ highWaterMark: 16 * KiB, depth: 8 });
      const failed = once(second, 'error');
      second.write(Buffer.alloc(100 * KiB, 2));
      await new Promise((resolve) => setTimeout(resolve, 50));
      assert.throws(() => dev.allocBuffer(16 * KiB), OutOfMemoryError);
      await failed;
      await allFree();
    } finally {
      await dev.close();
    }
  } finally {
    await backend.stop();
  }
});
