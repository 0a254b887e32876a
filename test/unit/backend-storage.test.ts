import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { native } from '../../src/native.js';
import { FileStorage, RamStorage, type Storage } from '../../src/backend/storage.js';
import type { IoSegment } from '../../src/backend/device-queue.js';
import { prng, randomBytes } from '../helpers/random.js';

/** Segments over a page-aligned mapping at the given (offset, length) pairs. */
function segments(parts: [number, number][]): { segs: IoSegment[]; release(): void } {
  const fd = native.memfdCreate('storage-test', 0);
  native.ftruncate(fd, 1 << 20);
  const { handle, buffer } = native.mmap(fd, 1 << 20, 0, 'shared');
  native.close(fd);
  return {
    segs: parts.map(([addr, len]) => ({ buf: Buffer.from(buffer, addr, len), addr })),
    release: () => native.munmap(handle),
  };
}

function exercise(storage: Storage, fileBytes: () => Buffer): void {
  const rand = prng(21);
  // Misaligned memory (O_DIRECT must bounce), sector-aligned file offsets.
  const { segs, release } = segments([
    [3, 700],
    [5000, 324],
    [65536, 1024],
  ]);
  try {
    const data = randomBytes(rand, 2048);
    let at = 0;
    for (const s of segs) at += data.copy(s.buf, 0, at, at + s.buf.length);
    storage.write(segs, 4096 + 512);
    for (const s of segs) s.buf.fill(0);
    storage.read(segs, 4096 + 512);
    assert.ok(Buffer.concat(segs.map((s) => s.buf)).equals(data));
    assert.ok(
      fileBytes()
        .subarray(4608, 4608 + 2048)
        .equals(data),
    );
    storage.writeZeroes(4608 + 512, 1024);
    const expected = Buffer.from(data);
    expected.fill(0, 512, 1536);
    storage.read(segs, 4608);
    assert.ok(Buffer.concat(segs.map((s) => s.buf)).equals(expected));
    storage.flush();
  } finally {
    release();
  }
  // Aligned memory takes the direct path.
  const aligned = segments([[8192, 8192]]);
  try {
    aligned.segs[0]!.buf.fill(0x42);
    storage.write(aligned.segs, 1 << 16);
    aligned.segs[0]!.buf.fill(0);
    storage.read(aligned.segs, 1 << 16);
    assert.ok(aligned.segs[0]!.buf.every((b) => b === 0x42));
  } finally {
    aligned.release();
  }
}

test('file storage (O_DIRECT when the file system allows): vectored and bounced I/O', () => {
  const dir = mkdtempSync(join(tmpdir(), 'vhost-user-storage-'));
  const path = join(dir, 'disk.img');
  writeFileSync(path, Buffer.alloc(0));
  truncateSync(path, 1 << 20);
  const storage = FileStorage.open(path, false, undefined);
  try {
    assert.equal(storage.size, 1 << 20);
    exercise(storage, () => readFileSync(path));
  } finally {
    storage.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('file storage, buffered', () => {
  const dir = mkdtempSync(join(tmpdir(), 'vhost-user-storage-'));
  const path = join(dir, 'disk.img');
  writeFileSync(path, Buffer.alloc(1 << 20));
  const storage = FileStorage.open(path, false, false);
  try {
    assert.equal(storage.kind, 'buffered');
    exercise(storage, () => readFileSync(path));
  } finally {
    storage.close();
  }
  // direct: true insists, and a size no O_DIRECT alignment divides cannot have it.
  writeFileSync(path, Buffer.alloc(1000));
  assert.throws(() => FileStorage.open(path, false, true), { code: 'EINVAL' });
  rmSync(dir, { recursive: true, force: true });
});

test('RAM storage', () => {
  const storage = new RamStorage(1 << 20);
  const copy = Buffer.alloc(1 << 20);
  exercise(
    {
      ...storage,
      kind: storage.kind,
      size: storage.size,
      read: (s, p) => storage.read(s, p),
      write: (s, p) => {
        storage.write(s, p);
        let at = p;
        for (const x of s) at += x.buf.copy(copy, at);
      },
      writeZeroes: (p, n) => {
        storage.writeZeroes(p, n);
        copy.fill(0, p, p + n);
      },
      flush: () => storage.flush(),
      close: () => storage.close(),
    },
    () => copy,
  );
});
