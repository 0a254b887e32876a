import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ScsiSenseError, VhostUserError } from '../../src/errors.js';
import {
  Asc,
  ascDescription,
  decodeSense,
  encodeFixedSense,
  FIXED_SENSE_BYTES,
  isRetryableSense,
  SenseKey,
  senseKeyName,
} from '../../src/devices/scsi/sense.js';

/** "70 00 05 ..." → bytes. */
function hex(text: string): Uint8Array {
  const parts = text.trim().split(/\s+/);
  return Uint8Array.from(parts.map((p) => parseInt(p, 16)));
}

interface SenseCase {
  name: string;
  bytes: string;
  senseKey: number;
  senseKeyName: string;
  asc: number;
  ascq: number;
  description: string;
  information: number | undefined;
}

// Sense data as targets send it: 18-byte fixed format (QEMU, LIO, SPDK, disks) and descriptor
// format (LIO with D_SENSE, SAT layers, protection information errors).
const cases: SenseCase[] = [
  {
    name: 'NO SENSE, fixed',
    bytes: '70 00 00 00 00 00 00 0a 00 00 00 00 00 00 00 00 00 00',
    senseKey: SenseKey.NO_SENSE,
    senseKeyName: 'NO SENSE',
    asc: 0x00,
    ascq: 0x00,
    description: 'No additional sense information',
    information: undefined,
  },
  {
    name: 'NO SENSE, descriptor, ATA return descriptor (SAT pass-through)',
    bytes: '72 00 00 1d 00 00 00 0e 09 0c 00 00 00 01 00 00 00 00 00 00 40 50',
    senseKey: SenseKey.NO_SENSE,
    senseKeyName: 'NO SENSE',
    asc: 0x00,
    ascq: 0x1d,
    description: 'ATA pass through information available',
    information: undefined,
  },
  {
    name: 'RECOVERED ERROR, fixed',
    bytes: '70 00 01 00 00 00 00 0a 00 00 00 00 18 00 00 00 00 00',
    senseKey: SenseKey.RECOVERED_ERROR,
    senseKeyName: 'RECOVERED ERROR',
    asc: 0x18,
    ascq: 0x00,
    description: 'Recovered data with error correction applied',
    information: undefined,
  },
  {
    name: 'RECOVERED ERROR, fixed, VALID + INFORMATION',
    bytes: 'f0 00 01 00 12 34 56 0a 00 00 00 00 17 01 00 00 00 00',
    senseKey: SenseKey.RECOVERED_ERROR,
    senseKeyName: 'RECOVERED ERROR',
    asc: 0x17,
    ascq: 0x01,
    description: 'Recovered data with retries',
    information: 0x123456,
  },
  {
    name: 'NOT READY, becoming ready',
    bytes: '70 00 02 00 00 00 00 0a 00 00 00 00 04 01 00 00 00 00',
    senseKey: SenseKey.NOT_READY,
    senseKeyName: 'NOT READY',
    asc: 0x04,
    ascq: 0x01,
    description: 'Logical unit is in process of becoming ready',
    information: undefined,
  },
  {
    name: 'NOT READY, initializing command required',
    bytes: '70 00 02 00 00 00 00 0a 00 00 00 00 04 02 00 00 00 00',
    senseKey: SenseKey.NOT_READY,
    senseKeyName: 'NOT READY',
    asc: 0x04,
    ascq: 0x02,
    description: 'Logical unit not ready, initializing command required',
    information: undefined,
  },
  {
    name: 'NOT READY, ALUA transition, descriptor',
    bytes: '72 02 04 0a 00 00 00 00',
    senseKey: SenseKey.NOT_READY,
    senseKeyName: 'NOT READY',
    asc: 0x04,
    ascq: 0x0a,
    description: 'Logical unit not accessible, asymmetric access state transition',
    information: undefined,
  },
  {
    name: 'NOT READY, medium not present',
    bytes: '70 00 02 00 00 00 00 0a 00 00 00 00 3a 00 00 00 00 00',
    senseKey: SenseKey.NOT_READY,
    senseKeyName: 'NOT READY',
    asc: 0x3a,
    ascq: 0x00,
    description: 'Medium not present',
    information: undefined,
  },
  {
    name: 'NOT READY, qualifier missing from the table: family text',
    bytes: '70 00 02 00 00 00 00 0a 00 00 00 00 04 22 00 00 00 00',
    senseKey: SenseKey.NOT_READY,
    senseKeyName: 'NOT READY',
    asc: 0x04,
    ascq: 0x22,
    description: 'Logical unit not ready (ASCQ 0x22)',
    information: undefined,
  },
  {
    name: 'MEDIUM ERROR, unrecovered read error, fixed, VALID + failing LBA',
    bytes: 'f0 00 03 00 00 12 34 0a 00 00 00 00 11 00 00 00 00 00',
    senseKey: SenseKey.MEDIUM_ERROR,
    senseKeyName: 'MEDIUM ERROR',
    asc: 0x11,
    ascq: 0x00,
    description: 'Unrecovered read error',
    information: 0x1234,
  },
  {
    name: 'MEDIUM ERROR, unrecovered read error, descriptor, 64-bit information descriptor',
    bytes: '72 03 11 00 00 00 00 0c 00 0a 80 00 00 00 00 01 23 45 67 89',
    senseKey: SenseKey.MEDIUM_ERROR,
    senseKeyName: 'MEDIUM ERROR',
    asc: 0x11,
    ascq: 0x00,
    description: 'Unrecovered read error',
    information: 0x1_2345_6789,
  },
  {
    name: 'MEDIUM ERROR, write error, fixed',
    bytes: 'f0 00 03 00 00 00 08 0a 00 00 00 00 0c 00 00 00 00 00',
    senseKey: SenseKey.MEDIUM_ERROR,
    senseKeyName: 'MEDIUM ERROR',
    asc: 0x0c,
    ascq: 0x00,
    description: 'Write error',
    information: 8,
  },
  {
    name: 'MEDIUM ERROR, deferred write error (0x71)',
    bytes: '71 00 03 00 00 00 00 0a 00 00 00 00 0c 02 00 00 00 00',
    senseKey: SenseKey.MEDIUM_ERROR,
    senseKeyName: 'MEDIUM ERROR',
    asc: 0x0c,
    ascq: 0x02,
    description: 'Write error - auto reallocation failed',
    information: undefined,
  },
  {
    name: 'HARDWARE ERROR, internal target failure',
    bytes: '70 00 04 00 00 00 00 0a 00 00 00 00 44 00 00 00 00 00',
    senseKey: SenseKey.HARDWARE_ERROR,
    senseKeyName: 'HARDWARE ERROR',
    asc: 0x44,
    ascq: 0x00,
    description: 'Internal target failure',
    information: undefined,
  },
  {
    name: 'HARDWARE ERROR, failure prediction threshold exceeded (false)',
    bytes: '70 00 04 00 00 00 00 0a 00 00 00 00 5d ff 00 00 00 00',
    senseKey: SenseKey.HARDWARE_ERROR,
    senseKeyName: 'HARDWARE ERROR',
    asc: 0x5d,
    ascq: 0xff,
    description: 'Failure prediction threshold exceeded (false)',
    information: undefined,
  },
  {
    name: 'ILLEGAL REQUEST, LBA out of range',
    bytes: '70 00 05 00 00 00 00 0a 00 00 00 00 21 00 00 00 00 00',
    senseKey: SenseKey.ILLEGAL_REQUEST,
    senseKeyName: 'ILLEGAL REQUEST',
    asc: 0x21,
    ascq: 0x00,
    description: 'Logical block address out of range',
    information: undefined,
  },
  {
    name: 'ILLEGAL REQUEST, LBA out of range, VALID + INFORMATION',
    bytes: 'f0 00 05 ff ff ff ff 0a 00 00 00 00 21 00 00 00 00 00',
    senseKey: SenseKey.ILLEGAL_REQUEST,
    senseKeyName: 'ILLEGAL REQUEST',
    asc: 0x21,
    ascq: 0x00,
    description: 'Logical block address out of range',
    information: 0xffff_ffff,
  },
  {
    name: 'ILLEGAL REQUEST, invalid element address',
    bytes: '70 00 05 00 00 00 00 0a 00 00 00 00 21 01 00 00 00 00',
    senseKey: SenseKey.ILLEGAL_REQUEST,
    senseKeyName: 'ILLEGAL REQUEST',
    asc: 0x21,
    ascq: 0x01,
    description: 'Invalid element address',
    information: undefined,
  },
  {
    name: 'ILLEGAL REQUEST, invalid opcode',
    bytes: '70 00 05 00 00 00 00 0a 00 00 00 00 20 00 00 00 00 00',
    senseKey: SenseKey.ILLEGAL_REQUEST,
    senseKeyName: 'ILLEGAL REQUEST',
    asc: 0x20,
    ascq: 0x00,
    description: 'Invalid command operation code',
    information: undefined,
  },
  {
    name: 'ILLEGAL REQUEST, invalid field in CDB, sense-key specific field pointer',
    bytes: '70 00 05 00 00 00 00 0a 00 00 00 00 24 00 00 c0 00 02',
    senseKey: SenseKey.ILLEGAL_REQUEST,
    senseKeyName: 'ILLEGAL REQUEST',
    asc: 0x24,
    ascq: 0x00,
    description: 'Invalid field in CDB',
    information: undefined,
  },
  {
    name: 'ILLEGAL REQUEST, invalid field in CDB, descriptor, no descriptors',
    bytes: '72 05 24 00 00 00 00 00',
    senseKey: SenseKey.ILLEGAL_REQUEST,
    senseKeyName: 'ILLEGAL REQUEST',
    asc: 0x24,
    ascq: 0x00,
    description: 'Invalid field in CDB',
    information: undefined,
  },
  {
    name: 'ILLEGAL REQUEST, descriptor, sense-key specific then information descriptor',
    bytes: '72 05 24 00 00 00 00 14 02 06 00 00 c0 00 02 00 00 0a 80 00 00 00 00 00 00 00 10 00',
    senseKey: SenseKey.ILLEGAL_REQUEST,
    senseKeyName: 'ILLEGAL REQUEST',
    asc: 0x24,
    ascq: 0x00,
    description: 'Invalid field in CDB',
    information: 0x1000,
  },
  {
    name: 'ILLEGAL REQUEST, LUN not supported',
    bytes: '70 00 05 00 00 00 00 0a 00 00 00 00 25 00 00 00 00 00',
    senseKey: SenseKey.ILLEGAL_REQUEST,
    senseKeyName: 'ILLEGAL REQUEST',
    asc: 0x25,
    ascq: 0x00,
    description: 'Logical unit not supported',
    information: undefined,
  },
  {
    name: 'ILLEGAL REQUEST, parameter list length error',
    bytes: '70 00 05 00 00 00 00 0a 00 00 00 00 1a 00 00 00 00 00',
    senseKey: SenseKey.ILLEGAL_REQUEST,
    senseKeyName: 'ILLEGAL REQUEST',
    asc: 0x1a,
    ascq: 0x00,
    description: 'Parameter list length error',
    information: undefined,
  },
  {
    name: 'ILLEGAL REQUEST, invalid field in parameter list',
    bytes: '70 00 05 00 00 00 00 0a 00 00 00 00 26 00 00 00 00 00',
    senseKey: SenseKey.ILLEGAL_REQUEST,
    senseKeyName: 'ILLEGAL REQUEST',
    asc: 0x26,
    ascq: 0x00,
    description: 'Invalid field in parameter list',
    information: undefined,
  },
  {
    name: 'UNIT ATTENTION, power on / reset',
    bytes: '70 00 06 00 00 00 00 0a 00 00 00 00 29 00 00 00 00 00',
    senseKey: SenseKey.UNIT_ATTENTION,
    senseKeyName: 'UNIT ATTENTION',
    asc: 0x29,
    ascq: 0x00,
    description: 'Power on, reset, or bus device reset occurred',
    information: undefined,
  },
  {
    name: 'UNIT ATTENTION, I_T nexus loss',
    bytes: '70 00 06 00 00 00 00 0a 00 00 00 00 29 07 00 00 00 00',
    senseKey: SenseKey.UNIT_ATTENTION,
    senseKeyName: 'UNIT ATTENTION',
    asc: 0x29,
    ascq: 0x07,
    description: 'I_T nexus loss occurred',
    information: undefined,
  },
  {
    name: 'UNIT ATTENTION, capacity data has changed, descriptor',
    bytes: '72 06 2a 09 00 00 00 00',
    senseKey: SenseKey.UNIT_ATTENTION,
    senseKeyName: 'UNIT ATTENTION',
    asc: 0x2a,
    ascq: 0x09,
    description: 'Capacity data has changed',
    information: undefined,
  },
  {
    name: 'UNIT ATTENTION, mode parameters changed',
    bytes: '70 00 06 00 00 00 00 0a 00 00 00 00 2a 01 00 00 00 00',
    senseKey: SenseKey.UNIT_ATTENTION,
    senseKeyName: 'UNIT ATTENTION',
    asc: 0x2a,
    ascq: 0x01,
    description: 'Mode parameters changed',
    information: undefined,
  },
  {
    name: 'UNIT ATTENTION, reported LUNs data has changed',
    bytes: '70 00 06 00 00 00 00 0a 00 00 00 00 3f 0e 00 00 00 00',
    senseKey: SenseKey.UNIT_ATTENTION,
    senseKeyName: 'UNIT ATTENTION',
    asc: 0x3f,
    ascq: 0x0e,
    description: 'Reported LUNs data has changed',
    information: undefined,
  },
  {
    name: 'UNIT ATTENTION, medium may have changed',
    bytes: '70 00 06 00 00 00 00 0a 00 00 00 00 28 00 00 00 00 00',
    senseKey: SenseKey.UNIT_ATTENTION,
    senseKeyName: 'UNIT ATTENTION',
    asc: 0x28,
    ascq: 0x00,
    description: 'Not ready to ready change, medium may have changed',
    information: undefined,
  },
  {
    name: 'DATA PROTECT, write protected',
    bytes: '70 00 07 00 00 00 00 0a 00 00 00 00 27 00 00 00 00 00',
    senseKey: SenseKey.DATA_PROTECT,
    senseKeyName: 'DATA PROTECT',
    asc: 0x27,
    ascq: 0x00,
    description: 'Write protected',
    information: undefined,
  },
  {
    name: 'DATA PROTECT, space allocation failed (thin pool full)',
    bytes: '72 07 27 07 00 00 00 00',
    senseKey: SenseKey.DATA_PROTECT,
    senseKeyName: 'DATA PROTECT',
    asc: 0x27,
    ascq: 0x07,
    description: 'Space allocation failed write protect',
    information: undefined,
  },
  {
    name: 'BLANK CHECK, vendor-specific ASC',
    bytes: '70 00 08 00 00 00 00 0a 00 00 00 00 80 01 00 00 00 00',
    senseKey: SenseKey.BLANK_CHECK,
    senseKeyName: 'BLANK CHECK',
    asc: 0x80,
    ascq: 0x01,
    description: 'vendor specific additional sense 0x80/0x01',
    information: undefined,
  },
  {
    name: 'ABORTED COMMAND, data phase CRC error',
    bytes: '70 00 0b 00 00 00 00 0a 00 00 00 00 47 01 00 00 00 00',
    senseKey: SenseKey.ABORTED_COMMAND,
    senseKeyName: 'ABORTED COMMAND',
    asc: 0x47,
    ascq: 0x01,
    description: 'Data phase CRC error detected',
    information: undefined,
  },
  {
    name: 'ABORTED COMMAND, data phase error qualifier not in the table',
    bytes: '70 00 0b 00 00 00 00 0a 00 00 00 00 4b 04 00 00 00 00',
    senseKey: SenseKey.ABORTED_COMMAND,
    senseKeyName: 'ABORTED COMMAND',
    asc: 0x4b,
    ascq: 0x04,
    description: 'Data phase error (ASCQ 0x04)',
    information: undefined,
  },
  {
    name: 'ABORTED COMMAND, guard check failed, descriptor with information',
    bytes: '72 0b 10 01 00 00 00 0c 00 0a 80 00 00 00 00 00 00 00 00 40',
    senseKey: SenseKey.ABORTED_COMMAND,
    senseKeyName: 'ABORTED COMMAND',
    asc: 0x10,
    ascq: 0x01,
    description: 'Logical block guard check failed',
    information: 0x40,
  },
  {
    name: 'ABORTED COMMAND, insufficient resources',
    bytes: '70 00 0b 00 00 00 00 0a 00 00 00 00 55 03 00 00 00 00',
    senseKey: SenseKey.ABORTED_COMMAND,
    senseKeyName: 'ABORTED COMMAND',
    asc: 0x55,
    ascq: 0x03,
    description: 'Insufficient resources',
    information: undefined,
  },
  {
    name: 'MISCOMPARE, during verify, VALID + byte offset',
    bytes: 'f0 00 0e 00 00 00 10 0a 00 00 00 00 1d 00 00 00 00 00',
    senseKey: SenseKey.MISCOMPARE,
    senseKeyName: 'MISCOMPARE',
    asc: 0x1d,
    ascq: 0x00,
    description: 'Miscompare during verify operation',
    information: 0x10,
  },
  {
    name: 'VOLUME OVERFLOW, deferred descriptor format (0x73)',
    bytes: '73 0d 00 00 00 00 00 00',
    senseKey: SenseKey.VOLUME_OVERFLOW,
    senseKeyName: 'VOLUME OVERFLOW',
    asc: 0x00,
    ascq: 0x00,
    description: 'No additional sense information',
    information: undefined,
  },
  {
    name: 'fixed format, ADDITIONAL SENSE LENGTH larger than the bytes sent',
    bytes: '70 00 03 00 00 00 00 f4 00 00 00 00 11 01',
    senseKey: SenseKey.MEDIUM_ERROR,
    senseKeyName: 'MEDIUM ERROR',
    asc: 0x11,
    ascq: 0x01,
    description: 'Read retries exhausted',
    information: undefined,
  },
];

