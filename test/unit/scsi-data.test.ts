import { test } from 'node:test';
import assert from 'node:assert/strict';
import { OutOfRangeError } from '../../src/errors.js';
import { lbaRange } from '../../src/devices/scsi/cdb.js';
import {
  ASSOCIATION_LOGICAL_UNIT,
  CODE_SET_ASCII,
  CODE_SET_BINARY,
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
  decodeUnmapParameters,
  decodeVpdPage,
  DesignatorType,
  designatorText,
  encodeBlockLimits,
  encodeDeviceIdentification,
  encodeModeSense,
  encodeProvisioning,
  encodeReadCapacity10,
  encodeReadCapacity16,
  encodeReportLuns,
  encodeStandardInquiry,
  encodeUnmapParameters,
  encodeVpdPage,
  INQUIRY_NO_LUN,
  READ_CAPACITY_10_OVERFLOW,
  READ_CAPACITY_16_BYTES,
  reportLunsLength,
  STANDARD_INQUIRY_BYTES,
  UNMAP_DESCRIPTOR_BYTES,
  UNMAP_HEADER_BYTES,
  VpdPage,
  vpdPageLength,
  type BlockLimitsVpd,
} from '../../src/devices/scsi/data.js';
import {
  decodeVirtioLun,
  encodeVirtioLun,
  LUN_BYTES,
  VIRTIO_SCSI_MAX_LUN,
  VIRTIO_SCSI_MAX_TARGET,
  VirtioScsiCmdReqHeader,
  VirtioScsiCmdRespHeader,
  VirtioScsiConfig,
  VirtioScsiCtrlTmfReq,
  VirtioScsiEvent,
} from '../../src/devices/scsi/spec.js';

function hex(text: string): number[] {
  const t = text.trim();
  return t === '' ? [] : t.split(/\s+/).map((p) => parseInt(p, 16));
}

function ascii(text: string): number[] {
  return [...Buffer.from(text, 'latin1')];
}

function bytes(...parts: number[][]): Uint8Array {
  return Uint8Array.from(parts.flat());
}

function zeros(n: number): number[] {
  return new Array<number>(n).fill(0);
}

test('standard INQUIRY from a QEMU scsi-hd: space padding trimmed', () => {
  const data = bytes(
    hex('00 00 05 12 1f 00 00 12'),
    ascii('QEMU    '),
    ascii('QEMU HARDDISK   '),
    ascii('2.5+'),
  );
  assert.deepEqual(decodeStandardInquiry(data), {
    peripheralQualifier: 0,
    deviceType: 0,
    removable: false,
    version: 5,
    commandQueueing: true,
    vendor: 'QEMU',
    product: 'QEMU HARDDISK',
    revision: '2.5+',
  });
});

test('standard INQUIRY from an SPDK-like target, NUL padding, removable, no CMDQUE', () => {
  const data = bytes(
    hex('00 80 06 02 1f 00 00 00'),
    ascii('INTEL\0\0\0'),
    ascii('Malloc disk\0\0\0\0\0'),
    ascii('0001'),
  );
  const inq = decodeStandardInquiry(data);
  assert.equal(inq.vendor, 'INTEL');
  assert.equal(inq.product, 'Malloc disk');
  assert.equal(inq.revision, '0001');
  assert.equal(inq.removable, true);
  assert.equal(inq.commandQueueing, false);
  assert.equal(inq.version, 6);
});

test('standard INQUIRY: no LU at this LUN, and truncated data', () => {
  const none = decodeStandardInquiry(bytes(hex('7f 00 05 12 1f 00 00 00'), zeros(28)));
  assert.equal(none.peripheralQualifier, 3);
  assert.equal(none.deviceType, 0x1f);
  assert.equal(INQUIRY_NO_LUN, 0x7f);
  // Cut inside the product: what is there is decoded, the rest is empty.
  const cut = decodeStandardInquiry(bytes(hex('00 00 05 12 1f 00 00 02'), ascii('QEMU    QEMU')));
  assert.equal(cut.vendor, 'QEMU');
  assert.equal(cut.product, 'QEMU');
  assert.equal(cut.revision, '');
  assert.equal(decodeStandardInquiry(new Uint8Array(0)).peripheralQualifier, 3);
});

