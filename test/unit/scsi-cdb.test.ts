import { test } from 'node:test';
import assert from 'node:assert/strict';
import { OutOfRangeError } from '../../src/errors.js';
import {
  buildInquiry,
  buildModeSense10,
  buildModeSense6,
  buildReadCapacity10,
  buildReadCapacity16,
  buildReadWrite,
  buildReportLuns,
  buildSynchronizeCache,
  buildTestUnitReady,
  buildUnmap,
  buildWriteSame16,
  lbaRange,
  cdbLength,
  getBE,
  MAX_BLOCKS_10,
  MAX_BLOCKS_16,
  MAX_LBA_10,
  MODE_PAGE_ALL,
  MODE_PAGE_CACHING,
  parseCdb,
  putBE,
  SAI_READ_CAPACITY_16,
  ScsiOp,
  ScsiStatus,
  scsiOpName,
  scsiStatusName,
  type ParsedCdb,
} from '../../src/devices/scsi/cdb.js';

function hex(text: string): number[] {
  return text
    .trim()
    .split(/\s+/)
    .map((p) => parseInt(p, 16));
}

/** Builds into a buffer full of 0xaa at offset 3, checks nothing outside the CDB was touched. */
function build(fn: (out: Uint8Array, at: number) => number): number[] {
  const out = new Uint8Array(40).fill(0xaa);
  const length = fn(out, 3);
  assert.deepEqual([...out.subarray(0, 3)], [0xaa, 0xaa, 0xaa]);
  assert.ok(out.subarray(3 + length).every((b) => b === 0xaa));
  return [...out.subarray(3, 3 + length)];
}

function parsed(bytes: number[], fields: Partial<ParsedCdb>): void {
  const opcode = bytes[0]!;
  assert.deepEqual(parseCdb(Uint8Array.from(bytes)), {
    opcode,
    length: bytes.length,
    lba: 0,
    blocks: 0,
    allocationLength: 0,
    flags: bytes[1],
    page: 0,
    serviceAction: 0,
    ...fields,
  });
}

test('TEST UNIT READY', () => {
  const cdb = build((o, a) => buildTestUnitReady(o, a));
  assert.deepEqual(cdb, hex('00 00 00 00 00 00'));
  parsed(cdb, {});
});

test('INQUIRY, standard data', () => {
  const cdb = build((o, a) => buildInquiry(o, a, undefined, 36));
  assert.deepEqual(cdb, hex('12 00 00 00 24 00'));
  parsed(cdb, { allocationLength: 36 });
});

test('INQUIRY, VPD pages', () => {
  const cdb = build((o, a) => buildInquiry(o, a, 0x83, 0x200));
  assert.deepEqual(cdb, hex('12 01 83 02 00 00'));
  parsed(cdb, { page: 0x83, allocationLength: 0x200 });
  assert.deepEqual(
    build((o, a) => buildInquiry(o, a, 0x00, 0xff)),
    hex('12 01 00 00 ff 00'),
  );
  assert.deepEqual(
    build((o, a) => buildInquiry(o, a, 0xb0, 64)),
    hex('12 01 b0 00 40 00'),
  );
});

test('INQUIRY: an allocation length above 65535 asks for 65535, never wraps to 0', () => {
  assert.deepEqual(
    build((o, a) => buildInquiry(o, a, 0x83, 0x10000)),
    hex('12 01 83 ff ff 00'),
  );
});

test('READ CAPACITY(10)', () => {
  const cdb = build((o, a) => buildReadCapacity10(o, a));
  assert.deepEqual(cdb, hex('25 00 00 00 00 00 00 00 00 00'));
  parsed(cdb, {});
});

test('READ CAPACITY(16)', () => {
  const cdb = build((o, a) => buildReadCapacity16(o, a, 32));
  assert.deepEqual(cdb, hex('9e 10 00 00 00 00 00 00 00 00 00 00 00 20 00 00'));
  parsed(cdb, { serviceAction: SAI_READ_CAPACITY_16, allocationLength: 32 });
});

test('REPORT LUNS', () => {
  const cdb = build((o, a) => buildReportLuns(o, a, 0x1_0008));
  assert.deepEqual(cdb, hex('a0 00 00 00 00 00 00 01 00 08 00 00'));
  parsed(cdb, { allocationLength: 0x1_0008 });
});