for (const c of cases) {
  test(`decodeSense: ${c.name}`, () => {
    const bytes = hex(c.bytes);
    const info = decodeSense(bytes);
    assert.ok(info);
    assert.equal(info.senseKey, c.senseKey);
    assert.equal(info.senseKeyName, c.senseKeyName);
    assert.equal(info.asc, c.asc);
    assert.equal(info.ascq, c.ascq);
    assert.equal(info.description, c.description);
    assert.equal(info.information, c.information);
    assert.deepEqual([...info.raw], [...bytes]);
    // raw is a copy: later reuse of the sense buffer does not change it.
    bytes[2] = 0xff;
    assert.notEqual(info.raw[2], 0xff);
  });
}

test('the table covers every sense key a block device reports', () => {
  const keys = new Set(cases.map((c) => c.senseKey));
  for (const key of [
    SenseKey.NO_SENSE,
    SenseKey.RECOVERED_ERROR,
    SenseKey.NOT_READY,
    SenseKey.MEDIUM_ERROR,
    SenseKey.HARDWARE_ERROR,
    SenseKey.ILLEGAL_REQUEST,
    SenseKey.UNIT_ATTENTION,
    SenseKey.DATA_PROTECT,
    SenseKey.BLANK_CHECK,
    SenseKey.ABORTED_COMMAND,
    SenseKey.VOLUME_OVERFLOW,
    SenseKey.MISCOMPARE,
  ]) {
    assert.ok(keys.has(key), senseKeyName(key));
  }
});

