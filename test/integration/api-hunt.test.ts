/**
 * The public data path under a caller's or a peer's unusual input: buffers that lose their
 * memory, misuse of allocBuffer / freeBuffer, calls racing close(), odd ranges. Bytes that reach
 * the disk are checked in the backing file itself. Peers: qemu-storage-daemon (the reference)
 * and the embedded backend (in a child process) where completions must be held back.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import {
  InvalidArgumentError,
  openBlockDevice,
  openDevice,
  UnsupportedError,
  type BlockDevice,
} from '../../src/index.js';
import { startQsd } from '../helpers/qsd.js';
import { startEmbedded } from '../helpers/embedded-backend.js';
import { fileBytes } from '../helpers/files.js';
import { prng, randomBytes, randomInt } from '../helpers/random.js';

const MiB = 1024 * 1024;

/** How a promise settled, without an unhandled rejection meanwhile. */
function outcome<T>(promise: Promise<T>): Promise<{ value?: T; error?: unknown }> {
  return promise.then(
    (value) => ({ value }),
    (error: unknown) => ({ error }),
  );
}

test("a call whose buffer is another device's allocBuffer memory, released by that device's close, fails alone with InvalidArgumentError", async () => {
  const qsd = await startQsd({ size: MiB });
  // Every completion held 1 s: the other device closes while the calls are pending.
  const slow = await startEmbedded({ fileSize: MiB, faults: { delayCompletionsMs: 1000 } });
  try {
    const other = await openBlockDevice(qsd.socketPath);
    const dev = await openBlockDevice(slow.socketPath, { memorySize: MiB });
    const errors: Error[] = [];
    dev.on('error', (err) => errors.push(err));
    const source = other.allocBuffer(4096).fill(0xab);
    const aligned = other.allocBuffer(4096).fill(0xcd);
    const dest = other.allocBuffer(1000);
    // Read-modify-write: the source is merged when the edge reads come back.
    const unalignedWrite = outcome(dev.write(source, 100));
    // Waits for the write above's block range, then copies its source into a bounce buffer.
    const alignedWrite = outcome(dev.write(aligned, 0));
    // Copied out of its bounce buffer on completion.
    const read = outcome(dev.readInto(dest, 200 * 1024 + 7));
    await other.close();
    assert.equal(source.length, 0, 'the other device detached its buffers');
    for (const [name, settled] of [
      ['unaligned write', await unalignedWrite],
      ['aligned write', await alignedWrite],
      ['read', await read],
    ] as const) {
      assert.ok(settled.error instanceof InvalidArgumentError, `${name}: ${String(settled.error)}`);
    }
    assert.deepEqual(errors, []);
    assert.equal(dev.closed, false);
    // Nothing of theirs reached the disk; the device still works and lost no memory.
    assert.ok(fileBytes(slow.imagePath, 0, 8192).equals(Buffer.alloc(8192)));
    const whole = dev.allocBuffer(MiB);
    dev.freeBuffer(whole);
    assert.equal(await dev.write(Buffer.alloc(10, 7), 5), 10);
    assert.ok(
      (await dev.read(0, 20)).equals(
        Buffer.from([0, 0, 0, 0, 0, ...Array(10).fill(7), 0, 0, 0, 0, 0]),
      ),
    );
    await dev.close();
  } finally {
    await qsd.stop();
    await slow.stop();
  }
});

test('freeBuffer() while a pending call still uses the buffer: its memory is reused only once the call is done', async () => {
  // Every completion held 300 ms, so the buffers are freed and their memory asked for again
  // while the calls still need them.
  const slow = await startEmbedded({ fileSize: MiB, faults: { delayCompletionsMs: 300 } });
  try {
    const dev = await openBlockDevice(slow.socketPath, { memorySize: MiB });
    // Read-modify-write: the edges are merged from `source` after their reads, the middle blocks
    // written straight from it.
    const source = dev.allocBuffer(8192).fill(0xab);
    const write = dev.write(source, 100);
    dev.freeBuffer(source);
    const reused = dev.allocBuffer(8192).fill(0xee);
    // An unaligned read into shared memory goes through a bounce buffer, copied out at the end.
    const dest = dev.allocBuffer(4096);
    const read = dev.readInto(dest, 300 * 1024 + 1);
    dev.freeBuffer(dest);
    const after = dev.allocBuffer(4096).fill(0x11);
    assert.equal(await write, 8192);
    assert.equal(await read, 4096);
    assert.ok(fileBytes(slow.imagePath, 100, 8192).equals(Buffer.alloc(8192, 0xab)));
    assert.ok(reused.equals(Buffer.alloc(8192, 0xee)), 'a buffer allocated later was written into');
    assert.ok(after.equals(Buffer.alloc(4096, 0x11)), 'a buffer allocated later was read into');
    // The freed buffers were released in the end: all the memory is free again.
    dev.freeBuffer(reused);
    dev.freeBuffer(after);
    dev.freeBuffer(dev.allocBuffer(MiB));
    await dev.close();
  } finally {
    await slow.stop();
  }
});

