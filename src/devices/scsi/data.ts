/**
 * SCSI parameter data (SPC-4 / SBC-3): what INQUIRY, READ CAPACITY, REPORT LUNS and MODE SENSE
 * return, and the UNMAP parameter list. Each format has its encoder (for the embedded target) and
 * decoder (for the frontend) side by side, so both read the same offsets. Big-endian throughout.
 */

import { BLOCKS_AT, getBE, MODE_PAGE_CACHING, putBE, putLba, type LbaRange } from './cdb.js';

/** Peripheral device types this library names. */
export const SCSI_TYPE_DISK = 0x00;
/** Peripheral qualifier 3 with type 0x1f: "no logical unit here" (SPC-4, 6.6.2). */
export const INQUIRY_NO_LUN = 0x7f;

/** VPD page codes. */
export const VpdPage = {
  SUPPORTED_PAGES: 0x00,
  UNIT_SERIAL_NUMBER: 0x80,
  DEVICE_IDENTIFICATION: 0x83,
  BLOCK_LIMITS: 0xb0,
  LOGICAL_BLOCK_PROVISIONING: 0xb2,
} as const;

export const STANDARD_INQUIRY_BYTES = 36;

export interface StandardInquiry {
  /** 0 = a logical unit is connected; 1 = supported but not connected; 3 = none. */
  peripheralQualifier: number;
  deviceType: number;
  removable: boolean;
  /** VERSION: 6 = SPC-4. */
  version: number;
  /** CMDQUE: the unit queues commands. */
  commandQueueing: boolean;
  vendor: string;
  product: string;
  revision: string;
}

function ascii(bytes: Uint8Array, offset: number, length: number): string {
  const end = Math.min(bytes.length, offset + length);
  if (offset >= end) return '';
  // SPC pads ASCII fields with spaces; some targets pad with NULs.
  return Buffer.from(bytes.subarray(offset, end))
    .toString('latin1')
    .replace(/[\0 ]+$/, '')
    .replace(/^[\0 ]+/, '');
}

function putAscii(out: Uint8Array, offset: number, length: number, text: string): void {
  const padded = text.slice(0, length).padEnd(length, ' ');
  for (let i = 0; i < length; i++) out[offset + i] = padded.charCodeAt(i) & 0x7f;
}

export function decodeStandardInquiry(bytes: Uint8Array): StandardInquiry {
  const b0 = bytes[0] ?? INQUIRY_NO_LUN;
  return {
    peripheralQualifier: b0 >> 5,
    deviceType: b0 & 0x1f,
    removable: ((bytes[1] ?? 0) & 0x80) !== 0,
    version: bytes[2] ?? 0,
    commandQueueing: ((bytes[7] ?? 0) & 0x02) !== 0,
    vendor: ascii(bytes, 8, 8),
    product: ascii(bytes, 16, 16),
    revision: ascii(bytes, 32, 4),
  };
}

export function encodeStandardInquiry(fields: {
  peripheralQualifier?: number;
  deviceType?: number;
  vendor: string;
  product: string;
  revision: string;
}): Uint8Array {
  const out = new Uint8Array(STANDARD_INQUIRY_BYTES);
  out[0] = ((fields.peripheralQualifier ?? 0) << 5) | (fields.deviceType ?? SCSI_TYPE_DISK);
  out[2] = 0x06; // SPC-4
  out[3] = 0x12; // HISUP, response data format 2
  out[4] = STANDARD_INQUIRY_BYTES - 5;
  out[7] = 0x02; // CMDQUE
  putAscii(out, 8, 8, fields.vendor);
  putAscii(out, 16, 16, fields.product);
  putAscii(out, 32, 4, fields.revision);
  return out;
}

/** A VPD page: the page code from its header and the payload its PAGE LENGTH covers. */
export function decodeVpdPage(bytes: Uint8Array): { page: number; payload: Uint8Array } {
  const length = bytes.length >= 4 ? getBE(bytes, 2, 2) : 0;
  return { page: bytes[1] ?? 0, payload: bytes.subarray(4, Math.min(bytes.length, 4 + length)) };
}

/** The full length a VPD page says it has (header included), to re-ask with a larger buffer. */
export function vpdPageLength(bytes: Uint8Array): number {
  return bytes.length >= 4 ? 4 + getBE(bytes, 2, 2) : 0;
}

export function encodeVpdPage(
  page: number,
  payload: Uint8Array,
  deviceType = SCSI_TYPE_DISK,
): Uint8Array {
  const out = new Uint8Array(4 + payload.length);
  out[0] = deviceType;
  out[1] = page;
  putBE(out, 2, 2, payload.length);
  out.set(payload, 4);
  return out;
}

export function decodeSupportedPages(bytes: Uint8Array): number[] {
  return [...decodeVpdPage(bytes).payload];
}

