/**
 * Sealing: the frontend fixes the size of its memfds (so it cannot shrink them under a backend's
 * mapping by mistake), and the backend refuses a sealable memfd that is not sealed.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { openSync, rmSync } from 'node:fs';
import { native } from '../../src/native.js';
import { SharedRegion } from '../../src/memory/region.js';
import {
  BackendMemory,
  F_SEAL_GROW,
  F_SEAL_SEAL,
  F_SEAL_SHRINK,
  MemoryTableError,
} from '../../src/backend/guest-memory.js';

const MEM = 1 << 20;
const table = [
  {
    guestPhysAddr: 0x1000_0000n,
    memorySize: BigInt(MEM),
    userspaceAddr: 0x7e00_0000_0000n,
    mmapOffset: 0n,
  },
];

function memfd(seal: boolean): number {
  const fd = native.memfdCreate('guest-memory-test', 0);
  native.ftruncate(fd, MEM);
  if (seal) native.memfdSeal(fd);
  return fd;
}

test("our frontend's regions are sealed: truncating or growing them fails with EPERM", () => {
  for (const view of ['plain', 'shared'] as const) {
    const region = SharedRegion.create({ name: 'seal-test', size: MEM, hugepages: false, view });
    try {
      assert.equal(native.memfdSeals(region.fd), F_SEAL_SHRINK | F_SEAL_GROW);
      assert.throws(() => native.ftruncate(region.fd, 4096), { code: 'EPERM' });
      assert.throws(() => native.ftruncate(region.fd, 2 * MEM), { code: 'EPERM' });
      assert.equal(native.fstatSize(region.fd), MEM);
    } finally {
      region.close();
    }
  }
});

test('memfdSeals / memfdSeal: seal bits, -1 without seal support, argument and errno errors', () => {
  const fd = memfd(false);
  try {
    assert.equal(native.memfdSeals(fd), 0, 'MFD_ALLOW_SEALING, nothing sealed yet');
    native.memfdSeal(fd);
    assert.equal(native.memfdSeals(fd), F_SEAL_SHRINK | F_SEAL_GROW);
    native.memfdSeal(fd); // adding the same seals again is fine
  } finally {
    native.close(fd);
  }
  const efd = native.eventfd();
  try {
    assert.equal(native.memfdSeals(efd), -1);
    assert.throws(() => native.memfdSeal(efd), { code: 'EINVAL', syscall: 'fcntl' });
  } finally {
    native.close(efd);
  }
  assert.throws(() => native.memfdSeals(1_000_000), { code: 'EBADF', syscall: 'fcntl' });
  const raw = native as unknown as Record<string, (...args: unknown[]) => unknown>;
  assert.throws(() => raw.memfdSeal!(), { name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE' });
  assert.throws(() => raw.memfdSeals!('3'), { name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE' });
  assert.throws(() => raw.memfdSeals!(-1), { name: 'RangeError', code: 'ERR_INVALID_ARG_VALUE' });
  assert.throws(() => raw.memfdSeal!(1.5), { name: 'RangeError', code: 'ERR_INVALID_ARG_VALUE' });
});

test('BackendMemory.map refuses a sealable memfd without F_SEAL_SHRINK and takes a sealed one', () => {
  const unsealed = memfd(false);
  assert.throws(
    () => BackendMemory.map(table, [unsealed]),
    (err: Error) => {
      assert.ok(err instanceof MemoryTableError);
      assert.match(err.message, /region 0: .*F_SEAL_SHRINK/);
      return true;
    },
  );
  // map() closed the fd either way.
  assert.throws(() => native.fstatSize(unsealed), { code: 'EBADF' });

  const memory = BackendMemory.map(table, [memfd(true)]);
  assert.equal(memory.regions.length, 1);
  memory.close();

  // A file that can never be sealed (tmpfs and hugetlbfs files, memfds without
  // MFD_ALLOW_SEALING all report F_SEAL_SEAL): accepted, with the risk documented in map().
  const path = `/dev/shm/vhost-user-seal-test-${process.pid}`;
  const shm = openSync(path, 'w+');
  try {
    native.ftruncate(shm, MEM);
    assert.equal(native.memfdSeals(shm), F_SEAL_SEAL);
    BackendMemory.map(table, [shm]).close();
  } finally {
    rmSync(path, { force: true });
  }
});
