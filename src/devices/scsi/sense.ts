/**
 * SCSI sense data (SPC-4, 4.5): decoding the fixed (0x70/0x71) and descriptor (0x72/0x73)
 * formats into one shape, and encoding fixed-format sense for the embedded target.
 */

import type { ScsiSenseInfo } from '../../errors.js';
import { getBE, putBE } from './cdb.js';

/** Sense keys (SPC-4, table 48). */
export const SenseKey = {
  NO_SENSE: 0x0,
  RECOVERED_ERROR: 0x1,
  NOT_READY: 0x2,
  MEDIUM_ERROR: 0x3,
  HARDWARE_ERROR: 0x4,
  ILLEGAL_REQUEST: 0x5,
  UNIT_ATTENTION: 0x6,
  DATA_PROTECT: 0x7,
  BLANK_CHECK: 0x8,
  VENDOR_SPECIFIC: 0x9,
  COPY_ABORTED: 0xa,
  ABORTED_COMMAND: 0xb,
  VOLUME_OVERFLOW: 0xd,
  MISCOMPARE: 0xe,
  COMPLETED: 0xf,
} as const;

export function senseKeyName(key: number): string {
  for (const [name, value] of Object.entries(SenseKey)) {
    if (value === key) return name.replace(/_/g, ' ');
  }
  return `SENSE KEY 0x${key.toString(16)}`;
}

/** ASC/ASCQ pairs this library produces or reacts to, by name (SPC-4, annex D). */
export const Asc = {
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
} as const satisfies Record<string, readonly [number, number]>;

/** A readable text for an ASC/ASCQ pair. */
export function ascDescription(asc: number, ascq: number): string {
  for (const [name, [a, q]] of Object.entries(Asc)) {
    if (a === asc && q === ascq) return name.toLowerCase().replace(/_/g, ' ');
  }
  for (const [name, [a]] of Object.entries(Asc)) {
    if (a === asc) return `${name.toLowerCase().replace(/_/g, ' ')} (qualifier 0x${ascq.toString(16)})`;
  }
  return `additional sense 0x${asc.toString(16).padStart(2, '0')}/0x${ascq.toString(16).padStart(2, '0')}`;
}

export const FIXED_SENSE_BYTES = 18;

/**
 * Decodes sense data in either format. Returns undefined when there is none or the response
 * code is not a sense format (so the caller can report the raw status instead).
 */
export function decodeSense(bytes: Uint8Array): ScsiSenseInfo | undefined {
  if (bytes.length < 2) return undefined;
  const responseCode = bytes[0]! & 0x7f;
  let senseKey: number;
  let asc = 0;
  let ascq = 0;
  let information: number | undefined;
  if (responseCode === 0x70 || responseCode === 0x71) {
    senseKey = (bytes[2] ?? 0) & 0x0f;
    // ASC/ASCQ exist only if the additional length reaches them.
    const end = Math.min(bytes.length, 8 + (bytes[7] ?? 0));
    if (end > 12) asc = bytes[12]!;
    if (end > 13) ascq = bytes[13]!;
    if ((bytes[0]! & 0x80) !== 0 && bytes.length >= 7) information = getBE(bytes, 3, 4);
  } else if (responseCode === 0x72 || responseCode === 0x73) {
    senseKey = bytes[1]! & 0x0f;
    asc = bytes[2] ?? 0;
    ascq = bytes[3] ?? 0;
    const end = Math.min(bytes.length, 8 + (bytes[7] ?? 0));
    for (let at = 8; at + 2 <= end;) {
      const type = bytes[at]!;
      const length = bytes[at + 1]!;
      // Information descriptor: VALID bit, then an 8-byte INFORMATION field.
      if (type === 0x00 && length >= 0x0a && at + 12 <= end && (bytes[at + 2]! & 0x80) !== 0) {
        information = getBE(bytes, at + 4, 8);
      }
      at += 2 + length;
    }
  } else {
    return undefined;
  }
  return {
    senseKey,
    senseKeyName: senseKeyName(senseKey),
    asc,
    ascq,
    description: ascDescription(asc, ascq),
    information,
    raw: Buffer.from(bytes),
  };
}

/** Fixed-format, current sense data; `information` (an LBA) sets the VALID bit. */
export function encodeFixedSense(
  key: number,
  asc: number,
  ascq: number,
  information?: number,
): Uint8Array {
  const out = new Uint8Array(FIXED_SENSE_BYTES);
  out[0] = 0x70;
  out[2] = key & 0x0f;
  if (information !== undefined && information <= 0xffff_ffff) {
    out[0] |= 0x80;
    putBE(out, 3, 4, information);
  }
  out[7] = FIXED_SENSE_BYTES - 8;
  out[12] = asc;
  out[13] = ascq;
  return out;
}