export function decodeUnitSerialNumber(bytes: Uint8Array): string {
  const { payload } = decodeVpdPage(bytes);
  return ascii(payload, 0, payload.length);
}

/** Designator types (VPD 0x83) and code sets. */
export const DesignatorType = {
  VENDOR_SPECIFIC: 0,
  T10_VENDOR_ID: 1,
  EUI_64: 2,
  NAA: 3,
  SCSI_NAME_STRING: 8,
} as const;
export const CODE_SET_BINARY = 1;
export const CODE_SET_ASCII = 2;
export const CODE_SET_UTF8 = 3;
/** ASSOCIATION: the designator names the logical unit (not the port or the target). */
export const ASSOCIATION_LOGICAL_UNIT = 0;

export interface Designator {
  codeSet: number;
  association: number;
  type: number;
  value: Uint8Array;
}

export function decodeDeviceIdentification(bytes: Uint8Array): Designator[] {
  const { payload } = decodeVpdPage(bytes);
  const out: Designator[] = [];
  for (let at = 0; at + 4 <= payload.length;) {
    const length = payload[at + 3]!;
    if (at + 4 + length > payload.length) break;
    out.push({
      codeSet: payload[at]! & 0x0f,
      association: (payload[at + 1]! >> 4) & 0x03,
      type: payload[at + 1]! & 0x0f,
      value: payload.slice(at + 4, at + 4 + length),
    });
    at += 4 + length;
  }
  return out;
}

export function encodeDeviceIdentification(designators: readonly Designator[]): Uint8Array {
  const parts = designators.map((d) => {
    const part = new Uint8Array(4 + d.value.length);
    part[0] = d.codeSet & 0x0f;
    part[1] = ((d.association & 0x03) << 4) | (d.type & 0x0f);
    part[3] = d.value.length;
    part.set(d.value, 4);
    return part;
  });
  return encodeVpdPage(VpdPage.DEVICE_IDENTIFICATION, Buffer.concat(parts));
}

/**
 * The identifier a user would call the LUN's id: the first logical-unit designator, preferring
 * NAA, EUI-64, then the SCSI name and T10 vendor strings. Binary values are shown as hex.
 */
export function designatorText(designators: readonly Designator[]): string | undefined {
  const preference = [
    DesignatorType.NAA,
    DesignatorType.EUI_64,
    DesignatorType.SCSI_NAME_STRING,
    DesignatorType.T10_VENDOR_ID,
    DesignatorType.VENDOR_SPECIFIC,
  ];
  for (const type of preference) {
    const d = designators.find(
      (x) => x.type === type && x.association === ASSOCIATION_LOGICAL_UNIT,
    );
    if (d === undefined) continue;
    return d.codeSet === CODE_SET_BINARY
      ? Buffer.from(d.value).toString('hex')
      : ascii(d.value, 0, d.value.length);
  }
  return undefined;
}

/** VPD 0xB0 (SBC-3, 6.5.3); counts are in logical blocks, 0 = no limit reported. */
export interface BlockLimitsVpd {
  maxTransferBlocks: number;
  optimalTransferBlocks: number;
  maxUnmapBlocks: number;
  maxUnmapDescriptors: number;
  optimalUnmapGranularity: number;
  maxWriteSameBlocks: number;
}

export const BLOCK_LIMITS_PAYLOAD_BYTES = 0x3c;

export function decodeBlockLimits(bytes: Uint8Array): BlockLimitsVpd {
  const p = decodeVpdPage(bytes).payload;
  const field = (offset: number, length: number): number =>
    offset + length <= p.length + 4 && offset >= 4 ? getBE(p, offset - 4, length) : 0;
  return {
    maxTransferBlocks: field(8, 4),
    optimalTransferBlocks: field(12, 4),
    maxUnmapBlocks: field(20, 4),
    maxUnmapDescriptors: field(24, 4),
    optimalUnmapGranularity: field(28, 4),
    maxWriteSameBlocks: Math.min(field(36, 8), Number.MAX_SAFE_INTEGER),
  };
}

export function encodeBlockLimits(limits: BlockLimitsVpd): Uint8Array {
  const page = new Uint8Array(4 + BLOCK_LIMITS_PAYLOAD_BYTES);
  putBE(page, 8, 4, limits.maxTransferBlocks);
  putBE(page, 12, 4, limits.optimalTransferBlocks);
  putBE(page, 20, 4, limits.maxUnmapBlocks);
  putBE(page, 24, 4, limits.maxUnmapDescriptors);
  putBE(page, 28, 4, limits.optimalUnmapGranularity);
  putBE(page, 36, 8, limits.maxWriteSameBlocks);
  return encodeVpdPage(VpdPage.BLOCK_LIMITS, page.subarray(4));
}

