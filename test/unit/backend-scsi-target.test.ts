/**
 * The embedded backend's SCSI target, driven directly (no virtio, no socket) over a RAM disk:
 * every command it answers, with the bytes decoded by the frontend's own decoders, and the sense
 * data for every error it reports.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ScsiTarget, naaLocallyAssigned, type ScsiCommand } from '../../src/backend/scsi-target.js';
import { RamStorage, type Storage } from '../../src/backend/storage.js';
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
  putBE,
  ScsiOp,
  ScsiStatus,
} from '../../src/devices/scsi/cdb.js';
import {
  decodeBlockLimits,
  decodeDeviceIdentification,
  decodeModeSense,
  decodeProvisioning,
  decodeReadCapacity10,
  decodeReadCapacity16,
  decodeReportLuns,
  decodeStandardInquiry,
  decodeSupportedPages,
  decodeUnitSerialNumber,
  DesignatorType,
  CODE_SET_ASCII,
  CODE_SET_BINARY,
  READ_CAPACITY_10_OVERFLOW,
  STANDARD_INQUIRY_BYTES,
  encodeUnmapParameters,
} from '../../src/devices/scsi/data.js';
import { decodeSense, SenseKey } from '../../src/devices/scsi/sense.js';

const BS = 512;
const SIZE = 1024 * 1024;
const BLOCKS = SIZE / BS;
const LUN = 2;
const SERIAL = Buffer.from('unit-serial-1');

interface Rig {
  target: ScsiTarget;
  storage: Storage;
  /** Bytes of the RAM disk, for independent checks. */
  disk(at: number, length: number): Buffer;
  counts: { reads: number; writes: number; zeroes: number; flushes: number };
}

function rig(
  opts: { readOnly?: boolean; hideWriteProtect?: boolean; maxTransfer?: number } = {},
): Rig {
  const ram = new RamStorage(SIZE);
  const counts = { reads: 0, writes: 0, zeroes: 0, flushes: 0 };
  // A spy in front of the RAM disk: faulted commands must not reach it.
  const storage: Storage = {
    size: ram.size,
    kind: 'ram',
    read: (s, p) => {
      counts.reads++;
      ram.read(s, p);
    },
    write: (s, p) => {
      counts.writes++;
      ram.write(s, p);
    },
    writeZeroes: (p, l) => {
      counts.zeroes++;
      ram.writeZeroes(p, l);
    },
    flush: () => {
      counts.flushes++;
    },
    close: () => {},
  };
  const target = new ScsiTarget({
    storage,
    capacity: SIZE,
    blockSize: BS,
    readOnly: opts.readOnly ?? false,
    hideWriteProtect: opts.hideWriteProtect,
    serial: SERIAL,
    lun: LUN,
    maxTransferBytes: opts.maxTransfer ?? 0xffff * 512,
  });
  return {
    target,
    storage,
    counts,
    disk: (at, length) => {
      const out = Buffer.alloc(length);
      ram.read([{ buf: out, addr: 0 }], at);
      return out;
    },
  };
}

function cdbOf(build: (out: Uint8Array, at: number) => number): Uint8Array {
  const out = new Uint8Array(32);
  build(out, 0);
  return out;
}

function raw(...bytes: number[]): Uint8Array {
  const out = new Uint8Array(32);
  out.set(bytes);
  return out;
}

/** Runs one command; `inLen` bytes of data-in (split in two segments to exercise the stream). */
function run(
  r: Rig,
  cdb: Uint8Array,
  o: {
    lun?: number;
    out?: Buffer;
    inLen?: number;
    fault?: ScsiCommand['fault'];
    short?: boolean;
  } = {},
): {
  status: number;
  sense: ReturnType<typeof decodeSense>;
  data: Buffer;
  transferred: number;
  overrun: boolean;
} {
  const data = Buffer.alloc(o.inLen ?? 0, 0xee);
  const half = Math.floor(data.length / 2);
  const dataIn = data.length
    ? [
        { buf: data.subarray(0, half), addr: 0 },
        { buf: data.subarray(half), addr: 0 },
      ]
    : [];
  const outcome = r.target.execute(
    {
      lun: o.lun ?? LUN,
      cdb,
      dataOut: o.out ? [{ buf: o.out, addr: 0 }] : [],
      dataIn,
      fault: o.fault,
    },
    { shortRead: () => o.short === true },
  );
  return {
    status: outcome.status,
    sense: outcome.sense ? decodeSense(outcome.sense) : undefined,
    data: data.subarray(0, outcome.transferred),
    transferred: outcome.transferred,
    overrun: outcome.overrun,
  };
}