test('standard INQUIRY: encode/decode round trip and byte layout', () => {
  const data = encodeStandardInquiry({ vendor: 'VHOST', product: 'Embedded disk', revision: '1' });
  assert.equal(data.length, STANDARD_INQUIRY_BYTES);
  assert.deepEqual([...data.subarray(0, 8)], hex('00 00 06 12 1f 00 00 02'));
  assert.deepEqual([...data.subarray(8, 36)], ascii('VHOST   Embedded disk   1   '));
  assert.deepEqual(decodeStandardInquiry(data), {
    peripheralQualifier: 0,
    deviceType: 0,
    removable: false,
    version: 6,
    commandQueueing: true,
    vendor: 'VHOST',
    product: 'Embedded disk',
    revision: '1',
  });
  // Over-long fields are cut to the field width.
  const long = decodeStandardInquiry(
    encodeStandardInquiry({ vendor: 'ABCDEFGHIJ', product: 'x'.repeat(20), revision: '123456' }),
  );
  assert.equal(long.vendor, 'ABCDEFGH');
  assert.equal(long.product, 'x'.repeat(16));
  assert.equal(long.revision, '1234');
});

test('VPD 0x00 supported pages and 0x80 unit serial number', () => {
  const pages = bytes(hex('00 00 00 05 00 80 83 b0 b2'));
  assert.deepEqual(decodeSupportedPages(pages), [0x00, 0x80, 0x83, 0xb0, 0xb2]);
  assert.equal(vpdPageLength(pages), 9);
  // Page length larger than what came back: the caller re-asks with vpdPageLength bytes.
  assert.deepEqual(decodeSupportedPages(bytes(hex('00 00 00 08 00 80 83'))), [0x00, 0x80, 0x83]);
  assert.equal(vpdPageLength(bytes(hex('00 00 00 08 00 80 83'))), 12);
  const serial = bytes(hex('00 80 00 0c'), ascii('  SN12345678'));
  assert.equal(decodeUnitSerialNumber(serial), 'SN12345678');
  assert.equal(decodeVpdPage(serial).page, VpdPage.UNIT_SERIAL_NUMBER);
  assert.equal(vpdPageLength(new Uint8Array(3)), 0);
});

test('VPD 0x83 device identification: NAA binary, T10 ASCII, a target-port designator', () => {
  const naa = hex('60 01 40 5f 2c 3e 4e 8a 9b 1c 00 00 00 00 00 01');
  const t10 = ascii('LIO-ORG disk0:0c8f4c6d');
  const page = bytes(
    hex('00 83 00'),
    [4 + 16 + 4 + t10.length + 8],
    // Relative target port (SAS protocol 6, PIV, association 1 = target port, type 4).
    hex('61 94 00 04 00 00 00 01'),
    hex('01 03 00 10'),
    naa,
    hex('02 01 00'),
    [t10.length],
    t10,
  );
  const designators = decodeDeviceIdentification(page);
  assert.equal(designators.length, 3);
  assert.deepEqual(
    designators.map((d) => [d.codeSet, d.association, d.type, d.value.length]),
    [
      [CODE_SET_BINARY, 1, 4, 4],
      [CODE_SET_BINARY, ASSOCIATION_LOGICAL_UNIT, DesignatorType.NAA, 16],
      [CODE_SET_ASCII, ASSOCIATION_LOGICAL_UNIT, DesignatorType.T10_VENDOR_ID, t10.length],
    ],
  );
  assert.deepEqual([...designators[1]!.value], naa);
  assert.equal(designatorText(designators), '6001405f2c3e4e8a9b1c000000000001');
  // Without the NAA designator the T10 vendor id is the LU's name.
  assert.equal(
    designatorText(designators.filter((d) => d.type !== DesignatorType.NAA)),
    'LIO-ORG disk0:0c8f4c6d',
  );
  // Only a port designator: no LU name.
  assert.equal(designatorText(designators.slice(0, 1)), undefined);
  // A designator whose length runs past the page ends the list.
  const cut = bytes(hex('00 83 00 0c'), hex('01 03 00 10'), naa.slice(0, 8));
  assert.deepEqual(decodeDeviceIdentification(cut), []);
  // Round trip.
  const again = decodeDeviceIdentification(encodeDeviceIdentification(designators));
  assert.deepEqual(
    again.map((d) => [d.codeSet, d.association, d.type, [...d.value]]),
    designators.map((d) => [d.codeSet, d.association, d.type, [...d.value]]),
  );
});