/** VPD 0xB2 (SBC-3, 6.5.4): which deallocation commands the unit takes. */
export interface ProvisioningVpd {
  /** LBPU: UNMAP is supported. */
  unmap: boolean;
  /** LBPWS: WRITE SAME(16) with the UNMAP bit is supported. */
  writeSameUnmap: boolean;
  /** LBPRZ: deallocated blocks read as zeroes. */
  readsZeroes: boolean;
}

export function decodeProvisioning(bytes: Uint8Array): ProvisioningVpd {
  const b = decodeVpdPage(bytes).payload[1] ?? 0;
  return {
    unmap: (b & 0x80) !== 0,
    writeSameUnmap: (b & 0x40) !== 0,
    readsZeroes: (b & 0x04) !== 0,
  };
}

export function encodeProvisioning(p: ProvisioningVpd): Uint8Array {
  const payload = new Uint8Array(4);
  payload[1] = (p.unmap ? 0x80 : 0) | (p.writeSameUnmap ? 0x40 : 0) | (p.readsZeroes ? 0x04 : 0);
  payload[2] = 0x02; // provisioning type: thin
  return encodeVpdPage(VpdPage.LOGICAL_BLOCK_PROVISIONING, payload);
}

export const READ_CAPACITY_10_BYTES = 8;
export const READ_CAPACITY_16_BYTES = 32;
/** READ CAPACITY(10)'s RETURNED LOGICAL BLOCK ADDRESS when the medium needs READ CAPACITY(16). */
export const READ_CAPACITY_10_OVERFLOW = 0xffff_ffff;

export interface Capacity {
  /** Number of logical blocks (last LBA + 1). */
  blocks: number;
  blockLength: number;
  /** READ CAPACITY(16) only: LBPME (thin provisioning enabled), LBPRZ. */
  provisioning: boolean;
  readsZeroes: boolean;
}

/**
 * READ CAPACITY(10) data. A RETURNED LOGICAL BLOCK ADDRESS of READ_CAPACITY_10_OVERFLOW means the
 * medium is too large for this command (blocks then reads 2^32): ask READ CAPACITY(16).
 */
export function decodeReadCapacity10(bytes: Uint8Array): Capacity {
  return {
    blocks: getBE(bytes, 0, 4) + 1,
    blockLength: getBE(bytes, 4, 4),
    provisioning: false,
    readsZeroes: false,
  };
}

export function encodeReadCapacity10(blocks: number, blockLength: number): Uint8Array {
  const out = new Uint8Array(READ_CAPACITY_10_BYTES);
  putBE(out, 0, 4, Math.min(blocks - 1, READ_CAPACITY_10_OVERFLOW));
  putBE(out, 4, 4, blockLength);
  return out;
}

export function decodeReadCapacity16(bytes: Uint8Array): Capacity {
  return {
    blocks: getBE(bytes, 0, 8) + 1,
    blockLength: getBE(bytes, 8, 4),
    provisioning: ((bytes[14] ?? 0) & 0x80) !== 0,
    readsZeroes: ((bytes[14] ?? 0) & 0x40) !== 0,
  };
}

export function encodeReadCapacity16(c: Capacity): Uint8Array {
  const out = new Uint8Array(READ_CAPACITY_16_BYTES);
  putBE(out, 0, 8, c.blocks - 1);
  putBE(out, 8, 4, c.blockLength);
  out[14] = (c.provisioning ? 0x80 : 0) | (c.readsZeroes ? 0x40 : 0);
  return out;
}

/** REPORT LUNS: the LUN numbers listed (peripheral and flat addressing; others are skipped). */
export function decodeReportLuns(bytes: Uint8Array): number[] {
  const listBytes = bytes.length >= 4 ? getBE(bytes, 0, 4) : 0;
  const end = Math.min(bytes.length, 8 + listBytes);
  const luns: number[] = [];
  for (let at = 8; at + 8 <= end; at += 8) {
    const method = bytes[at]! >> 6;
    const high = bytes[at]! & 0x3f;
    if (method === 1) luns.push((high << 8) | bytes[at + 1]!);
    else if (method === 0 && high === 0) luns.push(bytes[at + 1]!);
  }
  return luns;
}

/** The full length REPORT LUNS says its list has (header included). */
export function reportLunsLength(bytes: Uint8Array): number {
  return bytes.length >= 4 ? 8 + getBE(bytes, 0, 4) : 0;
}

export function encodeReportLuns(luns: readonly number[]): Uint8Array {
  const out = new Uint8Array(8 + 8 * luns.length);
  putBE(out, 0, 4, 8 * luns.length);
  luns.forEach((lun, i) => {
    const at = 8 + 8 * i;
    if (lun < 256) out[at + 1] = lun;
    else {
      out[at] = 0x40 | (lun >> 8);
      out[at + 1] = lun & 0xff;
    }
  });
  return out;
}