function assertSense(
  result: ReturnType<typeof run>,
  key: number,
  asc: number,
  ascq: number,
  information?: number,
): void {
  assert.equal(result.status, ScsiStatus.CHECK_CONDITION);
  assert.ok(result.sense, 'sense data');
  assert.equal(result.sense.senseKey, key, `sense key ${result.sense.senseKey}`);
  assert.deepEqual([result.sense.asc, result.sense.ascq], [asc, ascq]);
  if (information !== undefined) assert.equal(result.sense.information, information);
  assert.equal(result.transferred, 0);
}

test('standard INQUIRY: a disk, SPC-4, command queueing, cut to the allocation length', () => {
  const r = rig();
  const full = run(
    r,
    cdbOf((o, a) => buildInquiry(o, a, undefined, 255)),
    { inLen: 255 },
  );
  assert.equal(full.status, ScsiStatus.GOOD);
  assert.equal(full.transferred, STANDARD_INQUIRY_BYTES);
  const inq = decodeStandardInquiry(full.data);
  assert.equal(inq.peripheralQualifier, 0);
  assert.equal(inq.deviceType, 0);
  assert.equal(inq.version, 6);
  assert.ok(inq.commandQueueing);
  assert.equal(inq.vendor, 'VHOSTUSR');
  assert.equal(inq.product, 'vhost-user-scsi');
  const cut = run(
    r,
    cdbOf((o, a) => buildInquiry(o, a, undefined, 5)),
    { inLen: 255 },
  );
  assert.equal(cut.transferred, 5);
  assert.deepEqual(cut.data, full.data.subarray(0, 5));
  // A buffer smaller than the allocation length: only what fits.
  assert.equal(
    run(
      r,
      cdbOf((o, a) => buildInquiry(o, a, undefined, 255)),
      { inLen: 8 },
    ).transferred,
    8,
  );
});

test('VPD pages 0x00, 0x80, 0x83, 0xB0, 0xB2', () => {
  const r = rig();
  const page = (code: number): Buffer => {
    const res = run(
      r,
      cdbOf((o, a) => buildInquiry(o, a, code, 4096)),
      { inLen: 4096 },
    );
    assert.equal(res.status, ScsiStatus.GOOD, `page 0x${code.toString(16)}`);
    assert.equal(res.data[1], code);
    return res.data;
  };
  assert.deepEqual(decodeSupportedPages(page(0x00)), [0x00, 0x80, 0x83, 0xb0, 0xb2]);
  assert.equal(decodeUnitSerialNumber(page(0x80)), SERIAL.toString());
  const ids = decodeDeviceIdentification(page(0x83));
  const t10 = ids.find((d) => d.type === DesignatorType.T10_VENDOR_ID);
  assert.ok(t10);
  assert.equal(t10.codeSet, CODE_SET_ASCII);
  assert.equal(t10.association, 0);
  assert.equal(Buffer.from(t10.value).toString('latin1'), `VHOSTUSR${SERIAL.toString()}`);
  const naa = ids.find((d) => d.type === DesignatorType.NAA);
  assert.ok(naa);
  assert.equal(naa.codeSet, CODE_SET_BINARY);
  assert.equal(naa.value.length, 8);
  assert.equal(naa.value[0]! >> 4, 3, 'NAA locally assigned');
  assert.deepEqual(
    Buffer.from(naa.value),
    Buffer.from(naaLocallyAssigned(SERIAL)),
    'from the serial',
  );
  assert.notDeepEqual(Buffer.from(naa.value), Buffer.from(naaLocallyAssigned(Buffer.from('o'))));
  const limits = decodeBlockLimits(page(0xb0));
  assert.equal(limits.maxTransferBlocks, Math.floor((0xffff * 512) / BS));
  assert.equal(limits.maxUnmapBlocks, (16 << 20) / BS);
  assert.equal(limits.maxUnmapDescriptors, 4);
  assert.equal(limits.maxWriteSameBlocks, (16 << 20) / BS);
  const prov = decodeProvisioning(page(0xb2));
  assert.deepEqual(prov, { unmap: true, writeSameUnmap: true, readsZeroes: true });
  // An unknown page, a page without EVPD and CMDDT are invalid fields.
  assertSense(
    run(
      r,
      cdbOf((o, a) => buildInquiry(o, a, 0x99, 255)),
      { inLen: 255 },
    ),
    5,
    0x24,
    0,
  );
  assertSense(run(r, raw(ScsiOp.INQUIRY, 0, 0x80, 0, 255), { inLen: 255 }), 5, 0x24, 0);
  assertSense(run(r, raw(ScsiOp.INQUIRY, 2, 0, 0, 255), { inLen: 255 }), 5, 0x24, 0);
});