test('senseKeyName names every key 0..15', () => {
  assert.deepEqual(
    Array.from({ length: 16 }, (_, key) => senseKeyName(key)),
    [
      'NO SENSE',
      'RECOVERED ERROR',
      'NOT READY',
      'MEDIUM ERROR',
      'HARDWARE ERROR',
      'ILLEGAL REQUEST',
      'UNIT ATTENTION',
      'DATA PROTECT',
      'BLANK CHECK',
      'VENDOR SPECIFIC',
      'COPY ABORTED',
      'ABORTED COMMAND',
      'SENSE KEY 0xc',
      'VOLUME OVERFLOW',
      'MISCOMPARE',
      'COMPLETED',
    ],
  );
});

test('decodeSense: the fixed format ASC/ASCQ only count when ADDITIONAL SENSE LENGTH covers them', () => {
  // Additional length 0: bytes 12/13 are leftovers of the buffer, not sense.
  const short = decodeSense(hex('70 00 05 00 00 00 00 00 00 00 00 00 24 00 00 00 00 00'));
  assert.equal(short?.asc, 0);
  assert.equal(short?.ascq, 0);
  // Additional length 5 reaches byte 12 (ASC) but not byte 13 (ASCQ).
  const asc = decodeSense(hex('70 00 05 00 00 00 00 05 00 00 00 00 24 07 00 00 00 00'));
  assert.equal(asc?.asc, 0x24);
  assert.equal(asc?.ascq, 0);
});