/** MODE SENSE header fields: WP in the device-specific parameter, the caching page's WCE. */
export interface ModeSense {
  writeProtect: boolean;
  /** WCE of the caching mode page, when the page was returned. */
  writeCache: boolean | undefined;
}

export const MODE_SENSE_6_HEADER_BYTES = 4;
export const MODE_SENSE_10_HEADER_BYTES = 8;
const WP_BIT = 0x80;
const WCE_BIT = 0x04;
export const CACHING_PAGE_BYTES = 20;

export function decodeModeSense(bytes: Uint8Array, ten: boolean): ModeSense {
  const header = ten ? MODE_SENSE_10_HEADER_BYTES : MODE_SENSE_6_HEADER_BYTES;
  const dataLength = ten ? getBE(bytes, 0, 2) + 2 : (bytes[0] ?? 0) + 1;
  const deviceSpecific = bytes[ten ? 3 : 2] ?? 0;
  const descriptors = ten ? getBE(bytes, 6, 2) : (bytes[3] ?? 0);
  let writeCache: boolean | undefined;
  const end = Math.min(bytes.length, dataLength);
  for (let at = header + descriptors; at + 2 <= end;) {
    const page = bytes[at]! & 0x3f;
    // SPF: a sub_page format page (byte 1 the subpage, bytes 2..3 the length, data from byte 4).
    if ((bytes[at]! & 0x40) !== 0) {
      if (at + 4 > end) break;
      at += 4 + getBE(bytes, at + 2, 2);
      continue;
    }
    const length = bytes[at + 1]!;
    if (page === MODE_PAGE_CACHING && at + 2 < end) {
      writeCache = (bytes[at + 2]! & WCE_BIT) !== 0;
    }
    at += 2 + length;
  }
  return { writeProtect: (deviceSpecific & WP_BIT) !== 0, writeCache };
}

/** MODE SENSE(6 or 10) data with no block descriptors and, if given, the caching page. */
export function encodeModeSense(
  ten: boolean,
  writeProtect: boolean,
  writeCache: boolean | undefined,
): Uint8Array {
  const header = ten ? MODE_SENSE_10_HEADER_BYTES : MODE_SENSE_6_HEADER_BYTES;
  const pages = writeCache === undefined ? 0 : CACHING_PAGE_BYTES;
  const out = new Uint8Array(header + pages);
  if (ten) putBE(out, 0, 2, out.length - 2);
  else out[0] = out.length - 1;
  out[ten ? 3 : 2] = writeProtect ? WP_BIT : 0;
  if (writeCache !== undefined) {
    out[header] = 0x08;
    out[header + 1] = CACHING_PAGE_BYTES - 2;
    out[header + 2] = writeCache ? WCE_BIT : 0;
  }
  return out;
}

export const UNMAP_HEADER_BYTES = 8;
export const UNMAP_DESCRIPTOR_BYTES = 16;
/** Where a block descriptor's block count sits in it (its LBA, 8 bytes, comes first). */
const UNMAP_DESCRIPTOR_BLOCKS_AT = 8;

/** Writes an UNMAP parameter list for one range into `out` at `at`; returns its length. */
export function encodeUnmapParameters(out: Uint8Array, at: number, range: LbaRange): number {
  const length = UNMAP_HEADER_BYTES + UNMAP_DESCRIPTOR_BYTES;
  out.fill(0, at, at + length);
  putBE(out, at, 2, length - 2);
  putBE(out, at + 2, 2, UNMAP_DESCRIPTOR_BYTES);
  // The one block descriptor, laid out as decodeUnmapParameters reads it.
  const descriptor = at + UNMAP_HEADER_BYTES;
  putLba(out, descriptor, 8, range);
  putBE(out, descriptor + UNMAP_DESCRIPTOR_BLOCKS_AT, 4, range[BLOCKS_AT]!);
  return length;
}

/** The ranges of an UNMAP parameter list; undefined if the lengths do not add up. */
export function decodeUnmapParameters(
  bytes: Uint8Array,
): { lba: number; blocks: number }[] | undefined {
  if (bytes.length < UNMAP_HEADER_BYTES) return bytes.length === 0 ? [] : undefined;
  const descriptorBytes = getBE(bytes, 2, 2);
  if (descriptorBytes % UNMAP_DESCRIPTOR_BYTES !== 0) return undefined;
  if (UNMAP_HEADER_BYTES + descriptorBytes > bytes.length) return undefined;
  const out: { lba: number; blocks: number }[] = [];
  const end = UNMAP_HEADER_BYTES + descriptorBytes;
  for (let at = UNMAP_HEADER_BYTES; at < end; at += UNMAP_DESCRIPTOR_BYTES) {
    out.push({
      lba: getBE(bytes, at, 8),
      blocks: getBE(bytes, at + UNMAP_DESCRIPTOR_BLOCKS_AT, 4),
    });
  }
  return out;
}
