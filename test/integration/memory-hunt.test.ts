/**
 * Shared memory through the public API: allocBuffer / freeBuffer under odd arguments and misuse,
 * bounce buffers in fragmented or exhausted memory (waiting, failing typed, recovering), and
 * fds, memfd mappings and /dev/shm across many open / close cycles. Peer: qemu-storage-daemon;
 * bytes that reach the disk are checked in its backing file.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import {
  DeviceClosedError,
  InvalidArgumentError,
  openBlockDevice,
  openDevice,
  OutOfMemoryError,
  type BlockDevice,
} from '../../src/index.js';
import { startQsd } from '../helpers/qsd.js';
import { startEmbedded } from '../helpers/embedded-backend.js';
import { fileBytes } from '../helpers/files.js';
import { prng, randomBytes } from '../helpers/random.js';
import { memfdMappings, openFds } from '../helpers/process-resources.js';

const KiB = 1024;
const MiB = 1024 * KiB;

/** How a promise settled, without an unhandled rejection meanwhile. */
function outcome<T>(promise: Promise<T>): Promise<{ value?: T; error?: unknown }> {
  return promise.then(
    (value) => ({ value }),
    (error: unknown) => ({ error }),
  );
}

/** Byte ranges of the data region that buffers from allocBuffer cover, checked for overlap. */
function assertDisjoint(buffers: Buffer[]): void {
  const ranges = buffers.map((b) => [b.byteOffset, b.byteOffset + b.length] as const);
  ranges.sort((x, y) => x[0] - y[0]);
  for (let i = 1; i < ranges.length; i++) {
    assert.ok(ranges[i]![0] >= ranges[i - 1]![1], `buffers overlap at ${ranges[i]![0]}`);
  }
}

async function withDevice(
  options: Parameters<typeof openBlockDevice>[1],
  body: (dev: BlockDevice, imagePath: string) => Promise<void>,
): Promise<void> {
  const qsd = await startQsd({ size: 4 * MiB });
  try {
    const dev = await openBlockDevice(qsd.socketPath, options);
    try {
      await body(dev, qsd.imagePath);
    } finally {
      await dev.close();
    }
  } finally {
    await qsd.stop();
  }
}

test('allocBuffer: bad sizes are InvalidArgumentError, all of memorySize fits once, one byte more is OutOfMemoryError', async () => {
  await withDevice({ memorySize: 64 * KiB }, async (dev) => {
    for (const bad of [0, -1, 1.5, NaN, Infinity, 2 ** 53, '4096', undefined]) {
      assert.throws(() => dev.allocBuffer(bad as number), InvalidArgumentError, String(bad));
    }
    // Bounce buffers parked for reuse are the application's to take.
    await dev.write(Buffer.alloc(16 * KiB, 1), 0);
    const all = dev.allocBuffer(64 * KiB);
    assert.equal(all.length, 64 * KiB);
    assert.throws(() => dev.allocBuffer(1), OutOfMemoryError);
    dev.freeBuffer(all);
    assert.throws(() => dev.allocBuffer(64 * KiB + 1), OutOfMemoryError);
    dev.freeBuffer(dev.allocBuffer(64 * KiB));
  });
});

test('allocBuffer of odd sizes: exact lengths, disjoint memory, zero-copy I/O that touches only its own bytes', async () => {
  await withDevice({ memorySize: 256 * KiB }, async (dev, imagePath) => {
    const rand = prng(11);
    const sizes = [1, 4095, 4096, 4097, 12345, 512, 3];
    const buffers = sizes.map((size) => dev.allocBuffer(size));
    assert.deepEqual(
      buffers.map((b) => b.length),
      sizes,
    );
    assertDisjoint(buffers);
    const contents = buffers.map((b) => {
      const bytes = randomBytes(rand, b.length);
      bytes.copy(b);
      return bytes;
    });
    let position = 0;
    for (const b of buffers) {
      await dev.write(b, position + 7);
      position += 64 * KiB;
    }
    position = 0;
    for (const [i, b] of buffers.entries()) {
      assert.ok(
        fileBytes(imagePath, position + 7, b.length).equals(contents[i]!),
        `size ${b.length}`,
      );
      b.fill(0);
      assert.equal(await dev.readInto(b, position + 7), b.length);
      assert.ok(b.equals(contents[i]!), `read back, size ${b.length}`);
      position += 64 * KiB;
    }
    for (const b of buffers) dev.freeBuffer(b);
  });
});