test('decodeSense: descriptors past ADDITIONAL SENSE LENGTH are ignored', () => {
  const info = decodeSense(hex('72 03 11 00 00 00 00 00 00 0a 80 00 00 00 00 00 00 00 00 07'));
  assert.equal(info?.information, undefined);
});

test('decodeSense: an information descriptor without VALID carries no information', () => {
  const info = decodeSense(hex('72 03 11 00 00 00 00 0c 00 0a 00 00 00 00 00 00 00 00 00 07'));
  assert.equal(info?.asc, 0x11);
  assert.equal(info?.information, undefined);
});

test('decodeSense: information beyond 2^53 is left out rather than rounded', () => {
  const info = decodeSense(hex('72 03 11 00 00 00 00 0c 00 0a 80 00 ff ff ff ff ff ff ff ff'));
  assert.equal(info?.information, undefined);
  const edge = decodeSense(hex('72 03 11 00 00 00 00 0c 00 0a 80 00 00 1f ff ff ff ff ff ff'));
  assert.equal(edge?.information, Number.MAX_SAFE_INTEGER);
});

test('decodeSense: truncated and garbage inputs', () => {
  const none: [string, string][] = [
    ['empty', ''],
    ['one byte', '70'],
    ['fixed without the sense key byte', '70 00'],
    ['descriptor, one byte', '72'],
    ['response code 0x00', '00 00 05 00 00 00 00 0a 00 00 00 00 24 00'],
    ['vendor-specific response code 0x7f', '7f 00 05 00 00 00 00 0a 00 00 00 00 24 00'],
    ['response code 0x74', '74 05 24 00 00 00 00 00'],
  ];
  for (const [name, bytes] of none) assert.equal(decodeSense(hex(bytes)), undefined, name);

  // Three bytes: the sense key and nothing else.
  assert.deepEqual(
    (({ senseKey, asc, ascq, information }) => ({ senseKey, asc, ascq, information }))(
      decodeSense(hex('70 00 05'))!,
    ),
    { senseKey: 5, asc: 0, ascq: 0, information: undefined },
  );
  // VALID set but the INFORMATION field is cut short.
  assert.equal(decodeSense(hex('f0 00 03 00 12'))?.information, undefined);
  // Descriptor header cut after the ASC.
  const cut = decodeSense(hex('72 06 29'));
  assert.equal(cut?.senseKey, 6);
  assert.equal(cut?.asc, 0x29);
  assert.equal(cut?.ascq, 0);
  // Descriptor whose length claims more than was sent, then a second one that does not fit.
  const overlong = decodeSense(hex('72 03 11 00 00 00 00 ff 00 0a 80 00 00 00 00 00 00'));
  assert.equal(overlong?.information, undefined);
  // A zero-length descriptor loop still advances.
  const zeros = decodeSense(hex('72 05 24 00 00 00 00 08 80 00 80 00 80 00 80 00'));
  assert.equal(zeros?.asc, 0x24);
  // Reserved bits in byte 2 (FILEMARK, EOM, ILI) do not leak into the sense key.
  assert.equal(decodeSense(hex('70 00 e5 00 00 00 00 0a 00 00 00 00 24 00'))?.senseKey, 5);
});