test('READ CAPACITY(10) and (16); (10) answers 0xFFFFFFFF when the disk needs (16)', () => {
  const r = rig();
  const rc10 = run(r, cdbOf(buildReadCapacity10), { inLen: 8 });
  assert.deepEqual(decodeReadCapacity10(rc10.data), {
    blocks: BLOCKS,
    blockLength: BS,
    provisioning: false,
    readsZeroes: false,
  });
  const rc16 = run(
    r,
    cdbOf((o, a) => buildReadCapacity16(o, a, 32)),
    { inLen: 32 },
  );
  assert.equal(rc16.transferred, 32);
  assert.deepEqual(decodeReadCapacity16(rc16.data), {
    blocks: BLOCKS,
    blockLength: BS,
    provisioning: true,
    readsZeroes: true,
  });
  // Another service action of SERVICE ACTION IN(16) is an invalid field.
  assertSense(run(r, raw(ScsiOp.SERVICE_ACTION_IN_16, 0x11), { inLen: 32 }), 5, 0x24, 0);
  const huge: Storage = {
    size: 2 ** 33 * 512,
    kind: 'ram',
    read: () => {},
    write: () => {},
    writeZeroes: () => {},
    flush: () => {},
    close: () => {},
  };
  const big = new ScsiTarget({
    storage: huge,
    capacity: huge.size,
    blockSize: 512,
    readOnly: false,
    serial: SERIAL,
    lun: 0,
    maxTransferBytes: 1 << 20,
  });
  const data = Buffer.alloc(32);
  big.execute({
    lun: 0,
    cdb: cdbOf(buildReadCapacity10),
    dataOut: [],
    dataIn: [{ buf: data, addr: 0 }],
  });
  assert.equal(data.readUInt32BE(0), READ_CAPACITY_10_OVERFLOW);
  big.execute({
    lun: 0,
    cdb: cdbOf((o, a) => buildReadCapacity16(o, a, 32)),
    dataOut: [],
    dataIn: [{ buf: data, addr: 0 }],
  });
  assert.equal(decodeReadCapacity16(data).blocks, 2 ** 33);
});

test('TEST UNIT READY, REQUEST SENSE (no sense), REPORT LUNS', () => {
  const r = rig();
  const tur = run(r, cdbOf(buildTestUnitReady));
  assert.equal(tur.status, ScsiStatus.GOOD);
  assert.equal(tur.sense, undefined);
  const rs = run(r, raw(ScsiOp.REQUEST_SENSE, 0, 0, 0, 252), { inLen: 252 });
  assert.equal(rs.status, ScsiStatus.GOOD);
  assert.equal(rs.transferred, 18);
  assert.equal(decodeSense(rs.data)?.senseKey, SenseKey.NO_SENSE);
  assertSense(run(r, raw(ScsiOp.REQUEST_SENSE, 1, 0, 0, 252), { inLen: 252 }), 5, 0x24, 0);
  const luns = run(
    r,
    cdbOf((o, a) => buildReportLuns(o, a, 4096)),
    { inLen: 4096 },
  );
  assert.equal(luns.transferred, 16);
  assert.deepEqual(decodeReportLuns(luns.data), [LUN]);
  const wellKnown = run(r, raw(ScsiOp.REPORT_LUNS, 0, 1, 0, 0, 0, 0, 0, 0x10, 0), { inLen: 4096 });
  assert.deepEqual(decodeReportLuns(wellKnown.data), []);
});