test('freeBuffer takes only what allocBuffer returned: not a view at another offset or of another length, not twice', async () => {
  await withDevice({ memorySize: 64 * KiB }, async (dev) => {
    const first = dev.allocBuffer(4096);
    const second = dev.allocBuffer(4096);
    assert.equal(second.byteOffset, first.byteOffset + 4096);
    second.fill(0x77);
    // An empty view at the end of the first buffer starts where the second one does.
    assert.throws(() => dev.freeBuffer(first.subarray(4096)), InvalidArgumentError);
    assert.throws(() => dev.freeBuffer(first.subarray(100)), InvalidArgumentError);
    assert.throws(() => dev.freeBuffer(Buffer.alloc(4096)), InvalidArgumentError);
    // The second buffer is still the application's: nothing else is handed its memory.
    const more = Array.from({ length: 14 }, () => dev.allocBuffer(4096));
    assert.throws(() => dev.allocBuffer(4096), OutOfMemoryError);
    await dev.write(Buffer.alloc(4096, 0x11), 0).catch(() => undefined);
    assert.ok(second.equals(Buffer.alloc(4096, 0x77)), 'the second buffer was handed out again');
    dev.freeBuffer(first);
    assert.throws(() => dev.freeBuffer(first), InvalidArgumentError);
    dev.freeBuffer(second);
    for (const b of more) dev.freeBuffer(b);
  });
});

test('fragmented memory: bounced reads and writes, async and blocking, shrink to the pieces left instead of waiting or failing', async () => {
  await withDevice({ memorySize: 64 * KiB }, async (dev, imagePath) => {
    // Every other 4 KiB block held: 32 KiB free, 4 KiB at most in one piece.
    const blocks = Array.from({ length: 16 }, () => dev.allocBuffer(4096));
    for (let i = 0; i < blocks.length; i += 2) dev.freeBuffer(blocks[i]!);
    const held = blocks.filter((_, i) => i % 2 === 1);
    const data = randomBytes(prng(5), 100 * KiB + 3);
    assert.equal(await dev.write(data, 4096 + 5), data.length);
    assert.ok(fileBytes(imagePath, 4096 + 5, data.length).equals(data));
    assert.ok((await dev.read(4096 + 5, data.length)).equals(data));
    const other = randomBytes(prng(6), 50 * KiB);
    assert.equal(dev.writeSync(other, MiB + 1), other.length);
    const back = Buffer.alloc(other.length);
    assert.equal(dev.readSync(back, MiB + 1), back.length);
    assert.ok(back.equals(other));
    // Many at once, unaligned among them: all fit through the 4 KiB pieces in turn.
    const rand = prng(7);
    const writes = Array.from({ length: 24 }, (_, i) => {
      const bytes = randomBytes(rand, 5000 + i);
      return { position: 2 * MiB + i * 8192 + (i % 3), bytes };
    });
    await Promise.all(writes.map((w) => dev.write(w.bytes, w.position)));
    for (const w of writes) {
      assert.ok(fileBytes(imagePath, w.position, w.bytes.length).equals(w.bytes));
    }
    for (const b of held) dev.freeBuffer(b);
    // No bounce buffer was lost on the way.
    dev.freeBuffer(dev.allocBuffer(64 * KiB));
  });
});

test('memory the application holds in full: bounced calls fail typed, give back what they took, and work once it is freed', async () => {
  await withDevice({ memorySize: 64 * KiB }, async (dev, imagePath) => {
    // 4 KiB left: an unaligned write across two blocks needs two edge blocks, and gets one.
    const hog = dev.allocBuffer(60 * KiB);
    const across = Buffer.alloc(100, 0x42);
    const settled = await outcome(dev.write(across, 4096 - 50));
    assert.ok(settled.error instanceof OutOfMemoryError, String(settled.error));
    assert.throws(() => dev.writeSync(across, 4096 - 50), OutOfMemoryError);
    // The edge it did get is free again.
    dev.freeBuffer(dev.allocBuffer(4096));
    const all = dev.allocBuffer(4096);
    // (A whole-block writeZeroes is WRITE_ZEROES here, with no data: this one has an edge.)
    for (const call of [
      (): Promise<unknown> => dev.read(0, 10),
      () => dev.write(Buffer.alloc(10), 0),
      () => dev.writeZeroes(1, 4096),
    ]) {
      const result = await outcome(call());
      assert.ok(result.error instanceof OutOfMemoryError, String(result.error));
    }
    assert.throws(() => dev.readSync(Buffer.alloc(10), 0), OutOfMemoryError);
    dev.freeBuffer(all);
    dev.freeBuffer(hog);
    assert.equal(await dev.write(across, 4096 - 50), across.length);
    assert.ok(fileBytes(imagePath, 4096 - 50, 100).equals(across));
    dev.freeBuffer(dev.allocBuffer(64 * KiB));
  });
});