test('SYNCHRONIZE CACHE(10), whole medium', () => {
  const cdb = build((o, a) => buildSynchronizeCache(o, a));
  assert.deepEqual(cdb, hex('35 00 00 00 00 00 00 00 00 00'));
  parsed(cdb, {});
});

test('UNMAP', () => {
  const cdb = build((o, a) => buildUnmap(o, a, 24));
  assert.deepEqual(cdb, hex('42 00 00 00 00 00 00 00 18 00'));
  parsed(cdb, { allocationLength: 24 });
  assert.deepEqual(
    build((o, a) => buildUnmap(o, a, 0xffff)),
    hex('42 00 00 00 00 00 00 ff ff 00'),
  );
  assert.throws(() => buildUnmap(new Uint8Array(10), 0, 0x1_0000), OutOfRangeError);
});

test('WRITE SAME(16) with and without UNMAP', () => {
  const unmap = build((o, a) => buildWriteSame16(o, a, lbaRange(0x1234_5678, 8), true));
  assert.deepEqual(unmap, hex('93 08 00 00 00 00 12 34 56 78 00 00 00 08 00 00'));
  parsed(unmap, { lba: 0x1234_5678, blocks: 8 });
  const plain = build((o, a) => buildWriteSame16(o, a, lbaRange(0x2_0000_0000, 0x10_0000), false));
  assert.deepEqual(plain, hex('93 00 00 00 00 02 00 00 00 00 00 10 00 00 00 00'));
  parsed(plain, { lba: 0x2_0000_0000, blocks: 0x10_0000 });
  assert.deepEqual(
    build((o, a) => buildWriteSame16(o, a, lbaRange(0x12_3456_789a_bcde, 1), false)),
    hex('93 00 00 12 34 56 78 9a bc de 00 00 00 01 00 00'),
  );
  assert.throws(
    () => buildWriteSame16(new Uint8Array(16), 0, lbaRange(0, MAX_BLOCKS_16 + 1), true),
    OutOfRangeError,
  );
});

test('MODE SENSE(6)', () => {
  const cdb = build((o, a) => buildModeSense6(o, a, MODE_PAGE_CACHING, 0xfc));
  assert.deepEqual(cdb, hex('1a 08 08 00 fc 00'));
  parsed(cdb, { page: MODE_PAGE_CACHING, allocationLength: 0xfc });
  // One byte of allocation length: clamped, never wrapped; PC bits masked out of the page.
  assert.deepEqual(
    build((o, a) => buildModeSense6(o, a, 0xff, 1000)),
    hex('1a 08 3f 00 ff 00'),
  );
});

test('MODE SENSE(10)', () => {
  const cdb = build((o, a) => buildModeSense10(o, a, MODE_PAGE_ALL, 0x1000));
  assert.deepEqual(cdb, hex('5a 08 3f 00 00 00 00 10 00 00'));
  parsed(cdb, { page: MODE_PAGE_ALL, allocationLength: 0x1000 });
  assert.deepEqual(
    build((o, a) => buildModeSense10(o, a, MODE_PAGE_CACHING, 0x2_0000)),
    hex('5a 08 08 00 00 00 00 ff ff 00'),
  );
});

test('READ(10) and WRITE(10)', () => {
  const read = build((o, a) => buildReadWrite(o, a, false, lbaRange(0x1234_5678, 0x80), false));
  assert.deepEqual(read, hex('28 00 12 34 56 78 00 00 80 00'));
  parsed(read, { lba: 0x1234_5678, blocks: 0x80 });
  const write = build((o, a) => buildReadWrite(o, a, true, lbaRange(0x1234_5678, 0x80), false));
  assert.deepEqual(write, hex('2a 00 12 34 56 78 00 00 80 00'));
  parsed(write, { lba: 0x1234_5678, blocks: 0x80 });
  // The largest transfer and the last LBA the 10-byte form holds.
  assert.deepEqual(
    build((o, a) => buildReadWrite(o, a, false, lbaRange(0, MAX_BLOCKS_10), false)),
    hex('28 00 00 00 00 00 00 ff ff 00'),
  );
  assert.deepEqual(
    build((o, a) => buildReadWrite(o, a, true, lbaRange(MAX_LBA_10, 1), false)),
    hex('2a 00 ff ff ff ff 00 00 01 00'),
  );
  // An LBA past 2^31, every byte distinct.
  assert.deepEqual(
    build((o, a) => buildReadWrite(o, a, false, lbaRange(0x89ab_cdef, 1), false)),
    hex('28 00 89 ab cd ef 00 00 01 00'),
  );
});