test('READ/WRITE(6/10/16) move exactly the blocks asked, into a larger buffer too', () => {
  const r = rig();
  const pattern = Buffer.alloc(4 * BS);
  for (let i = 0; i < pattern.length; i++) pattern[i] = (i * 7 + 3) & 0xff;
  for (const [i, form] of (['6', '10', '16'] as const).entries()) {
    const lba = 100 + 10 * i;
    const write =
      form === '6'
        ? raw(ScsiOp.WRITE_6, 0, 0, lba, 4, 0)
        : cdbOf((o, a) => buildReadWrite(o, a, true, lbaRange(lba, 4), form === '16'));
    const w = run(r, write, { out: pattern });
    assert.equal(w.status, ScsiStatus.GOOD, `WRITE(${form})`);
    assert.equal(w.transferred, 4 * BS);
    assert.deepEqual(r.disk(lba * BS, 4 * BS), pattern, `WRITE(${form}) reached the disk`);
    const read =
      form === '6'
        ? raw(ScsiOp.READ_6, 0, 0, lba, 4, 0)
        : cdbOf((o, a) => buildReadWrite(o, a, false, lbaRange(lba, 4), form === '16'));
    const back = run(r, read, { inLen: 6 * BS });
    assert.equal(back.status, ScsiStatus.GOOD, `READ(${form})`);
    assert.equal(back.transferred, 4 * BS, 'only the blocks asked: the rest is residual');
    assert.deepEqual(back.data, pattern);
  }
  // READ(6) with transfer length 0 reads 256 blocks.
  assert.equal(
    run(r, raw(ScsiOp.READ_6, 0, 0, 0, 0, 0), { inLen: 256 * BS }).transferred,
    256 * BS,
  );
  // READ(10) of 0 blocks transfers nothing and succeeds.
  const none = run(
    r,
    cdbOf((o, a) => buildReadWrite(o, a, false, lbaRange(5, 0), false)),
    { inLen: BS },
  );
  assert.equal(none.status, ScsiStatus.GOOD);
  assert.equal(none.transferred, 0);
});

test('LBA out of range: ILLEGAL REQUEST 0x21/0x00 with INFORMATION = LBA, storage untouched', () => {
  const r = rig();
  const lba = BLOCKS - 1;
  assertSense(
    run(
      r,
      cdbOf((o, a) => buildReadWrite(o, a, false, lbaRange(lba, 2), false)),
      { inLen: 2 * BS },
    ),
    5,
    0x21,
    0,
    lba,
  );
  assertSense(
    run(
      r,
      cdbOf((o, a) => buildReadWrite(o, a, true, lbaRange(BLOCKS + 5, 1), true)),
      { out: Buffer.alloc(BS) },
    ),
    5,
    0x21,
    0,
    BLOCKS + 5,
  );
  assertSense(run(r, raw(ScsiOp.SYNCHRONIZE_CACHE_10, 0, 0, 0, 0x08, 0, 0, 0, 1, 0)), 5, 0x21, 0);
  assert.deepEqual(r.counts, { reads: 0, writes: 0, zeroes: 0, flushes: 0 });
});

test('unknown opcodes: ILLEGAL REQUEST, INVALID COMMAND OPERATION CODE', () => {
  const r = rig();
  for (const op of [0x04, 0x15, 0xa3, 0xc0, 0xff]) {
    assertSense(run(r, raw(op), { inLen: 64 }), SenseKey.ILLEGAL_REQUEST, 0x20, 0);
  }
});

test('invalid CDB fields: ILLEGAL REQUEST 0x24/0x00', () => {
  const r = rig({ maxTransfer: 8 * BS });
  const rdprotect = cdbOf((o, a) => buildReadWrite(o, a, false, lbaRange(0, 1), false));
  rdprotect[1] = 0x20;
  assertSense(run(r, rdprotect, { inLen: BS }), 5, 0x24, 0);
  // Beyond max_sectors (the block limits' maximum transfer length).
  assertSense(
    run(
      r,
      cdbOf((o, a) => buildReadWrite(o, a, false, lbaRange(0, 9), false)),
      { inLen: 9 * BS },
    ),
    5,
    0x24,
    0,
  );
  assertSense(
    run(
      r,
      cdbOf((o, a) => buildModeSense6(o, a, 0x1c, 255)),
      { inLen: 255 },
    ),
    5,
    0x24,
    0,
  );
  assertSense(
    run(r, raw(ScsiOp.UNMAP, 1, 0, 0, 0, 0, 0, 0, 24, 0), { out: Buffer.alloc(24) }),
    5,
    0x24,
    0,
  );
  assert.equal(r.counts.reads, 0);
});