test('hundreds of overlapping unaligned writes at once, blocking ones among them: the disk ends as their serial order', async () => {
  const qsd = await startQsd({ size: MiB });
  try {
    const dev = await openBlockDevice(qsd.socketPath, { queueSize: 16, memorySize: MiB });
    const rand = prng(77);
    const REGION = 8192;
    const model = Buffer.alloc(MiB);
    const pending: Promise<unknown>[] = [];
    for (let i = 0; i < 400; i++) {
      // Odd lengths: every write is a read-modify-write of the blocks it shares with others.
      const length = randomInt(rand, 0, 700) * 2 + 1;
      const position = randomInt(rand, 0, REGION - length);
      const data = Buffer.alloc(length, (i % 250) + 1);
      data.copy(model, position);
      if (i % 50 === 49) {
        // A blocking write waits for the async ones queued before it on its blocks.
        assert.equal(dev.writeSync(data, position), length);
      } else if (i % 7 === 0 && length < 4000) {
        // From shared memory at an odd byte offset.
        const buffer = dev.allocBuffer(length + 1);
        data.copy(buffer, 1);
        pending.push(dev.write(buffer.subarray(1), position).finally(() => dev.freeBuffer(buffer)));
      } else {
        pending.push(dev.write(data, position));
      }
      if (i % 3 === 0) pending.push(dev.read(randomInt(rand, 0, REGION - 600), 599));
    }
    await Promise.all(pending);
    assert.ok((await dev.read(0, REGION)).equals(model.subarray(0, REGION)));
    await dev.flush();
    assert.ok(fileBytes(qsd.imagePath, 0, REGION).equals(model.subarray(0, REGION)));
    await dev.close();
  } finally {
    await qsd.stop();
  }
});

test('null options are no options (as for close()), not a TypeError: open, streams, scsiCommand', async () => {
  const qsd = await startQsd({ size: MiB, contents: Buffer.alloc(MiB, 0x5a) });
  try {
    const nothing = null as unknown as undefined;
    await assert.rejects(
      openDevice(qsd.socketPath, { type: 'nvme' as 'blk' }),
      InvalidArgumentError,
    );
    let opening: Promise<BlockDevice> | undefined;
    assert.doesNotThrow(() => {
      opening = openDevice(qsd.socketPath, nothing);
    });
    const dev = await opening!;
    try {
      const chunks: Buffer[] = [];
      for await (const chunk of dev.createReadStream(nothing)) chunks.push(chunk as Buffer);
      assert.ok(Buffer.concat(chunks).equals(Buffer.alloc(MiB, 0x5a)));
      const ws = dev.createWriteStream(nothing);
      ws.end(Buffer.from('hello'));
      await once(ws, 'finish');
      assert.ok((await dev.read(0, 6)).equals(Buffer.from('hello\x5a')));
      // A virtio-blk device takes no SCSI command: the typed error, whatever the options.
      await assert.rejects(dev.scsiCommand(Uint8Array.of(0), nothing), UnsupportedError);
      assert.throws(() => dev.scsiCommandSync(Uint8Array.of(0), nothing), UnsupportedError);
    } finally {
      await dev.close();
    }
    const again = await openBlockDevice(qsd.socketPath, nothing);
    await again.close();
  } finally {
    await qsd.stop();
  }
});

test('a write stream whose buffers would fill the shared memory waits for its own, not OutOfMemoryError', async () => {
  const qsd = await startQsd({ size: 8 * MiB });
  try {
    // The default stream (512 KiB buffers, 4 in flight) wants twice this memory.
    const dev = await openBlockDevice(qsd.socketPath, { memorySize: MiB });
    try {
      const data = randomBytes(prng(3), 3 * MiB + 1000);
      await pipeline(Readable.from([data]), dev.createWriteStream({ start: 0 }));
      assert.ok(fileBytes(qsd.imagePath, 0, data.length).equals(data));
      // Buffers smaller than a block at an unaligned start, more in flight than memory holds.
      const small = randomBytes(prng(4), 100_000);
      await pipeline(
        Readable.from([small]),
        dev.createWriteStream({ start: 5 * MiB + 3, highWaterMark: 300 * 1024, depth: 16 }),
      );
      assert.ok(fileBytes(qsd.imagePath, 5 * MiB + 3, small.length).equals(small));
      // The stream gave all its memory back.
      dev.freeBuffer(dev.allocBuffer(MiB));
    } finally {
      await dev.close();
    }
  } finally {
    await qsd.stop();
  }
});