test('VPD 0xB0 block limits: a full SBC-3 page', () => {
  const page = bytes(
    hex('00 b0 00 3c'),
    hex('00 00 00 08'), // WSNZ, MAX COMPARE AND WRITE, OPTIMAL TRANSFER LENGTH GRANULARITY
    hex('00 00 40 00'), // MAXIMUM TRANSFER LENGTH
    hex('00 00 00 80'), // OPTIMAL TRANSFER LENGTH
    hex('00 00 00 00'), // MAXIMUM PREFETCH LENGTH
    hex('ff ff ff ff'), // MAXIMUM UNMAP LBA COUNT
    hex('00 00 01 00'), // MAXIMUM UNMAP BLOCK DESCRIPTOR COUNT
    hex('00 00 00 08'), // OPTIMAL UNMAP GRANULARITY
    hex('80 00 00 00'), // UGAVALID, alignment
    hex('00 00 00 00 00 40 00 00'), // MAXIMUM WRITE SAME LENGTH
    zeros(20),
  );
  assert.equal(page.length, 0x40);
  const limits = decodeBlockLimits(page);
  assert.deepEqual(limits, {
    maxTransferBlocks: 0x4000,
    optimalTransferBlocks: 0x80,
    maxUnmapBlocks: 0xffff_ffff,
    maxUnmapDescriptors: 0x100,
    optimalUnmapGranularity: 8,
    maxWriteSameBlocks: 0x40_0000,
  });
  const encoded = encodeBlockLimits(limits);
  assert.equal(encoded.length, 0x40);
  assert.deepEqual(decodeBlockLimits(encoded), limits);
  assert.deepEqual([...encoded.subarray(0, 4)], hex('00 b0 00 3c'));
});

test('VPD 0xB0 block limits: a short (SBC-2 era) page reports no unmap limits', () => {
  const page = bytes(hex('00 b0 00 0c'), hex('00 00 00 00 00 00 08 00 00 00 01 00'));
  assert.deepEqual(decodeBlockLimits(page), {
    maxTransferBlocks: 0x800,
    optimalTransferBlocks: 0x100,
    maxUnmapBlocks: 0,
    maxUnmapDescriptors: 0,
    optimalUnmapGranularity: 0,
    maxWriteSameBlocks: 0,
  } satisfies BlockLimitsVpd);
});

test('VPD 0xB2 logical block provisioning', () => {
  assert.deepEqual(decodeProvisioning(bytes(hex('00 b2 00 04 00 c4 02 00'))), {
    unmap: true,
    writeSameUnmap: true,
    readsZeroes: true,
  });
  // LBPWS10 (0x20), ANC_SUP, DP bits do not count as LBPU/LBPWS/LBPRZ.
  assert.deepEqual(decodeProvisioning(bytes(hex('00 b2 00 04 00 23 01 00'))), {
    unmap: false,
    writeSameUnmap: false,
    readsZeroes: false,
  });
  assert.deepEqual(decodeProvisioning(bytes(hex('00 b2 00 00'))), {
    unmap: false,
    writeSameUnmap: false,
    readsZeroes: false,
  });
  const encoded = encodeProvisioning({ unmap: true, writeSameUnmap: false, readsZeroes: true });
  assert.deepEqual([...encoded], hex('00 b2 00 04 00 84 02 00'));
  assert.deepEqual(decodeProvisioning(encoded), {
    unmap: true,
    writeSameUnmap: false,
    readsZeroes: true,
  });
});

