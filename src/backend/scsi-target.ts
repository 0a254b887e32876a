/**
 * One SCSI logical unit (a direct-access block device, SPC-4 / SBC-3) on a Storage: the command
 * set the embedded vhost-user-scsi backend answers, with the sense data a real target gives for
 * bad LBAs, unknown opcodes, invalid CDB fields, write protection and absent LUNs. Knows nothing
 * about virtio: it sees a LUN number, a CDB and the data-out / data-in buffers.
 */

import { createHash } from 'node:crypto';
import {
  cdbLength,
  INQUIRY_EVPD,
  MODE_PAGE_ALL,
  MODE_PAGE_CACHING,
  parseCdb,
  SAI_READ_CAPACITY_16,
  ScsiOp,
  ScsiStatus,
  WRITE_SAME_NDOB,
  type ParsedCdb,
} from '../devices/scsi/cdb.js';
import {
  ASSOCIATION_LOGICAL_UNIT,
  CODE_SET_ASCII,
  CODE_SET_BINARY,
  DesignatorType,
  encodeBlockLimits,
  encodeDeviceIdentification,
  encodeModeSense,
  encodeProvisioning,
  encodeReadCapacity10,
  encodeReadCapacity16,
  encodeReportLuns,
  encodeStandardInquiry,
  encodeVpdPage,
  INQUIRY_NO_LUN,
  decodeUnmapParameters,
  UNMAP_HEADER_BYTES,
  VpdPage,
} from '../devices/scsi/data.js';
import { encodeFixedSense, SenseKey } from '../devices/scsi/sense.js';
import type { RequestHooks } from './device-model.js';
import type { IoSegment } from './device-queue.js';
import { slice } from './blk-device.js';
import { MAX_UNMAP_BYTES, MAX_UNMAP_DESCRIPTORS, MAX_WRITE_SAME_BYTES } from './scsi-config.js';
import { copyFromSegments, copyToSegments, type Storage } from './storage.js';

/** The additional sense codes this target reports (SPC-4, annex D), by their spec names. */
const AdditionalSense = {
  NO_ADDITIONAL_SENSE: [0x00, 0x00],
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
  SAVING_PARAMETERS_NOT_SUPPORTED: [0x39, 0x00],
  INTERNAL_TARGET_FAILURE: [0x44, 0x00],
} as const satisfies Record<string, readonly [number, number]>;
type SenseCode = keyof typeof AdditionalSense;

export const SCSI_VENDOR = 'VHOSTUSR';
export const SCSI_PRODUCT = 'vhost-user-scsi';
export const SCSI_REVISION = '0001';

/** The SCSI-level faults the plan can choose (the virtio-level ones stay in scsi-device.ts). */
export type ScsiFault = 'io-error' | 'scsi-busy' | 'task-set-full' | 'unit-attention';

export interface ScsiTargetOptions {
  storage: Storage;
  /** Bytes exposed: a whole number of blocks of the storage. */
  capacity: number;
  blockSize: number;
  readOnly: boolean;
  /** Write-protected while MODE SENSE says writable (a fault for frontend tests). */
  hideWriteProtect?: boolean;
  /** VPD 0x80; the 0x83 designators derive from it. */
  serial: Buffer;
  lun: number;
  /** Largest data transfer of one READ / WRITE in bytes (max_sectors * 512). */
  maxTransferBytes: number;
}

export interface ScsiCommand {
  /** The LUN the command is addressed to (the target was already matched). */
  lun: number;
  cdb: Uint8Array;
  dataOut: readonly IoSegment[];
  dataIn: readonly IoSegment[];
  /** Answer this instead of running the command (the storage is not touched). */
  fault?: ScsiFault;
}

export interface ScsiOutcome {
  status: number;
  /** Fixed-format sense data with CHECK CONDITION. */
  sense: Uint8Array | undefined;
  /** Bytes of data-in written, or of data-out consumed. */
  transferred: number;
  /** The CDB needs more data than the buffers hold (virtio-scsi: VIRTIO_SCSI_S_OVERRUN). */
  overrun: boolean;
}