test('a buffer from one device used on another is bounced there, and only its own device frees it', async () => {
  const qsd = await startQsd({ size: MiB });
  const qsd2 = await startQsd({ size: MiB });
  try {
    const one = await openBlockDevice(qsd.socketPath, { memorySize: 64 * KiB });
    const two = await openBlockDevice(qsd2.socketPath, { memorySize: 64 * KiB });
    try {
      const shared = one.allocBuffer(8192);
      randomBytes(prng(9), 8192).copy(shared);
      const copy = Buffer.from(shared);
      const before = two.stats.bytesBounced;
      await two.write(shared.subarray(1000, 5000), 3);
      assert.ok(two.stats.bytesBounced > before, 'bounced on the other device');
      assert.ok(fileBytes(qsd2.imagePath, 3, 4000).equals(copy.subarray(1000, 5000)));
      await two.readInto(shared.subarray(0, 4096), 0);
      assert.ok(shared.subarray(0, 4096).equals(fileBytes(qsd2.imagePath, 0, 4096)));
      assert.throws(() => two.freeBuffer(shared), InvalidArgumentError);
      one.freeBuffer(shared);
    } finally {
      await one.close();
      await two.close();
    }
  } finally {
    await qsd.stop();
    await qsd2.stop();
  }
});

function shmFiles(): string[] {
  return readdirSync('/dev/shm').sort();
}

test('200 open / close cycles, with buffers outstanding and bounced I/O: no fd, mapping or /dev/shm file left', async () => {
  const qsd = await startQsd({ size: MiB });
  try {
    const gc = (globalThis as { gc?: () => void }).gc;
    assert.ok(gc, 'run with --expose-gc');
    // One cycle first: whatever Node opens once (libuv, the addon) is not a leak.
    await (await openBlockDevice(qsd.socketPath, { memorySize: 64 * KiB })).close();
    gc();
    const fds = openFds();
    const mappings = memfdMappings();
    const shm = shmFiles();
    for (let i = 0; i < 200; i++) {
      const dev = await openBlockDevice(qsd.socketPath, { memorySize: 64 * KiB + 4096 * (i % 3) });
      const buf = dev.allocBuffer(1 + (i % 5000));
      await dev.write(Buffer.alloc(100, i), i * 100);
      await dev.readInto(buf, 0);
      await dev.close();
      assert.equal(buf.length, 0, 'allocBuffer memory is empty after close');
      dev.freeBuffer(buf); // after close: nothing to do, no error
      assert.throws(() => dev.allocBuffer(10), DeviceClosedError);
    }
    gc();
    assert.equal(openFds(), fds);
    assert.equal(memfdMappings(), mappings);
    assert.deepEqual(shmFiles(), shm);
  } finally {
    await qsd.stop();
  }
});

test('virtio-scsi: the block of zeroes it keeps leaves the rest of the memory in one piece', async () => {
  const backend = await startEmbedded({ type: 'scsi', fileSize: MiB });
  try {
    const dev = await openDevice(backend.socketPath, { type: 'scsi', memorySize: 64 * KiB });
    try {
      assert.equal(dev.info.type, 'virtio-scsi');
      // The zero block (WRITE SAME's data) takes one 4 KiB granule, for good; identification's
      // bounce buffers are gone by then, so it does not split what is left.
      const rest = dev.allocBuffer(60 * KiB);
      assert.throws(() => dev.allocBuffer(1), OutOfMemoryError);
      dev.freeBuffer(rest);
      await dev.writeZeroes(0, 8192);
      dev.freeBuffer(dev.allocBuffer(60 * KiB));
    } finally {
      await dev.close();
    }
  } finally {
    await backend.stop();
  }
});

test('virtio-scsi: a command whose data cannot fit in the memory fails with OutOfMemoryError that counts the free memory right', async () => {
  const backend = await startEmbedded({ type: 'scsi', fileSize: MiB });
  try {
    const dev = await openDevice(backend.socketPath, { type: 'scsi', memorySize: 64 * KiB });
    try {
      // READ(10) of 256 blocks: 128 KiB of data-in, which a command cannot split.
      const cdb = Uint8Array.of(0x28, 0, 0, 0, 0, 0, 0, 1, 0, 0);
      const free = /\(61440 bytes free in one piece\)/;
      const settled = await outcome(dev.scsiCommand(cdb, { dataIn: 128 * KiB }));
      assert.ok(settled.error instanceof OutOfMemoryError, String(settled.error));
      assert.match(settled.error.message, free);
      assert.throws(() => dev.scsiCommandSync(cdb, { dataIn: 128 * KiB }), free);
      const fits = await dev.scsiCommand(Uint8Array.of(0x28, 0, 0, 0, 0, 0, 0, 0, 100, 0), {
        dataIn: 100 * 512,
      });
      assert.equal(fits.data.length, 100 * 512);
    } finally {
      await dev.close();
    }
  } finally {
    await backend.stop();
  }
});