test('encodeVpdPage', () => {
  assert.deepEqual(
    [...encodeVpdPage(0x80, Uint8Array.from(ascii('abc')))],
    [0, 0x80, 0, 3, ...ascii('abc')],
  );
});

test('READ CAPACITY(10): 2 GiB disk, and the overflow value for disks past 2 TiB', () => {
  assert.deepEqual(decodeReadCapacity10(bytes(hex('00 3f ff ff 00 00 02 00'))), {
    blocks: 0x40_0000,
    blockLength: 512,
    provisioning: false,
    readsZeroes: false,
  });
  const overflow = bytes(hex('ff ff ff ff 00 00 02 00'));
  assert.equal(decodeReadCapacity10(overflow).blocks, READ_CAPACITY_10_OVERFLOW + 1);
  assert.deepEqual([...encodeReadCapacity10(2 ** 33, 512)], [...overflow]);
  assert.deepEqual([...encodeReadCapacity10(0x1_0000_0000, 4096)], hex('ff ff ff ff 00 00 10 00'));
  assert.deepEqual([...encodeReadCapacity10(0xffff_ffff, 4096)], hex('ff ff ff fe 00 00 10 00'));
  assert.deepEqual(decodeReadCapacity10(encodeReadCapacity10(2048, 4096)), {
    blocks: 2048,
    blockLength: 4096,
    provisioning: false,
    readsZeroes: false,
  });
});

test('READ CAPACITY(16): 5 TiB thin LU with LBPME and LBPRZ', () => {
  const data = bytes(
    hex('00 00 00 02 7f ff ff ff'),
    hex('00 00 02 00'),
    hex('00 03 c0 00'),
    zeros(16),
  );
  assert.equal(data.length, READ_CAPACITY_16_BYTES);
  const cap = decodeReadCapacity16(data);
  assert.deepEqual(cap, {
    blocks: 0x2_8000_0000,
    blockLength: 512,
    provisioning: true,
    readsZeroes: true,
  });
  const encoded = encodeReadCapacity16(cap);
  assert.deepEqual(
    [...encoded.subarray(0, 16)],
    hex('00 00 00 02 7f ff ff ff 00 00 02 00 00 00 c0 00'),
  );
  assert.deepEqual(decodeReadCapacity16(encoded), cap);
  // LBPME only, LALBA bits beside it do not count.
  assert.deepEqual(
    decodeReadCapacity16(bytes(hex('00 00 00 00 00 00 ff ff 00 00 10 00 00 00 80 01'), zeros(16))),
    { blocks: 0x1_0000, blockLength: 4096, provisioning: true, readsZeroes: false },
  );
  const fat = { blocks: 2 ** 40, blockLength: 4096, provisioning: false, readsZeroes: false };
  assert.deepEqual(decodeReadCapacity16(encodeReadCapacity16(fat)), fat);
});