/** READ/WRITE(10/16) byte 1: RDPROTECT/WRPROTECT (no protection information here) and FUA. */
const PROTECT_MASK = 0xe0;
const FUA = 0x08;
/** UNMAP / WRITE SAME byte 1: ANCHOR (anchored LBAs are not supported). */
const UNMAP_ANCHOR = 0x01;
const WRITE_SAME_ANCHOR = 0x10;
/** REQUEST SENSE byte 1: DESC (descriptor format, not supported). */
const REQUEST_SENSE_DESC = 0x01;
/** INQUIRY byte 1: CMDDT (obsolete). */
const INQUIRY_CMDDT = 0x02;
/** MODE SENSE page control values (byte 2 bits 7..6). */
const PC_CHANGEABLE = 1;
const PC_SAVED = 3;
/** WRITE SAME patterns are written in chunks of about this size. */
const PATTERN_CHUNK_BYTES = 1024 * 1024;

const SUPPORTED_VPD_PAGES = [
  VpdPage.SUPPORTED_PAGES,
  VpdPage.UNIT_SERIAL_NUMBER,
  VpdPage.DEVICE_IDENTIFICATION,
  VpdPage.BLOCK_LIMITS,
  VpdPage.LOGICAL_BLOCK_PROVISIONING,
];

export class ScsiTarget {
  readonly lun: number;
  readonly blockSize: number;
  /** Logical blocks (last LBA + 1). */
  readonly blocks: number;
  readonly #storage: Storage;
  readonly #writeProtected: boolean;
  /** The WP bit MODE SENSE reports. */
  readonly #reportWriteProtect: boolean;
  readonly #serial: Buffer;
  readonly #maxTransferBytes: number;
  /** A reset happened: the next command (INQUIRY, REPORT LUNS aside) reports UNIT ATTENTION. */
  #unitAttention = false;

  constructor(o: ScsiTargetOptions) {
    this.#storage = o.storage;
    this.blockSize = o.blockSize;
    this.blocks = Math.floor(o.capacity / o.blockSize);
    this.#writeProtected = o.readOnly || o.hideWriteProtect === true;
    this.#reportWriteProtect = o.readOnly && o.hideWriteProtect !== true;
    this.#serial = o.serial;
    this.lun = o.lun;
    this.#maxTransferBytes = o.maxTransferBytes;
  }

  /** LOGICAL UNIT RESET / I_T NEXUS RESET: the next command reports UNIT ATTENTION 0x29/0x00. */
  reset(): void {
    this.#unitAttention = true;
  }

  /** Runs one command. Never throws: a failing storage is a MEDIUM ERROR of the command. */
  execute(cmd: ScsiCommand, hooks?: RequestHooks): ScsiOutcome {
    const opcode = cmd.cdb[0] ?? 0;
    if (cmd.fault !== undefined) return faulted(cmd.fault, opcode);
    try {
      return this.#execute(cmd, opcode, hooks);
    } catch {
      return ioError(opcode);
    }
  }