test('READ(16) and WRITE(16) when asked for', () => {
  const read = build((o, a) => buildReadWrite(o, a, false, lbaRange(0x1234_5678, 0x80), true));
  assert.deepEqual(read, hex('88 00 00 00 00 00 12 34 56 78 00 00 00 80 00 00'));
  parsed(read, { lba: 0x1234_5678, blocks: 0x80 });
  const write = build((o, a) => buildReadWrite(o, a, true, lbaRange(0x1234_5678, 0x80), true));
  assert.deepEqual(write, hex('8a 00 00 00 00 00 12 34 56 78 00 00 00 80 00 00'));
  parsed(write, { lba: 0x1234_5678, blocks: 0x80 });
});

test('no truncation: READ/WRITE switch to 16 bytes when a field does not fit, even with use16 = false', () => {
  const cases: [string, number, number, string][] = [
    // 65,536 blocks: the seed's READ(10) wrote 0x0000 here.
    ['blocks > 0xffff', 0, 0x1_0000, '88 00 00 00 00 00 00 00 00 00 00 01 00 00 00 00'],
    ['4 GiB of 512-byte blocks', 8, 0x80_0000, '88 00 00 00 00 00 00 00 00 08 00 80 00 00 00 00'],
    ['LBA > 0xffffffff', 0x1_0000_0000, 8, '88 00 00 00 00 01 00 00 00 00 00 00 00 08 00 00'],
    [
      'last block past 0xffffffff',
      MAX_LBA_10,
      2,
      '88 00 00 00 00 00 ff ff ff ff 00 00 00 02 00 00',
    ],
    ['0 blocks at LBA 2^32', 0x1_0000_0000, 0, '88 00 00 00 00 01 00 00 00 00 00 00 00 00 00 00'],
    ['LBA 2^53 - 1', Number.MAX_SAFE_INTEGER, 1, '88 00 00 1f ff ff ff ff ff ff 00 00 00 01 00 00'],
    // Every byte of the LBA distinct: a swapped or shifted byte shows.
    [
      'LBA bytes in order',
      0x12_3456_789a_bcde,
      1,
      '88 00 00 12 34 56 78 9a bc de 00 00 00 01 00 00',
    ],
    [
      'largest 16-byte transfer',
      0,
      MAX_BLOCKS_16,
      '88 00 00 00 00 00 00 00 00 00 ff ff ff ff 00 00',
    ],
  ];
  for (const [name, lba, blocks, bytes] of cases) {
    const cdb = build((o, a) => buildReadWrite(o, a, false, lbaRange(lba, blocks), false));
    assert.deepEqual(cdb, hex(bytes), name);
    parsed(cdb, { lba, blocks });
    const w = build((o, a) => buildReadWrite(o, a, true, lbaRange(lba, blocks), false));
    assert.equal(w[0], ScsiOp.WRITE_16, name);
  }
});

test('no truncation: a block count beyond the 16-byte field is refused', () => {
  assert.throws(
    () => buildReadWrite(new Uint8Array(16), 0, false, lbaRange(0, MAX_BLOCKS_16 + 1), false),
    OutOfRangeError,
  );
  assert.throws(
    () => buildReadWrite(new Uint8Array(16), 0, true, lbaRange(0, 2 ** 40), true),
    (e: unknown) => e instanceof RangeError && /blocks/.test((e as Error).message),
  );
});

test('parseCdb: READ(6)/WRITE(6)', () => {
  // 21-bit LBA (byte 1's top bits are reserved), transfer length 0 = 256 blocks.
  parsed(hex('08 ff ff ff 00 00'), { lba: 0x1f_ffff, blocks: 256 });
  parsed(hex('0a 00 12 34 08 00'), { lba: 0x1234, blocks: 8 });
});

test('parseCdb: VERIFY(10), WRITE SAME(10), SYNCHRONIZE CACHE(10)/(16) ranges', () => {
  parsed(hex('2f 00 00 00 10 00 00 00 20 00'), { lba: 0x1000, blocks: 0x20 });
  parsed(hex('41 08 00 00 00 40 00 00 08 00'), { lba: 0x40, blocks: 8 });
  parsed(hex('35 02 00 00 00 10 00 00 04 00'), { lba: 0x10, blocks: 4 });
  parsed(hex('91 00 00 00 00 01 00 00 00 00 00 00 01 00 00 00'), {
    lba: 0x1_0000_0000,
    blocks: 0x100,
  });
});