test('REPORT LUNS: peripheral and flat addressing; other methods skipped', () => {
  const data = bytes(
    hex('00 00 00 30 00 00 00 00'),
    hex('00 00 00 00 00 00 00 00'), // LUN 0, peripheral
    hex('00 01 00 00 00 00 00 00'), // LUN 1, peripheral
    hex('41 2c 00 00 00 00 00 00'), // LUN 300, flat space
    hex('7f ff 00 00 00 00 00 00'), // LUN 16383, flat space
    hex('01 05 00 00 00 00 00 00'), // peripheral with bus 1: not this target's LUN space
    hex('c1 00 00 00 00 00 00 00'), // extended addressing
  );
  assert.deepEqual(decodeReportLuns(data), [0, 1, 300, 16383]);
  assert.equal(reportLunsLength(data), 56);
  // Allocation length cut the list: the complete entries that came back.
  const cut = bytes(
    hex('00 00 01 00 00 00 00 00'),
    hex('00 00 00 00 00 00 00 00'),
    hex('00 02 00'),
  );
  assert.deepEqual(decodeReportLuns(cut), [0]);
  assert.equal(reportLunsLength(cut), 8 + 256);
  assert.deepEqual(decodeReportLuns(new Uint8Array(2)), []);

  const luns = [0, 5, 255, 256, 300, 16383];
  const encoded = encodeReportLuns(luns);
  assert.deepEqual([...encoded.subarray(0, 8)], hex('00 00 00 30 00 00 00 00'));
  assert.deepEqual([...encoded.subarray(8 + 8 * 4, 8 + 8 * 5)], hex('41 2c 00 00 00 00 00 00'));
  assert.deepEqual(decodeReportLuns(encoded), luns);
});

const CACHING_WCE = hex('08 12 04 00 ff ff 00 00 ff ff ff ff 80 14 00 00 00 00 00 00');
const CACHING_NO_WCE = hex('08 12 00 00 ff ff 00 00 ff ff ff ff 80 14 00 00 00 00 00 00');

test('MODE SENSE(6): WP bit and caching page WCE', () => {
  const data = bytes(hex('17 00 80 00'), CACHING_WCE);
  assert.deepEqual(decodeModeSense(data, false), { writeProtect: true, writeCache: true });
  // With an 8-byte block descriptor before the page, and the PS bit set on the page.
  const withBd = bytes(hex('1f 00 00 08'), hex('00 00 00 00 00 00 02 00'), [
    0x88,
    ...CACHING_NO_WCE.slice(1),
  ]);
  assert.deepEqual(decodeModeSense(withBd, false), { writeProtect: false, writeCache: false });
  // Header only (page not returned).
  assert.deepEqual(decodeModeSense(bytes(hex('03 00 80 00')), false), {
    writeProtect: true,
    writeCache: undefined,
  });
});

test('MODE SENSE(10): WP bit and caching page WCE, after other pages', () => {
  const data = bytes(
    hex('00 26 00 00 00 00 00 00'),
    // Read-write error recovery page first (page 0x01, 10 bytes).
    hex('01 0a c0 00 00 00 00 00 00 00 00 00'),
    CACHING_WCE,
  );
  assert.equal(data.length, 0x26 + 2);
  assert.deepEqual(decodeModeSense(data, true), { writeProtect: false, writeCache: true });
  const wp = bytes(hex('00 1a 00 80 00 00 00 00'), CACHING_NO_WCE);
  assert.deepEqual(decodeModeSense(wp, true), { writeProtect: true, writeCache: false });
});

test('MODE SENSE: a sub_page format page is skipped by its 2-byte length', () => {
  // Control extension page (0x0a/0x01, SPF) whose byte 2 would look like WCE if misread, with a
  // 16-bit page length of 0x1c, then the caching page.
  const controlExt = [0x4a, 0x01, 0x00, 0x1c, ...zeros(0x1c)];
  controlExt[4] = 0x04;
  const data = bytes(hex('00 00 00 00 00 00 00 00'), controlExt, CACHING_NO_WCE);
  data[1] = data.length - 2;
  assert.deepEqual(decodeModeSense(data, true), { writeProtect: false, writeCache: false });
  // A sub_page format page for 0x08 is not the caching page.
  const sub = bytes(hex('00 00 00 00 00 00 00 00'), hex('48 01 00 02 04 00'));
  sub[1] = sub.length - 2;
  assert.deepEqual(decodeModeSense(sub, true), { writeProtect: false, writeCache: undefined });
});