  #execute(cmd: ScsiCommand, opcode: number, hooks: RequestHooks | undefined): ScsiOutcome {
    if (cmd.cdb.length < cdbLength(opcode) || cdbLength(opcode) === 0) {
      return check(SenseKey.ILLEGAL_REQUEST, 'INVALID_COMMAND_OPERATION_CODE');
    }
    const c = parseCdb(cmd.cdb);
    if (cmd.lun !== this.lun) return this.#absentLun(cmd, c);
    // SPC-4 5.14: INQUIRY and REPORT LUNS neither report nor clear a unit attention.
    if (this.#unitAttention && opcode !== ScsiOp.INQUIRY && opcode !== ScsiOp.REPORT_LUNS) {
      this.#unitAttention = false;
      const sense = encodeFixedSense(
        SenseKey.UNIT_ATTENTION,
        ...AdditionalSense.POWER_ON_RESET_OR_BUS_DEVICE_RESET,
      );
      if (opcode === ScsiOp.REQUEST_SENSE) return dataIn(cmd, sense, cmd.cdb[4]!);
      return { status: ScsiStatus.CHECK_CONDITION, sense, transferred: 0, overrun: false };
    }
    switch (opcode) {
      case ScsiOp.TEST_UNIT_READY:
        return good(0);
      case ScsiOp.REQUEST_SENSE:
        if ((c.flags & REQUEST_SENSE_DESC) !== 0) return invalidField();
        return dataIn(cmd, encodeFixedSense(SenseKey.NO_SENSE, 0, 0), cmd.cdb[4]!);
      case ScsiOp.INQUIRY:
        return this.#inquiry(cmd, c, true);
      case ScsiOp.REPORT_LUNS:
        return this.#reportLuns(cmd, c);
      case ScsiOp.READ_CAPACITY_10:
        // PMI is obsolete; an LBA without it is an invalid field.
        if (c.lba !== 0 && ((cmd.cdb[8] ?? 0) & 0x01) === 0) return invalidField();
        return dataIn(cmd, encodeReadCapacity10(this.blocks, this.blockSize), 0xff);
      case ScsiOp.SERVICE_ACTION_IN_16:
        if (c.serviceAction !== SAI_READ_CAPACITY_16) return invalidField();
        return dataIn(
          cmd,
          encodeReadCapacity16({
            blocks: this.blocks,
            blockLength: this.blockSize,
            provisioning: true,
            readsZeroes: true,
          }),
          c.allocationLength,
        );
      case ScsiOp.MODE_SENSE_6:
      case ScsiOp.MODE_SENSE_10:
        return this.#modeSense(cmd, c, opcode === ScsiOp.MODE_SENSE_10);
      case ScsiOp.READ_6:
      case ScsiOp.READ_10:
      case ScsiOp.READ_16:
        return this.#read(cmd, c, hooks);
      case ScsiOp.WRITE_6:
      case ScsiOp.WRITE_10:
      case ScsiOp.WRITE_16:
        return this.#write(cmd, c);
      case ScsiOp.SYNCHRONIZE_CACHE_10:
      case ScsiOp.SYNCHRONIZE_CACHE_16: {
        // 0 blocks: to the end of the medium.
        const end = c.blocks === 0 ? this.blocks : c.lba + c.blocks;
        if (c.lba > this.blocks || end > this.blocks) return lbaOutOfRange(c.lba);
        this.#storage.flush();
        return good(0);
      }
      case ScsiOp.UNMAP:
        return this.#unmap(cmd, c);
      case ScsiOp.WRITE_SAME_10:
      case ScsiOp.WRITE_SAME_16:
        return this.#writeSame(cmd, c, opcode === ScsiOp.WRITE_SAME_16);
      default:
        return check(SenseKey.ILLEGAL_REQUEST, 'INVALID_COMMAND_OPERATION_CODE');
    }
  }

  /** SPC-4 6.6.2 / 5.8: a LUN the target does not have. */
  #absentLun(cmd: ScsiCommand, c: ParsedCdb): ScsiOutcome {
    switch (c.opcode) {
      case ScsiOp.INQUIRY:
        return this.#inquiry(cmd, c, false);
      case ScsiOp.REPORT_LUNS:
        return this.#reportLuns(cmd, c);
      case ScsiOp.REQUEST_SENSE: {
        const [asc, ascq] = AdditionalSense.LOGICAL_UNIT_NOT_SUPPORTED;
        return dataIn(cmd, encodeFixedSense(SenseKey.ILLEGAL_REQUEST, asc, ascq), cmd.cdb[4]!);
      }
      default:
        return check(SenseKey.ILLEGAL_REQUEST, 'LOGICAL_UNIT_NOT_SUPPORTED');
    }
  }

  #inquiry(cmd: ScsiCommand, c: ParsedCdb, present: boolean): ScsiOutcome {
    if ((c.flags & INQUIRY_CMDDT) !== 0) return invalidField();
    if ((c.flags & INQUIRY_EVPD) === 0) {
      if (c.page !== 0) return invalidField();
      const data = encodeStandardInquiry({
        peripheralQualifier: present ? 0 : INQUIRY_NO_LUN >> 5,
        deviceType: present ? 0 : INQUIRY_NO_LUN & 0x1f,
        vendor: SCSI_VENDOR,
        product: SCSI_PRODUCT,
        revision: SCSI_REVISION,
      });
      return dataIn(cmd, data, c.allocationLength);
    }
    let page: Uint8Array | undefined;
    if (!present) {
      // Only the list of pages, which is empty of everything but itself.
      if (c.page === VpdPage.SUPPORTED_PAGES) {
        page = encodeVpdPage(c.page, Uint8Array.of(VpdPage.SUPPORTED_PAGES), INQUIRY_NO_LUN);
      }
    } else {
      page = this.#vpdPage(c.page);
    }
    if (page === undefined) return invalidField();
    return dataIn(cmd, page, c.allocationLength);
  }

  #vpdPage(code: number): Uint8Array | undefined {
    switch (code) {
      case VpdPage.SUPPORTED_PAGES:
        return encodeVpdPage(code, Uint8Array.from(SUPPORTED_VPD_PAGES));
      case VpdPage.UNIT_SERIAL_NUMBER:
        return encodeVpdPage(code, this.#serial);
      case VpdPage.DEVICE_IDENTIFICATION:
        return encodeDeviceIdentification([
          {
            codeSet: CODE_SET_ASCII,
            association: ASSOCIATION_LOGICAL_UNIT,
            type: DesignatorType.T10_VENDOR_ID,
            value: Buffer.concat([Buffer.from(SCSI_VENDOR.padEnd(8), 'latin1'), this.#serial]),
          },
          {
            codeSet: CODE_SET_BINARY,
            association: ASSOCIATION_LOGICAL_UNIT,
            type: DesignatorType.NAA,
            value: naaLocallyAssigned(this.#serial),
          },
        ]);
      case VpdPage.BLOCK_LIMITS:
        return encodeBlockLimits({
          maxTransferBlocks: Math.min(
            Math.floor(this.#maxTransferBytes / this.blockSize),
            0xffff_ffff,
          ),
          optimalTransferBlocks: 0,
          maxUnmapBlocks: MAX_UNMAP_BYTES / this.blockSize,
          maxUnmapDescriptors: MAX_UNMAP_DESCRIPTORS,
          optimalUnmapGranularity: 1,
          maxWriteSameBlocks: MAX_WRITE_SAME_BYTES / this.blockSize,
        });
      case VpdPage.LOGICAL_BLOCK_PROVISIONING:
        // Deallocation zeroes the blocks, so LBPRZ is a promise kept.
        return encodeProvisioning({ unmap: true, writeSameUnmap: true, readsZeroes: true });
      default:
        return undefined;
    }
  }

  #reportLuns(cmd: ScsiCommand, c: ParsedCdb): ScsiOutcome {
    // SELECT REPORT: 0 and 2 list this LUN, 1 asks for well-known LUNs only (there are none).
    const select = cmd.cdb[2]!;
    if (select > 2) return invalidField();
    return dataIn(cmd, encodeReportLuns(select === 1 ? [] : [this.lun]), c.allocationLength);
  }

  #modeSense(cmd: ScsiCommand, c: ParsedCdb, ten: boolean): ScsiOutcome {
    const pageControl = cmd.cdb[2]! >> 6;
    const subpage = cmd.cdb[3]!;
    if (pageControl === PC_SAVED)
      return check(SenseKey.ILLEGAL_REQUEST, 'SAVING_PARAMETERS_NOT_SUPPORTED');
    if (c.page !== MODE_PAGE_CACHING && c.page !== MODE_PAGE_ALL) return invalidField();
    if (subpage !== 0 && !(c.page === MODE_PAGE_ALL && subpage === 0xff)) return invalidField();
    // Write-back cache (WCE): SYNCHRONIZE CACHE really flushes. Nothing is changeable.
    const data = encodeModeSense(ten, this.#reportWriteProtect, pageControl !== PC_CHANGEABLE);
    return dataIn(cmd, data, c.allocationLength);
  }

  /** Field, range and size checks shared by READ and WRITE; undefined when the command is valid. */
  #checkTransfer(c: ParsedCdb): ScsiOutcome | undefined {
    // Byte 1 of the 6-byte forms holds LBA bits.
    if (c.length > 6 && (c.flags & PROTECT_MASK) !== 0) return invalidField();
    if (c.blocks * this.blockSize > this.#maxTransferBytes) return invalidField();
    if (c.lba + c.blocks > this.blocks || c.lba >= this.blocks) return lbaOutOfRange(c.lba);
    return undefined;
  }

  #read(cmd: ScsiCommand, c: ParsedCdb, hooks: RequestHooks | undefined): ScsiOutcome {
    if (c.blocks === 0 && c.lba <= this.blocks) return good(0);
    const invalid = this.#checkTransfer(c);
    if (invalid !== undefined) return invalid;
    let bytes = c.blocks * this.blockSize;
    if (bytes > byteLength(cmd.dataIn)) return overrun();
    if (hooks?.shortRead() === true) bytes = Math.floor(c.blocks / 2) * this.blockSize;
    if (bytes > 0) this.#storage.read(slice(cmd.dataIn, 0, bytes), c.lba * this.blockSize);
    return good(bytes);
  }

  #write(cmd: ScsiCommand, c: ParsedCdb): ScsiOutcome {
    if (c.length > 6 && (c.flags & PROTECT_MASK) !== 0) return invalidField();
    if (this.#writeProtected) return check(SenseKey.DATA_PROTECT, 'WRITE_PROTECTED');
    if (c.blocks === 0 && c.lba <= this.blocks) return good(0);
    const invalid = this.#checkTransfer(c);
    if (invalid !== undefined) return invalid;
    const bytes = c.blocks * this.blockSize;
    if (bytes > byteLength(cmd.dataOut)) return overrun();
    this.#storage.write(slice(cmd.dataOut, 0, bytes), c.lba * this.blockSize);
    if (c.length > 6 && (c.flags & FUA) !== 0) this.#storage.flush();
    return good(bytes);
  }

  /** SBC-3 5.28: deallocation here zeroes the blocks (LBPRZ). */
  #unmap(cmd: ScsiCommand, c: ParsedCdb): ScsiOutcome {
    if ((c.flags & UNMAP_ANCHOR) !== 0) return invalidField();
    if (this.#writeProtected) return check(SenseKey.DATA_PROTECT, 'WRITE_PROTECTED');
    const length = c.allocationLength;
    if (length === 0) return good(0);
    if (length > byteLength(cmd.dataOut)) return overrun();
    if (length < UNMAP_HEADER_BYTES) {
      return check(SenseKey.ILLEGAL_REQUEST, 'PARAMETER_LIST_LENGTH_ERROR');
    }
    const list = Buffer.alloc(length);
    copyFromSegments(cmd.dataOut, 0, list);
    const ranges = decodeUnmapParameters(list);
    if (ranges === undefined || ranges.length > MAX_UNMAP_DESCRIPTORS) {
      return check(SenseKey.ILLEGAL_REQUEST, 'INVALID_FIELD_IN_PARAMETER_LIST');
    }
    let total = 0;
    for (const r of ranges) total += r.blocks;
    if (total * this.blockSize > MAX_UNMAP_BYTES) {
      return check(SenseKey.ILLEGAL_REQUEST, 'INVALID_FIELD_IN_PARAMETER_LIST');
    }
    for (const r of ranges) if (r.lba + r.blocks > this.blocks) return lbaOutOfRange(r.lba);
    for (const r of ranges) {
      if (r.blocks > 0)
        this.#storage.writeZeroes(r.lba * this.blockSize, r.blocks * this.blockSize);
    }
    return good(length);
  }

  /**
   * SBC-3 5.41 / 5.42: one block of data-out (none with NDOB: zeroes) repeated over the range; 0
   * blocks means to the end of the medium. The UNMAP bit (WRITE_SAME_UNMAP) changes nothing here:
   * with it a zero pattern deallocates, which is the same as writing zeroes, and a non-zero
   * pattern is written either way.
   */
  #writeSame(cmd: ScsiCommand, c: ParsedCdb, sixteen: boolean): ScsiOutcome {
    const bs = this.blockSize;
    const ndob = sixteen && (c.flags & WRITE_SAME_NDOB) !== 0;
    const reserved = sixteen ? 0 : WRITE_SAME_NDOB;
    if ((c.flags & (PROTECT_MASK | WRITE_SAME_ANCHOR | reserved)) !== 0) return invalidField();
    if (this.#writeProtected) return check(SenseKey.DATA_PROTECT, 'WRITE_PROTECTED');
    if (c.lba >= this.blocks) return lbaOutOfRange(c.lba);
    const blocks = c.blocks === 0 ? this.blocks - c.lba : c.blocks;
    if (blocks * bs > MAX_WRITE_SAME_BYTES) return invalidField();
    if (c.lba + blocks > this.blocks) return lbaOutOfRange(c.lba);
    const pattern = Buffer.alloc(bs);
    if (!ndob) {
      if (byteLength(cmd.dataOut) < bs) return overrun();
      copyFromSegments(cmd.dataOut, 0, pattern);
    }
    const at = c.lba * bs;
    if (pattern.every((b) => b === 0)) {
      this.#storage.writeZeroes(at, blocks * bs);
    } else {
      const perChunk = Math.max(1, Math.floor(PATTERN_CHUNK_BYTES / bs));
      const chunk = Buffer.alloc(Math.min(blocks, perChunk) * bs);
      for (let i = 0; i < chunk.length; i += bs) pattern.copy(chunk, i);
      for (let done = 0; done < blocks;) {
        const n = Math.min(perChunk, blocks - done);
        // addr 1: a heap buffer is not known to be aligned, so O_DIRECT storage bounces it.
        this.#storage.write([{ buf: chunk.subarray(0, n * bs), addr: 1 }], at + done * bs);
        done += n;
      }
    }
    return good(ndob ? 0 : bs);
  }
}

function good(transferred: number): ScsiOutcome {
  return { status: ScsiStatus.GOOD, sense: undefined, transferred, overrun: false };
}

function overrun(): ScsiOutcome {
  return { status: ScsiStatus.GOOD, sense: undefined, transferred: 0, overrun: true };
}

function check(key: number, code: SenseCode, information?: number): ScsiOutcome {
  const [asc, ascq] = AdditionalSense[code];
  return {
    status: ScsiStatus.CHECK_CONDITION,
    sense: encodeFixedSense(key, asc, ascq, information),
    transferred: 0,
    overrun: false,
  };
}

function invalidField(): ScsiOutcome {
  return check(SenseKey.ILLEGAL_REQUEST, 'INVALID_FIELD_IN_CDB');
}

/** INFORMATION = the LBA (left out by the fixed format when it needs more than 4 bytes). */
function lbaOutOfRange(lba: number): ScsiOutcome {
  return check(SenseKey.ILLEGAL_REQUEST, 'LBA_OUT_OF_RANGE', lba);
}

const READS: readonly number[] = [ScsiOp.READ_6, ScsiOp.READ_10, ScsiOp.READ_16];
const WRITES: readonly number[] = [
  ScsiOp.WRITE_6,
  ScsiOp.WRITE_10,
  ScsiOp.WRITE_16,
  ScsiOp.WRITE_SAME_10,
  ScsiOp.WRITE_SAME_16,
  ScsiOp.UNMAP,
];

/** What a failing storage (or the ioErrorEvery fault) looks like to the initiator. */
function ioError(opcode: number): ScsiOutcome {
  if (READS.includes(opcode)) return check(SenseKey.MEDIUM_ERROR, 'UNRECOVERED_READ_ERROR');
  if (WRITES.includes(opcode)) return check(SenseKey.MEDIUM_ERROR, 'WRITE_ERROR');
  return check(SenseKey.HARDWARE_ERROR, 'INTERNAL_TARGET_FAILURE');
}

function faulted(fault: ScsiFault, opcode: number): ScsiOutcome {
  switch (fault) {
    case 'io-error':
      return ioError(opcode);
    case 'scsi-busy':
      return { status: ScsiStatus.BUSY, sense: undefined, transferred: 0, overrun: false };
    case 'task-set-full':
      return { status: ScsiStatus.TASK_SET_FULL, sense: undefined, transferred: 0, overrun: false };
    case 'unit-attention':
      return check(SenseKey.UNIT_ATTENTION, 'POWER_ON_RESET_OR_BUS_DEVICE_RESET');
  }
}

/** Parameter data, cut to the allocation length and to the data-in buffer. */
function dataIn(cmd: ScsiCommand, data: Uint8Array, allocationLength: number): ScsiOutcome {
  const n = Math.min(data.length, allocationLength, byteLength(cmd.dataIn));
  copyToSegments(cmd.dataIn, 0, Buffer.from(data.buffer, data.byteOffset, n));
  return good(n);
}

function byteLength(segments: readonly IoSegment[]): number {
  let n = 0;
  for (const s of segments) n += s.buf.length;
  return n;
}

/**
 * An NAA "locally assigned" designator (NAA 3h, SPC-4 7.8.6.6.2): 60 bits of the serial's hash,
 * so the same serial always gives the same identifier and no company id is claimed.
 */
export function naaLocallyAssigned(serial: Buffer): Uint8Array {
  const hash = createHash('sha256').update(serial).digest();
  const out = Uint8Array.from(hash.subarray(0, 8));
  out[0] = 0x30 | (out[0]! & 0x0f);
  return out;
}