test('parseCdb: a CDB shorter than its group length yields only the opcode', () => {
  assert.deepEqual(parseCdb(Uint8Array.from(hex('28 00 00 00 10'))), {
    opcode: 0x28,
    length: 10,
    lba: 0,
    blocks: 0,
    allocationLength: 0,
    flags: 0,
    page: 0,
    serviceAction: 0,
  });
  assert.deepEqual(parseCdb(new Uint8Array(0)), {
    opcode: 0,
    length: 6,
    lba: 0,
    blocks: 0,
    allocationLength: 0,
    flags: 0,
    page: 0,
    serviceAction: 0,
  });
  // A CDB in a larger, zero-padded buffer (virtio-scsi's cdb[32]) parses the same.
  const padded = new Uint8Array(32);
  buildReadWrite(padded, 0, false, lbaRange(7, 9), false);
  assert.equal(parseCdb(padded).lba, 7);
  assert.equal(parseCdb(padded).blocks, 9);
});

test('cdbLength per group code', () => {
  const groups: [number, number][] = [
    [0x00, 6],
    [0x1f, 6],
    [0x20, 10],
    [0x28, 10],
    [0x3f, 10],
    [0x42, 10],
    [0x5a, 10],
    [0x60, 0],
    [0x7f, 0],
    [0x80, 16],
    [0x88, 16],
    [0x9e, 16],
    [0xa0, 12],
    [0xbf, 12],
    [0xc0, 0],
    [0xff, 0],
  ];
  for (const [opcode, length] of groups)
    assert.equal(cdbLength(opcode), length, opcode.toString(16));
  for (const [name, opcode] of Object.entries(ScsiOp)) assert.ok(cdbLength(opcode) > 0, name);
});

test('putBE/getBE up to 2^53 - 1', () => {
  const cases: [number, number, string][] = [
    [8, Number.MAX_SAFE_INTEGER, '00 1f ff ff ff ff ff ff'],
    [8, 2 ** 53 - 2, '00 1f ff ff ff ff ff fe'],
    [8, 2 ** 32, '00 00 00 01 00 00 00 00'],
    [8, 0, '00 00 00 00 00 00 00 00'],
    [7, Number.MAX_SAFE_INTEGER, '1f ff ff ff ff ff ff'],
    [4, 0xffff_ffff, 'ff ff ff ff'],
    [4, 0x0102_0304, '01 02 03 04'],
    [2, 0xffff, 'ff ff'],
    [1, 0x7f, '7f'],
  ];
  for (const [bytes, value, expected] of cases) {
    const out = new Uint8Array(bytes + 2).fill(0xee);
    putBE(out, 1, bytes, value);
    assert.deepEqual([...out.subarray(1, 1 + bytes)], hex(expected), `${value}`);
    assert.equal(out[0], 0xee);
    assert.equal(out[bytes + 1], 0xee);
    assert.equal(getBE(out, 1, bytes), value);
  }
  // 2^53 itself is exact in a double, too.
  assert.equal(getBE(Uint8Array.from(hex('00 20 00 00 00 00 00 00')), 0, 8), 2 ** 53);
});

test('names of opcodes and statuses', () => {
  assert.equal(scsiOpName(0x28), 'READ_10');
  assert.equal(scsiOpName(0x9e), 'SERVICE_ACTION_IN_16');
  assert.equal(scsiOpName(0xc1), 'opcode 0xc1');
  assert.equal(scsiStatusName(ScsiStatus.CHECK_CONDITION), 'CHECK_CONDITION');
  assert.equal(scsiStatusName(0x28), 'TASK_SET_FULL');
  assert.equal(scsiStatusName(0x22), 'status 0x22');
  // SAM-5 status codes.
  assert.deepEqual(
    { ...ScsiStatus },
    {
      ...ScsiStatus,
      GOOD: 0x00,
      CHECK_CONDITION: 0x02,
      CONDITION_MET: 0x04,
      BUSY: 0x08,
      RESERVATION_CONFLICT: 0x18,
      TASK_SET_FULL: 0x28,
      ACA_ACTIVE: 0x30,
      TASK_ABORTED: 0x40,
    },
  );
});