test('write protection: DATA PROTECT 0x27/0x00, MODE SENSE WP; hideWriteProtect hides only the bit', () => {
  for (const hide of [false, true]) {
    const r = rig({ readOnly: !hide, hideWriteProtect: hide });
    for (const ten of [false, true]) {
      const cdb = cdbOf((o, a) =>
        ten ? buildModeSense10(o, a, 0x3f, 255) : buildModeSense6(o, a, 0x3f, 255),
      );
      const ms = decodeModeSense(run(r, cdb, { inLen: 255 }).data, ten);
      assert.equal(ms.writeProtect, !hide, `hide=${hide} ten=${ten}`);
    }
    const block = Buffer.alloc(BS, 1);
    assertSense(
      run(
        r,
        cdbOf((o, a) => buildReadWrite(o, a, true, lbaRange(0, 1), false)),
        { out: block },
      ),
      7,
      0x27,
      0,
    );
    assertSense(run(r, raw(ScsiOp.WRITE_6, 0, 0, 0, 1, 0), { out: block }), 7, 0x27, 0);
    assertSense(
      run(
        r,
        cdbOf((o, a) => buildWriteSame16(o, a, lbaRange(0, 1), true)),
        { out: block },
      ),
      7,
      0x27,
      0,
    );
    const list = Buffer.alloc(24);
    encodeUnmapParameters(list, 0, lbaRange(0, 1));
    assertSense(
      run(
        r,
        cdbOf((o, a) => buildUnmap(o, a, 24)),
        { out: list },
      ),
      7,
      0x27,
      0,
    );
    assert.deepEqual(r.counts, { reads: 0, writes: 0, zeroes: 0, flushes: 0 });
    // Reads still work.
    assert.equal(
      run(
        r,
        cdbOf((o, a) => buildReadWrite(o, a, false, lbaRange(0, 1), false)),
        { inLen: BS },
      ).status,
      0,
    );
  }
});

test('MODE SENSE(6/10): caching page with WCE, allocation length, page control', () => {
  const r = rig();
  for (const ten of [false, true]) {
    const build = ten ? buildModeSense10 : buildModeSense6;
    const caching = run(
      r,
      cdbOf((o, a) => build(o, a, 0x08, 255)),
      { inLen: 255 },
    );
    assert.equal(caching.status, ScsiStatus.GOOD);
    assert.equal(caching.transferred, (ten ? 8 : 4) + 20);
    assert.deepEqual(decodeModeSense(caching.data, ten), { writeProtect: false, writeCache: true });
    const header = run(
      r,
      cdbOf((o, a) => build(o, a, 0x08, ten ? 8 : 4)),
      { inLen: 255 },
    );
    assert.equal(header.transferred, ten ? 8 : 4, 'cut to the allocation length');
  }
  // Changeable values: WCE cannot be changed; saved values are not supported.
  const changeable = run(r, raw(ScsiOp.MODE_SENSE_6, 0x08, 0x48, 0, 255), { inLen: 255 });
  assert.equal(decodeModeSense(changeable.data, false).writeCache, false);
  assertSense(run(r, raw(ScsiOp.MODE_SENSE_6, 0x08, 0xc8, 0, 255), { inLen: 255 }), 5, 0x39, 0);
});