test('MODE SENSE: the MODE DATA LENGTH bounds the pages, truncation does not throw', () => {
  // MODE DATA LENGTH says 3 (header only), later bytes are stale buffer content.
  assert.equal(
    decodeModeSense(bytes(hex('03 00 00 00'), CACHING_WCE), false).writeCache,
    undefined,
  );
  // Cut inside the caching page header.
  assert.equal(decodeModeSense(bytes(hex('17 00 00 00 08')), false).writeCache, undefined);
  for (const n of [0, 1, 2, 5, 9]) {
    assert.doesNotThrow(() => decodeModeSense(new Uint8Array(n).fill(0xff), true));
    assert.doesNotThrow(() => decodeModeSense(new Uint8Array(n).fill(0xff), false));
  }
});

test('MODE SENSE: encode/decode round trips', () => {
  for (const ten of [false, true]) {
    for (const writeProtect of [false, true]) {
      for (const writeCache of [undefined, false, true]) {
        const data = encodeModeSense(ten, writeProtect, writeCache);
        assert.deepEqual(decodeModeSense(data, ten), { writeProtect, writeCache });
      }
    }
  }
  assert.deepEqual([...encodeModeSense(false, true, undefined)], hex('03 00 80 00'));
  assert.deepEqual([...encodeModeSense(true, false, undefined)], hex('00 06 00 00 00 00 00 00'));
  const withPage = encodeModeSense(false, false, true);
  assert.deepEqual([...withPage.subarray(0, 7)], hex('17 00 00 00 08 12 04'));
});

test('UNMAP parameter list: encode/decode, and bad lengths', () => {
  const out = new Uint8Array(40).fill(0xaa);
  const length = encodeUnmapParameters(out, 4, lbaRange(0x1_0000_0000, 0x800));
  assert.equal(length, UNMAP_HEADER_BYTES + UNMAP_DESCRIPTOR_BYTES);
  assert.deepEqual(
    [...out.subarray(4, 4 + length)],
    hex('00 16 00 10 00 00 00 00 00 00 00 01 00 00 00 00 00 00 08 00 00 00 00 00'),
  );
  assert.equal(out[3], 0xaa);
  assert.equal(out[4 + length], 0xaa);
  assert.deepEqual(decodeUnmapParameters(out.subarray(4, 4 + length)), [
    { lba: 0x1_0000_0000, blocks: 0x800 },
  ]);
  // Every byte of the LBA distinct: a swapped or shifted byte shows.
  encodeUnmapParameters(out, 4, lbaRange(0x12_3456_789a_bcde, 0x0102_0304));
  assert.deepEqual(
    [...out.subarray(12, 4 + length)],
    hex('00 12 34 56 78 9a bc de 01 02 03 04 00 00 00 00'),
  );

  // Two descriptors as Linux sends them.
  const two = bytes(
    hex('00 26 00 20 00 00 00 00'),
    hex('00 00 00 00 00 00 00 00 00 00 00 08 00 00 00 00'),
    hex('00 00 00 00 00 00 10 00 ff ff ff ff 00 00 00 00'),
  );
  assert.deepEqual(decodeUnmapParameters(two), [
    { lba: 0, blocks: 8 },
    { lba: 0x1000, blocks: 0xffff_ffff },
  ]);

  assert.deepEqual(decodeUnmapParameters(new Uint8Array(0)), []);
  assert.deepEqual(decodeUnmapParameters(bytes(hex('00 06 00 00 00 00 00 00'))), []);
  // Shorter than the header.
  assert.equal(decodeUnmapParameters(bytes(hex('00 06 00 10'))), undefined);
  // Descriptor data length not a multiple of 16.
  assert.equal(decodeUnmapParameters(bytes(hex('00 15 00 0f 00 00 00 00'), zeros(15))), undefined);
  // Descriptor data length beyond the data sent.
  assert.equal(decodeUnmapParameters(bytes(hex('00 26 00 20 00 00 00 00'), zeros(16))), undefined);
});

