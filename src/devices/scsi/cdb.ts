/**
 * SCSI command descriptor blocks (SPC-4 / SBC-3), built and parsed in one place: the frontend
 * builds them, the embedded target parses them, and both use the names below. CDB fields are
 * big-endian.
 */

import { OutOfRangeError } from '../../errors.js';

/** Operation codes this library sends or answers. */
export const ScsiOp = {
  TEST_UNIT_READY: 0x00,
  REQUEST_SENSE: 0x03,
  READ_6: 0x08,
  WRITE_6: 0x0a,
  INQUIRY: 0x12,
  MODE_SELECT_6: 0x15,
  MODE_SENSE_6: 0x1a,
  START_STOP_UNIT: 0x1b,
  READ_CAPACITY_10: 0x25,
  READ_10: 0x28,
  WRITE_10: 0x2a,
  VERIFY_10: 0x2f,
  SYNCHRONIZE_CACHE_10: 0x35,
  WRITE_SAME_10: 0x41,
  UNMAP: 0x42,
  MODE_SENSE_10: 0x5a,
  READ_16: 0x88,
  WRITE_16: 0x8a,
  SYNCHRONIZE_CACHE_16: 0x91,
  WRITE_SAME_16: 0x93,
  SERVICE_ACTION_IN_16: 0x9e,
  REPORT_LUNS: 0xa0,
} as const;

/** SERVICE ACTION IN(16) service action of READ CAPACITY(16). */
export const SAI_READ_CAPACITY_16 = 0x10;

/** SCSI status codes (SAM-5). */
export const ScsiStatus = {
  GOOD: 0x00,
  CHECK_CONDITION: 0x02,
  CONDITION_MET: 0x04,
  BUSY: 0x08,
  RESERVATION_CONFLICT: 0x18,
  TASK_SET_FULL: 0x28,
  ACA_ACTIVE: 0x30,
  TASK_ABORTED: 0x40,
} as const;

export function scsiStatusName(status: number): string {
  for (const [name, value] of Object.entries(ScsiStatus)) if (value === status) return name;
  return `status 0x${status.toString(16).padStart(2, '0')}`;
}

export function scsiOpName(opcode: number): string {
  for (const [name, value] of Object.entries(ScsiOp)) if (value === opcode) return name;
  return `opcode 0x${opcode.toString(16).padStart(2, '0')}`;
}

/** Largest block counts the transfer-length fields can hold. */
export const MAX_BLOCKS_10 = 0xffff;
export const MAX_BLOCKS_16 = 0xffff_ffff;
/** Largest LBA READ(10)/WRITE(10) can address. */
export const MAX_LBA_10 = 0xffff_ffff;

/** WRITE SAME byte 1 bits. */
export const WRITE_SAME_UNMAP = 0x08;
export const WRITE_SAME_NDOB = 0x01;
/** INQUIRY byte 1: vital product data page wanted. */
export const INQUIRY_EVPD = 0x01;
/** MODE SENSE byte 1: no block descriptors. */
export const MODE_SENSE_DBD = 0x08;
/** Mode page codes. */
export const MODE_PAGE_CACHING = 0x08;
export const MODE_PAGE_ALL = 0x3f;

/** The CDB length for an operation code, from its group (SPC-4, 4.2.5.1); 0 if unknown. */
export function cdbLength(opcode: number): number {
  switch (opcode >> 5) {
    case 0:
      return 6;
    case 1:
    case 2:
      return 10;
    case 4:
      return 16;
    case 5:
      return 12;
    default:
      return 0;
  }
}

/** Writes big-endian integers (up to 2^53) without allocating. */
export function putBE(out: Uint8Array, offset: number, bytes: number, value: number): void {
  let v = value;
  for (let i = bytes - 1; i >= 0; i--) {
    out[offset + i] = v % 256;
    v = Math.floor(v / 256);
  }
}

export function getBE(bytes: Uint8Array, offset: number, length: number): number {
  let v = 0;
  for (let i = 0; i < length; i++) v = v * 256 + bytes[offset + i]!;
  return v;
}

/**
 * The blocks a read, write, WRITE SAME or UNMAP covers: [LBA_AT] the first block, [BLOCKS_AT]
 * how many, in a cell the caller fills in place (lbaRange() makes one). Not passed as numbers:
 * past 2^31 blocks an LBA is no small integer, and one passed to a call V8 did not inline is a
 * new heap number per request.
 */
export type LbaRange = Float64Array;
export const LBA_AT = 0;
export const BLOCKS_AT = 1;

export function lbaRange(lba = 0, blocks = 0): LbaRange {
  return Float64Array.of(lba, blocks);
}