test('absent LUN: INQUIRY peripheral qualifier 3 / type 0x1f, REPORT LUNS works, others 0x25', () => {
  const r = rig();
  const inq = run(
    r,
    cdbOf((o, a) => buildInquiry(o, a, undefined, 96)),
    { lun: 0, inLen: 96 },
  );
  assert.equal(inq.status, ScsiStatus.GOOD);
  assert.equal(inq.data[0], 0x7f);
  const luns = run(
    r,
    cdbOf((o, a) => buildReportLuns(o, a, 64)),
    { lun: 0, inLen: 64 },
  );
  assert.deepEqual(decodeReportLuns(luns.data), [LUN]);
  assertSense(run(r, cdbOf(buildTestUnitReady), { lun: 0 }), 5, 0x25, 0);
  assertSense(
    run(
      r,
      cdbOf((o, a) => buildReadWrite(o, a, false, lbaRange(0, 1), false)),
      { lun: 7, inLen: BS },
    ),
    5,
    0x25,
    0,
  );
  const rs = run(r, raw(ScsiOp.REQUEST_SENSE, 0, 0, 0, 18), { lun: 0, inLen: 18 });
  assert.equal(rs.status, ScsiStatus.GOOD);
  assert.equal(decodeSense(rs.data)?.asc, 0x25);
  assert.equal(r.counts.reads, 0);
});

test('after a reset the next command gets UNIT ATTENTION 0x29/0x00 once (INQUIRY does not)', () => {
  const r = rig();
  r.target.reset();
  assert.equal(
    run(
      r,
      cdbOf((o, a) => buildInquiry(o, a, undefined, 36)),
      { inLen: 36 },
    ).status,
    0,
  );
  assert.equal(
    run(
      r,
      cdbOf((o, a) => buildReportLuns(o, a, 16)),
      { inLen: 16 },
    ).status,
    0,
  );
  assertSense(run(r, cdbOf(buildTestUnitReady)), SenseKey.UNIT_ATTENTION, 0x29, 0);
  assert.equal(run(r, cdbOf(buildTestUnitReady)).status, ScsiStatus.GOOD);
  // REQUEST SENSE reports (and clears) it as data.
  r.target.reset();
  const rs = run(r, raw(ScsiOp.REQUEST_SENSE, 0, 0, 0, 18), { inLen: 18 });
  assert.equal(rs.status, ScsiStatus.GOOD);
  assert.equal(decodeSense(rs.data)?.senseKey, SenseKey.UNIT_ATTENTION);
  assert.equal(run(r, cdbOf(buildTestUnitReady)).status, ScsiStatus.GOOD);
});

test('WRITE SAME(16) and (10) repeat one block; with UNMAP and zeroes it deallocates (reads zero)', () => {
  const r = rig();
  const ones = Buffer.alloc(64 * BS, 0x11);
  run(
    r,
    cdbOf((o, a) => buildReadWrite(o, a, true, lbaRange(0, 64), false)),
    { out: ones },
  );
  const pattern = Buffer.alloc(BS);
  pattern.write('block pattern');
  const ws = run(
    r,
    cdbOf((o, a) => buildWriteSame16(o, a, lbaRange(8, 8), false)),
    { out: pattern },
  );
  assert.equal(ws.status, ScsiStatus.GOOD);
  for (let b = 8; b < 16; b++) assert.deepEqual(r.disk(b * BS, BS), pattern, `block ${b}`);
  assert.deepEqual(r.disk(16 * BS, BS), Buffer.alloc(BS, 0x11), 'the next block is untouched');
  // WRITE SAME(10).
  const ws10 = raw(ScsiOp.WRITE_SAME_10, 0, 0, 0, 0, 20, 0, 0, 2, 0);
  assert.equal(run(r, ws10, { out: pattern }).status, 0);
  assert.deepEqual(r.disk(21 * BS, BS), pattern);
  // UNMAP bit with a zero block: deallocated, reads as zeroes.
  const zeroesBefore = r.counts.zeroes;
  assert.equal(
    run(
      r,
      cdbOf((o, a) => buildWriteSame16(o, a, lbaRange(8, 4), true)),
      { out: Buffer.alloc(BS) },
    ).status,
    0,
  );
  assert.equal(r.counts.zeroes, zeroesBefore + 1);
  assert.deepEqual(r.disk(8 * BS, 4 * BS), Buffer.alloc(4 * BS));
  assert.deepEqual(r.disk(12 * BS, BS), pattern);
  // UNMAP bit with a non-zero block: the data is written all the same.
  assert.equal(
    run(
      r,
      cdbOf((o, a) => buildWriteSame16(o, a, lbaRange(30, 2), true)),
      { out: pattern },
    ).status,
    0,
  );
  assert.deepEqual(r.disk(31 * BS, BS), pattern);
  // NDOB: no data-out, zeroes.
  assert.equal(
    run(r, raw(ScsiOp.WRITE_SAME_16, 0x09, 0, 0, 0, 0, 0, 0, 0, 40, 0, 0, 0, 2)).status,
    0,
  );
  assert.deepEqual(r.disk(40 * BS, 2 * BS), Buffer.alloc(2 * BS));
  // Beyond the maximum write same length, out of range, no data-out.
  const tooMany = (16 << 20) / BS + 1;
  const big = rig();
  assertSense(
    run(
      big,
      cdbOf((o, a) => buildWriteSame16(o, a, lbaRange(0, tooMany), false)),
      { out: pattern },
    ),
    5,
    0x24,
    0,
  );
  assertSense(
    run(
      r,
      cdbOf((o, a) => buildWriteSame16(o, a, lbaRange(BLOCKS - 1, 2), false)),
      { out: pattern },
    ),
    5,
    0x21,
    0,
    BLOCKS - 1,
  );
  assert.ok(
    run(
      r,
      cdbOf((o, a) => buildWriteSame16(o, a, lbaRange(0, 1), false)),
    ).overrun,
  );
});