test('decodeSense: random bytes never throw and only read inside the slice', () => {
  let seed = 0x12345678;
  const next = (): number => {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    return seed >>> 16;
  };
  const starts = [0x70, 0x71, 0x72, 0x73, 0xf0, 0xf2];
  for (let i = 0; i < 20000; i++) {
    const big = new Uint8Array(64).map(() => next() & 0xff);
    if (i % 4 !== 3) big[0] = starts[next() % starts.length]!;
    const length = next() % 40;
    // Sense continues past the slice with other bytes: they must not change the result.
    const inSlice = decodeSense(big.subarray(0, length));
    big.fill(0xff, length);
    const copy = decodeSense(Uint8Array.from(big.subarray(0, length)));
    assert.deepEqual(inSlice, copy);
    if (inSlice === undefined) continue;
    for (const n of [inSlice.senseKey, inSlice.asc, inSlice.ascq]) {
      assert.ok(Number.isInteger(n) && n >= 0 && n <= 0xff);
    }
    if (inSlice.information !== undefined) {
      assert.ok(Number.isSafeInteger(inSlice.information));
    }
    assert.equal(typeof inSlice.description, 'string');
    assert.equal(inSlice.raw.length, length);
  }
});

test('encodeFixedSense: byte layout and round trip', () => {
  assert.deepEqual(
    [...encodeFixedSense(SenseKey.ILLEGAL_REQUEST, ...Asc.LBA_OUT_OF_RANGE)],
    [...hex('70 00 05 00 00 00 00 0a 00 00 00 00 21 00 00 00 00 00')],
  );
  assert.deepEqual(
    [...encodeFixedSense(SenseKey.MEDIUM_ERROR, ...Asc.UNRECOVERED_READ_ERROR, 0x1234)],
    [...hex('f0 00 03 00 00 12 34 0a 00 00 00 00 11 00 00 00 00 00')],
  );
  assert.equal(encodeFixedSense(0, 0, 0).length, FIXED_SENSE_BYTES);
  for (const [key, asc, ascq, information] of [
    [SenseKey.NOT_READY, 0x04, 0x01, undefined],
    [SenseKey.MEDIUM_ERROR, 0x11, 0x00, 0],
    [SenseKey.ILLEGAL_REQUEST, 0x24, 0x00, undefined],
    [SenseKey.UNIT_ATTENTION, 0x2a, 0x09, undefined],
    [SenseKey.DATA_PROTECT, 0x27, 0x00, 0xffff_ffff],
    [SenseKey.ABORTED_COMMAND, 0x44, 0x00, 123456],
    [SenseKey.MISCOMPARE, 0x1d, 0x00, 7],
  ] as const) {
    const info = decodeSense(encodeFixedSense(key, asc, ascq, information));
    assert.ok(info);
    assert.equal(info.senseKey, key);
    assert.equal(info.asc, asc);
    assert.equal(info.ascq, ascq);
    assert.equal(info.information, information);
    assert.equal(info.description, ascDescription(asc, ascq));
  }
});

