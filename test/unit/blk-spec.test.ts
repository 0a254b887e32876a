import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  VirtioBlkConfig,
  VirtioBlkDiscardWriteZeroes,
  VirtioBlkOutHdr,
  VirtioBlkFeature,
  VirtioBlkType,
} from '../../src/devices/blk/spec.js';
import { BLK_DRIVER_FEATURES } from '../../src/devices/blk/features.js';

test('virtio_blk_config field offsets (virtio spec 5.2.4)', () => {
  const offsets = Object.fromEntries(
    Object.entries(VirtioBlkConfig.fields).map(([name, f]) => [name, [f.offset, f.size]]),
  );
  assert.deepEqual(offsets, {
    capacity: [0, 8],
    sizeMax: [8, 4],
    segMax: [12, 4],
    cylinders: [16, 2],
    heads: [18, 1],
    sectors: [19, 1],
    blkSize: [20, 4],
    physicalBlockExp: [24, 1],
    alignmentOffset: [25, 1],
    minIoSize: [26, 2],
    optIoSize: [28, 4],
    writeback: [32, 1],
    numQueues: [34, 2],
    maxDiscardSectors: [36, 4],
    maxDiscardSeg: [40, 4],
    discardSectorAlignment: [44, 4],
    maxWriteZeroesSectors: [48, 4],
    maxWriteZeroesSeg: [52, 4],
    writeZeroesMayUnmap: [56, 1],
  });
  // GET_CONFIG asks for exactly this many bytes: qemu-storage-daemon refuses more than its struct.
  assert.equal(VirtioBlkConfig.size, 60);
});

test('a config space as qemu-storage-daemon sends it decodes', () => {
  const bytes = Buffer.alloc(60);
  bytes.writeBigUInt64LE(131072n, 0); // 64 MiB in sectors
  bytes.writeUInt32LE(0, 8);
  bytes.writeUInt32LE(126, 12);
  bytes.writeUInt32LE(512, 20);
  bytes.writeUInt16LE(1, 34);
  bytes.writeUInt32LE(0x3fffff, 36);
  const c = VirtioBlkConfig.decode(bytes);
  assert.equal(c.capacity, 131072n);
  assert.equal(c.segMax, 126);
  assert.equal(c.blkSize, 512);
  assert.equal(c.numQueues, 1);
  assert.equal(c.maxDiscardSectors, 0x3fffff);
});

test('request header and discard segment layouts', () => {
  assert.deepEqual(
    [
      ...VirtioBlkOutHdr.encode({
        type: VirtioBlkType.VIRTIO_BLK_T_OUT,
        ioprio: 0,
        sector: 0x0102030405n,
      }),
    ],
    [1, 0, 0, 0, 0, 0, 0, 0, 5, 4, 3, 2, 1, 0, 0, 0],
  );
  assert.deepEqual(
    [...VirtioBlkDiscardWriteZeroes.encode({ sector: 8n, numSectors: 16, flags: 1 })],
    [8, 0, 0, 0, 0, 0, 0, 0, 16, 0, 0, 0, 1, 0, 0, 0],
  );
});

test('the driver never negotiates NOTIFY_ON_EMPTY, LOG_ALL, ANY_LAYOUT or packed rings', () => {
  for (const n of [24, 26, 27, 34, 35])
    assert.equal(BLK_DRIVER_FEATURES & (1n << BigInt(n)), 0n, `bit ${n}`);
  // Every virtio-blk feature the issue names is implemented, hence negotiated when offered.
  for (const n of Object.values(VirtioBlkFeature).filter((b) => b <= 14)) {
    assert.notEqual(BLK_DRIVER_FEATURES & (1n << BigInt(n)), 0n, `blk bit ${n}`);
  }
});