/** Writes the range's LBA big-endian in `bytes` (4 or 8) bytes, read in place (see LbaRange). */
export function putLba(out: Uint8Array, offset: number, bytes: 4 | 8, range: LbaRange): void {
  const lba = range[LBA_AT]!;
  // Halves of at most 32 bits; a typed-array store keeps a value's low 8 bits.
  const low = lba >>> 0;
  let at = offset;
  if (bytes === 8) {
    const high = Math.floor(lba / 0x1_0000_0000);
    out[at] = high >>> 24;
    out[at + 1] = high >>> 16;
    out[at + 2] = high >>> 8;
    out[at + 3] = high;
    at += 4;
  }
  out[at] = low >>> 24;
  out[at + 1] = low >>> 16;
  out[at + 2] = low >>> 8;
  out[at + 3] = low;
}

/** A block count the 4-byte field of a 16-byte CDB cannot hold is refused, never truncated. */
function checkBlocks16(blocks: number): void {
  if (blocks > MAX_BLOCKS_16) {
    throw new OutOfRangeError(`${blocks} blocks exceed a 16-byte CDB's transfer length field`);
  }
}

/** A CDB under construction: every builder zeroes `length` bytes first and returns the length. */
function begin(out: Uint8Array, at: number, opcode: number, length: number): void {
  out.fill(0, at, at + length);
  out[at] = opcode;
}

export function buildTestUnitReady(out: Uint8Array, at: number): number {
  begin(out, at, ScsiOp.TEST_UNIT_READY, 6);
  return 6;
}

/** INQUIRY: the standard data (page undefined) or a vital product data page. */
export function buildInquiry(
  out: Uint8Array,
  at: number,
  page: number | undefined,
  allocationLength: number,
): number {
  begin(out, at, ScsiOp.INQUIRY, 6);
  if (page !== undefined) {
    out[at + 1] = INQUIRY_EVPD;
    out[at + 2] = page;
  }
  // A 2-byte allocation length: asking for less than the buffer holds is safe, wrapping is not.
  putBE(out, at + 3, 2, Math.min(allocationLength, 0xffff));
  return 6;
}

export function buildReportLuns(out: Uint8Array, at: number, allocationLength: number): number {
  begin(out, at, ScsiOp.REPORT_LUNS, 12);
  putBE(out, at + 6, 4, allocationLength);
  return 12;
}

export function buildReadCapacity10(out: Uint8Array, at: number): number {
  begin(out, at, ScsiOp.READ_CAPACITY_10, 10);
  return 10;
}

export function buildReadCapacity16(out: Uint8Array, at: number, allocationLength: number): number {
  begin(out, at, ScsiOp.SERVICE_ACTION_IN_16, 16);
  out[at + 1] = SAI_READ_CAPACITY_16;
  putBE(out, at + 10, 4, allocationLength);
  return 16;
}

/** READ/WRITE(10) or (16): the 10-byte form only when asked for and the fields fit. */
export function buildReadWrite(
  out: Uint8Array,
  at: number,
  write: boolean,
  range: LbaRange,
  use16: boolean,
): number {
  const lba = range[LBA_AT]!;
  const blocks = range[BLOCKS_AT]!;
  // The 10-byte form needs the LBA itself to fit (blocks = 0 must not let 2^32 through).
  if (!use16 && lba <= MAX_LBA_10 && lba + blocks - 1 <= MAX_LBA_10 && blocks <= MAX_BLOCKS_10) {
    begin(out, at, write ? ScsiOp.WRITE_10 : ScsiOp.READ_10, 10);
    putLba(out, at + 2, 4, range);
    putBE(out, at + 7, 2, blocks);
    return 10;
  }
  checkBlocks16(blocks);
  begin(out, at, write ? ScsiOp.WRITE_16 : ScsiOp.READ_16, 16);
  putLba(out, at + 2, 8, range);
  putBE(out, at + 10, 4, blocks);
  return 16;
}

/** SYNCHRONIZE CACHE(10) over the whole medium (LBA 0, 0 blocks = to the end). */
export function buildSynchronizeCache(out: Uint8Array, at: number): number {
  begin(out, at, ScsiOp.SYNCHRONIZE_CACHE_10, 10);
  return 10;
}

/** UNMAP with a parameter list of `parameterLength` bytes (see encodeUnmapParameters). */
export function buildUnmap(out: Uint8Array, at: number, parameterLength: number): number {
  if (parameterLength > 0xffff) {
    throw new OutOfRangeError(`UNMAP parameter list of ${parameterLength} bytes exceeds 65535`);
  }
  begin(out, at, ScsiOp.UNMAP, 10);
  putBE(out, at + 7, 2, parameterLength);
  return 10;
}