test('encodeFixedSense: information the 4-byte field cannot hold is left out, not truncated', () => {
  for (const information of [0x1_0000_0000, -1, 1.5]) {
    const bytes = encodeFixedSense(SenseKey.MEDIUM_ERROR, 0x11, 0x00, information);
    assert.equal(bytes[0], 0x70);
    assert.deepEqual([...bytes.subarray(3, 7)], [0, 0, 0, 0]);
    assert.equal(decodeSense(bytes)?.information, undefined);
  }
});

test('Asc: every named pair has its own text in the table', () => {
  for (const [name, [asc, ascq]] of Object.entries(Asc)) {
    const text = ascDescription(asc, ascq);
    assert.doesNotMatch(text, /^(vendor specific )?additional sense 0x|\(ASCQ 0x/, name);
  }
  // The names code already uses keep their values.
  assert.deepEqual(
    { ...Asc },
    {
      ...Asc,
      NO_ADDITIONAL_SENSE: [0x00, 0x00],
      LUN_NOT_READY_BECOMING_READY: [0x04, 0x01],
      WRITE_ERROR: [0x0c, 0x00],
      UNRECOVERED_READ_ERROR: [0x11, 0x00],
      PARAMETER_LIST_LENGTH_ERROR: [0x1a, 0x00],
      INVALID_COMMAND_OPERATION_CODE: [0x20, 0x00],
      LBA_OUT_OF_RANGE: [0x21, 0x00],
      INVALID_FIELD_IN_CDB: [0x24, 0x00],
      LOGICAL_UNIT_NOT_SUPPORTED: [0x25, 0x00],
      INVALID_FIELD_IN_PARAMETER_LIST: [0x26, 0x00],
      WRITE_PROTECTED: [0x27, 0x00],
      POWER_ON_RESET_OR_BUS_DEVICE_RESET: [0x29, 0x00],
      PARAMETERS_CHANGED: [0x2a, 0x00],
      CAPACITY_DATA_HAS_CHANGED: [0x2a, 0x09],
      REPORTED_LUNS_DATA_HAS_CHANGED: [0x3f, 0x0e],
      INTERNAL_TARGET_FAILURE: [0x44, 0x00],
    },
  );
  assert.ok(Object.isFrozen(Asc));
});

test('ascDescription: exact, family and unknown pairs', () => {
  assert.equal(ascDescription(0x3a, 0x00), 'Medium not present');
  assert.equal(ascDescription(0x3a, 0x02), 'Medium not present (ASCQ 0x02)');
  assert.equal(ascDescription(0x29, 0x06), 'Power on or reset occurred (ASCQ 0x06)');
  assert.equal(ascDescription(0x11, 0x13), 'Unrecovered read error (ASCQ 0x13)');
  // A qualifier the table lacks never borrows a sibling's specific text.
  assert.doesNotMatch(ascDescription(0x04, 0x20), /becoming ready/);
  assert.equal(ascDescription(0x24, 0x01), 'additional sense 0x24/0x01');
  assert.equal(ascDescription(0x7e, 0x00), 'additional sense 0x7e/0x00');
  assert.equal(ascDescription(0x44, 0x81), 'vendor specific additional sense 0x44/0x81');
});

test('isRetryableSense', () => {
  const table: [string, number, number, number, boolean][] = [
    ['UA power on/reset', SenseKey.UNIT_ATTENTION, 0x29, 0x00, true],
    ['UA I_T nexus loss', SenseKey.UNIT_ATTENTION, 0x29, 0x07, true],
    ['UA parameters changed', SenseKey.UNIT_ATTENTION, 0x2a, 0x00, true],
    ['UA capacity changed', SenseKey.UNIT_ATTENTION, 0x2a, 0x09, true],
    ['UA reported LUNs changed', SenseKey.UNIT_ATTENTION, 0x3f, 0x0e, true],
    ['UA vendor specific', SenseKey.UNIT_ATTENTION, 0x80, 0x00, true],
    ['NOT READY becoming ready', SenseKey.NOT_READY, 0x04, 0x01, true],
    ['NOT READY ALUA transition', SenseKey.NOT_READY, 0x04, 0x0a, true],
    ['NOT READY cause not reportable', SenseKey.NOT_READY, 0x04, 0x00, false],
    ['NOT READY initializing command required', SenseKey.NOT_READY, 0x04, 0x02, false],
    ['NOT READY manual intervention', SenseKey.NOT_READY, 0x04, 0x03, false],
    ['NOT READY format in progress', SenseKey.NOT_READY, 0x04, 0x04, false],
    ['NOT READY medium not present', SenseKey.NOT_READY, 0x3a, 0x00, false],
    ['ABORTED data phase CRC', SenseKey.ABORTED_COMMAND, 0x47, 0x01, true],
    ['ABORTED data phase error', SenseKey.ABORTED_COMMAND, 0x4b, 0x00, true],
    ['ABORTED no additional sense', SenseKey.ABORTED_COMMAND, 0x00, 0x00, true],
    ['ABORTED commands cleared', SenseKey.ABORTED_COMMAND, 0x2f, 0x00, true],
    ['ABORTED guard check', SenseKey.ABORTED_COMMAND, 0x10, 0x01, false],
    ['ABORTED app tag check', SenseKey.ABORTED_COMMAND, 0x10, 0x02, false],
    ['ABORTED ref tag check', SenseKey.ABORTED_COMMAND, 0x10, 0x03, false],
    ['NO SENSE', SenseKey.NO_SENSE, 0x00, 0x00, false],
    ['RECOVERED ERROR', SenseKey.RECOVERED_ERROR, 0x18, 0x00, false],
    ['MEDIUM ERROR read', SenseKey.MEDIUM_ERROR, 0x11, 0x00, false],
    ['MEDIUM ERROR write', SenseKey.MEDIUM_ERROR, 0x0c, 0x00, false],
    ['HARDWARE ERROR', SenseKey.HARDWARE_ERROR, 0x44, 0x00, false],
    ['ILLEGAL REQUEST LBA', SenseKey.ILLEGAL_REQUEST, 0x21, 0x00, false],
    ['ILLEGAL REQUEST CDB', SenseKey.ILLEGAL_REQUEST, 0x24, 0x00, false],
    ['DATA PROTECT', SenseKey.DATA_PROTECT, 0x27, 0x00, false],
    ['MISCOMPARE', SenseKey.MISCOMPARE, 0x1d, 0x00, false],
  ];
  for (const [name, senseKey, asc, ascq, retry] of table) {
    assert.equal(isRetryableSense({ senseKey, asc, ascq }), retry, name);
  }
  // It takes a decoded sense as it is.
  const ua = decodeSense(hex('70 00 06 00 00 00 00 0a 00 00 00 00 29 00 00 00 00 00'))!;
  assert.equal(isRetryableSense(ua), true);
  const lba = decodeSense(hex('72 05 21 00 00 00 00 00'))!;
  assert.equal(isRetryableSense(lba), false);
});

test('ScsiSenseError from decoded sense: message and fields', () => {
  const bytes = hex('f0 00 05 00 00 10 00 0a 00 00 00 00 21 00 00 00 00 00');
  const info = decodeSense(bytes)!;
  const error = new ScsiSenseError('READ(16)', info, 2097152);
  assert.ok(error instanceof VhostUserError);
  assert.ok(error instanceof Error);
  assert.equal(error.code, 'VHOST_USER_ERR_SCSI_SENSE');
  assert.match(error.message, /ILLEGAL REQUEST/);
  assert.match(error.message, /Logical block address out of range/);
  assert.match(error.message, /21\/00/);
  assert.match(error.message, /^READ\(16\) at 2097152: /);
  assert.equal(error.operation, 'READ(16)');
  assert.equal(error.position, 2097152);
  assert.equal(error.senseKey, SenseKey.ILLEGAL_REQUEST);
  assert.equal(error.senseKeyName, 'ILLEGAL REQUEST');
  assert.equal(error.asc, 0x21);
  assert.equal(error.ascq, 0x00);
  assert.equal(error.description, 'Logical block address out of range');
  assert.equal(error.information, 0x1000);
  assert.deepEqual([...error.raw], [...bytes]);

  const ua = new ScsiSenseError('TEST UNIT READY', decodeSense(hex('72 06 2a 09 00 00 00 00'))!);
  assert.equal(ua.position, undefined);
  assert.equal(
    ua.message,
    'TEST UNIT READY: UNIT ATTENTION: Capacity data has changed (ASC/ASCQ 2a/09)',
  );
  assert.equal(isRetryableSense(ua), true);
});