test('UNMAP within the block limits zeroes the ranges; beyond them it is refused', () => {
  const r = rig();
  run(
    r,
    cdbOf((o, a) => buildReadWrite(o, a, true, lbaRange(0, 64), false)),
    { out: Buffer.alloc(64 * BS, 0x22) },
  );
  // Two descriptors in one list.
  const list = Buffer.alloc(8 + 2 * 16);
  putBE(list, 0, 2, list.length - 2);
  putBE(list, 2, 2, 32);
  putBE(list, 8, 8, 2);
  putBE(list, 16, 4, 3);
  putBE(list, 24, 8, 10);
  putBE(list, 32, 4, 1);
  const ok = run(
    r,
    cdbOf((o, a) => buildUnmap(o, a, list.length)),
    { out: list },
  );
  assert.equal(ok.status, ScsiStatus.GOOD);
  assert.deepEqual(r.disk(2 * BS, 3 * BS), Buffer.alloc(3 * BS));
  assert.deepEqual(r.disk(10 * BS, BS), Buffer.alloc(BS));
  assert.deepEqual(r.disk(5 * BS, 5 * BS), Buffer.alloc(5 * BS, 0x22), 'between the ranges');
  const before = r.counts.zeroes;
  // Five descriptors (limit 4), too many blocks, a range past the end, a short list.
  const five = Buffer.alloc(8 + 5 * 16);
  putBE(five, 0, 2, five.length - 2);
  putBE(five, 2, 2, 80);
  assertSense(
    run(
      r,
      cdbOf((o, a) => buildUnmap(o, a, five.length)),
      { out: five },
    ),
    5,
    0x26,
    0,
  );
  const one = Buffer.alloc(24);
  encodeUnmapParameters(one, 0, lbaRange(0, (16 << 20) / BS + 1));
  assertSense(
    run(
      r,
      cdbOf((o, a) => buildUnmap(o, a, 24)),
      { out: one },
    ),
    5,
    0x26,
    0,
  );
  encodeUnmapParameters(one, 0, lbaRange(BLOCKS - 1, 2));
  assertSense(
    run(
      r,
      cdbOf((o, a) => buildUnmap(o, a, 24)),
      { out: one },
    ),
    5,
    0x21,
    0,
    BLOCKS - 1,
  );
  assertSense(
    run(
      r,
      cdbOf((o, a) => buildUnmap(o, a, 4)),
      { out: one },
    ),
    5,
    0x1a,
    0,
  );
  assert.equal(r.counts.zeroes, before, 'refused lists unmap nothing');
  // The parameter list is longer than the data-out: an overrun, nothing done.
  assert.ok(
    run(
      r,
      cdbOf((o, a) => buildUnmap(o, a, 24)),
      { out: Buffer.alloc(8) },
    ).overrun,
  );
  // Parameter list length 0: nothing to do.
  assert.equal(
    run(
      r,
      cdbOf((o, a) => buildUnmap(o, a, 0)),
    ).status,
    ScsiStatus.GOOD,
  );
});