/** WRITE SAME(16): one block of data out repeated over `blocks` blocks; `unmap` may deallocate. */
export function buildWriteSame16(
  out: Uint8Array,
  at: number,
  range: LbaRange,
  unmap: boolean,
): number {
  const blocks = range[BLOCKS_AT]!;
  checkBlocks16(blocks);
  begin(out, at, ScsiOp.WRITE_SAME_16, 16);
  if (unmap) out[at + 1] = WRITE_SAME_UNMAP;
  putLba(out, at + 2, 8, range);
  putBE(out, at + 10, 4, blocks);
  return 16;
}

/** MODE SENSE(6) without block descriptors, current values. */
export function buildModeSense6(
  out: Uint8Array,
  at: number,
  page: number,
  allocationLength: number,
): number {
  begin(out, at, ScsiOp.MODE_SENSE_6, 6);
  out[at + 1] = MODE_SENSE_DBD;
  out[at + 2] = page & 0x3f;
  out[at + 4] = Math.min(allocationLength, 255);
  return 6;
}

/** MODE SENSE(10) without block descriptors, current values. */
export function buildModeSense10(
  out: Uint8Array,
  at: number,
  page: number,
  allocationLength: number,
): number {
  begin(out, at, ScsiOp.MODE_SENSE_10, 10);
  out[at + 1] = MODE_SENSE_DBD;
  out[at + 2] = page & 0x3f;
  putBE(out, at + 7, 2, Math.min(allocationLength, 0xffff));
  return 10;
}

/** A CDB as a target sees it: the fields the commands above carry, by name. */
export interface ParsedCdb {
  opcode: number;
  /** Bytes the CDB occupies per its group code (0 when the group is reserved). */
  length: number;
  /** READ/WRITE/WRITE SAME/SYNCHRONIZE CACHE: the first block and the block count. */
  lba: number;
  blocks: number;
  /** INQUIRY, REPORT LUNS, READ CAPACITY(16), MODE SENSE, UNMAP: allocation / parameter length. */
  allocationLength: number;
  /** Byte 1 of the CDB (EVPD, DBD, UNMAP, NDOB and service-action bits live there). */
  flags: number;
  /** INQUIRY page code, MODE SENSE page code (without PC bits). */
  page: number;
  /** SERVICE ACTION IN(16): the service action. */
  serviceAction: number;
}

/** Reads the fields of a CDB (the target side); fields a command lacks are 0. */
export function parseCdb(cdb: Uint8Array): ParsedCdb {
  const opcode = cdb[0] ?? 0;
  const parsed: ParsedCdb = {
    opcode,
    length: cdbLength(opcode),
    lba: 0,
    blocks: 0,
    allocationLength: 0,
    flags: cdb[1] ?? 0,
    page: 0,
    serviceAction: 0,
  };
  if (cdb.length < parsed.length) return parsed;
  switch (opcode) {
    case ScsiOp.READ_6:
    case ScsiOp.WRITE_6:
      parsed.lba = getBE(cdb, 1, 3) & 0x1f_ffff;
      // A transfer length of 0 means 256 blocks in the 6-byte commands.
      parsed.blocks = cdb[4] === 0 ? 256 : cdb[4]!;
      break;
    case ScsiOp.READ_10:
    case ScsiOp.WRITE_10:
    case ScsiOp.VERIFY_10:
    case ScsiOp.SYNCHRONIZE_CACHE_10:
    case ScsiOp.WRITE_SAME_10:
      parsed.lba = getBE(cdb, 2, 4);
      parsed.blocks = getBE(cdb, 7, 2);
      break;
    case ScsiOp.READ_16:
    case ScsiOp.WRITE_16:
    case ScsiOp.SYNCHRONIZE_CACHE_16:
    case ScsiOp.WRITE_SAME_16:
      parsed.lba = getBE(cdb, 2, 8);
      parsed.blocks = getBE(cdb, 10, 4);
      break;
    case ScsiOp.INQUIRY:
      parsed.page = cdb[2]!;
      parsed.allocationLength = getBE(cdb, 3, 2);
      break;
    case ScsiOp.MODE_SENSE_6:
      parsed.page = cdb[2]! & 0x3f;
      parsed.allocationLength = cdb[4]!;
      break;
    case ScsiOp.MODE_SENSE_10:
      parsed.page = cdb[2]! & 0x3f;
      parsed.allocationLength = getBE(cdb, 7, 2);
      break;
    case ScsiOp.UNMAP:
      parsed.allocationLength = getBE(cdb, 7, 2);
      break;
    case ScsiOp.REPORT_LUNS:
      parsed.allocationLength = getBE(cdb, 6, 4);
      break;
    case ScsiOp.SERVICE_ACTION_IN_16:
      parsed.serviceAction = cdb[1]! & 0x1f;
      parsed.lba = getBE(cdb, 2, 8);
      parsed.allocationLength = getBE(cdb, 10, 4);
      break;
    case ScsiOp.READ_CAPACITY_10:
      parsed.lba = getBE(cdb, 2, 4);
      break;
  }
  return parsed;
}