test('virtio-scsi LUN: target 1 LUN 300 is 01 01 41 2c 00 00 00 00', () => {
  const out = new Uint8Array(LUN_BYTES + 2).fill(0xaa);
  encodeVirtioLun(out, 1, 1, 300);
  assert.deepEqual([...out.subarray(1, 1 + LUN_BYTES)], hex('01 01 41 2c 00 00 00 00'));
  assert.equal(out[0], 0xaa);
  assert.equal(out[LUN_BYTES + 1], 0xaa);
  assert.deepEqual(decodeVirtioLun(out, 1), { target: 1, lun: 300 });
  for (const [target, lun] of [
    [0, 0],
    [0, 255],
    [3, 256],
    [VIRTIO_SCSI_MAX_TARGET, VIRTIO_SCSI_MAX_LUN],
  ] as const) {
    const lunBytes = new Uint8Array(LUN_BYTES);
    encodeVirtioLun(lunBytes, 0, target, lun);
    assert.deepEqual(decodeVirtioLun(lunBytes, 0), { target, lun });
  }
  // What Linux's virtio_scsi sends for LUN 0: flat addressing 0x40 00.
  assert.deepEqual(decodeVirtioLun(Uint8Array.from(hex('01 00 40 00 00 00 00 00')), 0), {
    target: 0,
    lun: 0,
  });
  // Peripheral addressing.
  assert.deepEqual(decodeVirtioLun(Uint8Array.from(hex('01 02 00 05 00 00 00 00')), 0), {
    target: 2,
    lun: 5,
  });
  assert.equal(decodeVirtioLun(Uint8Array.from(hex('00 01 40 00 00 00 00 00')), 0), undefined);
  assert.equal(decodeVirtioLun(Uint8Array.from(hex('01 01 c1 00 00 00 00 00')), 0), undefined);
  assert.equal(decodeVirtioLun(Uint8Array.from(hex('01 01 01 05 00 00 00 00')), 0), undefined);
});

test('virtio-scsi LUN: a target or LUN the field cannot hold is refused', () => {
  const out = new Uint8Array(LUN_BYTES);
  assert.throws(() => encodeVirtioLun(out, 0, 256, 0), OutOfRangeError);
  assert.throws(() => encodeVirtioLun(out, 0, -1, 0), OutOfRangeError);
  assert.throws(() => encodeVirtioLun(out, 0, 0, VIRTIO_SCSI_MAX_LUN + 1), OutOfRangeError);
  assert.throws(() => encodeVirtioLun(out, 0, 0, 1.5), OutOfRangeError);
});

test('virtio-scsi struct layouts (virtio spec, SCSI Host Device)', () => {
  const layout = (fields: Record<string, { offset: number; size: number }>) =>
    Object.fromEntries(Object.entries(fields).map(([k, f]) => [k, [f.offset, f.size]]));
  assert.equal(VirtioScsiConfig.size, 36);
  assert.deepEqual(layout(VirtioScsiConfig.fields), {
    numQueues: [0, 4],
    segMax: [4, 4],
    maxSectors: [8, 4],
    cmdPerLun: [12, 4],
    eventInfoSize: [16, 4],
    senseSize: [20, 4],
    cdbSize: [24, 4],
    maxChannel: [28, 2],
    maxTarget: [30, 2],
    maxLun: [32, 4],
  });
  assert.equal(VirtioScsiCmdReqHeader.size, 19);
  assert.deepEqual(layout(VirtioScsiCmdReqHeader.fields), {
    id: [8, 8],
    taskAttr: [16, 1],
    prio: [17, 1],
    crn: [18, 1],
  });
  assert.equal(VirtioScsiCmdRespHeader.size, 12);
  assert.deepEqual(layout(VirtioScsiCmdRespHeader.fields), {
    senseLen: [0, 4],
    resid: [4, 4],
    statusQualifier: [8, 2],
    status: [10, 1],
    response: [11, 1],
  });
  assert.equal(VirtioScsiCtrlTmfReq.size, 24);
  assert.equal(VirtioScsiEvent.size, 16);
  assert.deepEqual(layout(VirtioScsiEvent.fields), { event: [0, 4], reason: [12, 4] });
});