test('SYNCHRONIZE CACHE(10/16) flush the storage', () => {
  const r = rig();
  assert.equal(run(r, cdbOf(buildSynchronizeCache)).status, ScsiStatus.GOOD);
  assert.equal(
    run(r, raw(ScsiOp.SYNCHRONIZE_CACHE_16, 0, 0, 0, 0, 0, 0, 0, 0, 10, 0, 0, 0, 5)).status,
    0,
  );
  assert.equal(r.counts.flushes, 2);
});

test('residuals: a short data-in buffer is an overrun; a short read transfers half', () => {
  const r = rig();
  const over = run(
    r,
    cdbOf((o, a) => buildReadWrite(o, a, false, lbaRange(0, 4), false)),
    { inLen: 3 * BS },
  );
  assert.ok(over.overrun);
  assert.equal(r.counts.reads, 0, 'nothing read');
  assert.ok(
    run(
      r,
      cdbOf((o, a) => buildReadWrite(o, a, true, lbaRange(0, 4), false)),
      { out: Buffer.alloc(BS) },
    ).overrun,
  );
  assert.equal(r.counts.writes, 0, 'nothing written');
  run(
    r,
    cdbOf((o, a) => buildReadWrite(o, a, true, lbaRange(0, 4), false)),
    { out: Buffer.alloc(4 * BS, 0x5a) },
  );
  const half = run(
    r,
    cdbOf((o, a) => buildReadWrite(o, a, false, lbaRange(0, 4), false)),
    { inLen: 4 * BS, short: true },
  );
  assert.equal(half.status, ScsiStatus.GOOD);
  assert.equal(half.transferred, 2 * BS);
  assert.deepEqual(half.data, Buffer.alloc(2 * BS, 0x5a));
});

test('faults answer without touching the storage; a failing storage is a MEDIUM ERROR', () => {
  const r = rig();
  const read = cdbOf((o, a) => buildReadWrite(o, a, false, lbaRange(0, 1), false));
  const write = cdbOf((o, a) => buildReadWrite(o, a, true, lbaRange(0, 1), false));
  const busy = run(r, read, { inLen: BS, fault: 'scsi-busy' });
  assert.equal(busy.status, ScsiStatus.BUSY);
  assert.equal(busy.sense, undefined);
  assert.equal(
    run(r, read, { inLen: BS, fault: 'task-set-full' }).status,
    ScsiStatus.TASK_SET_FULL,
  );
  assertSense(run(r, write, { out: Buffer.alloc(BS), fault: 'unit-attention' }), 6, 0x29, 0);
  assertSense(run(r, read, { inLen: BS, fault: 'io-error' }), SenseKey.MEDIUM_ERROR, 0x11, 0);
  assertSense(
    run(r, write, { out: Buffer.alloc(BS), fault: 'io-error' }),
    SenseKey.MEDIUM_ERROR,
    0x0c,
    0,
  );
  assertSense(
    run(r, cdbOf(buildTestUnitReady), { fault: 'io-error' }),
    SenseKey.HARDWARE_ERROR,
    0x44,
    0,
  );
  assert.deepEqual(r.counts, { reads: 0, writes: 0, zeroes: 0, flushes: 0 });
  const failing = new ScsiTarget({
    storage: {
      size: SIZE,
      kind: 'ram',
      read: () => {
        throw Object.assign(new Error('EIO'), { code: 'EIO' });
      },
      write: () => {},
      writeZeroes: () => {},
      flush: () => {},
      close: () => {},
    },
    capacity: SIZE,
    blockSize: BS,
    readOnly: false,
    serial: SERIAL,
    lun: 0,
    maxTransferBytes: 1 << 20,
  });
  const out = failing.execute({
    lun: 0,
    cdb: read,
    dataOut: [],
    dataIn: [{ buf: Buffer.alloc(BS), addr: 0 }],
  });
  assert.equal(out.status, ScsiStatus.CHECK_CONDITION);
  assert.equal(decodeSense(out.sense!)?.senseKey, SenseKey.MEDIUM_ERROR);
});
