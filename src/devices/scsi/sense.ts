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

/**
 * The ASC/ASCQ pairs a block-storage user meets (SPC-4 annex D), described once: code, qualifier,
 * text, and for the pairs code refers to, a name that becomes a key of `Asc`. An entry whose
 * qualifier is ANY_ASCQ names the family, used for qualifiers the table does not list.
 */
const ANY_ASCQ = 0x100;

const ASC_TABLE = [
  [0x00, 0x00, 'No additional sense information', 'NO_ADDITIONAL_SENSE'],
  [0x00, 0x06, 'I/O process terminated'],
  [0x00, 0x16, 'Operation in progress'],
  [0x00, 0x1d, 'ATA pass through information available'],
  [0x03, 0x00, 'Peripheral device write fault'],
  [0x04, ANY_ASCQ, 'Logical unit not ready'],
  [0x04, 0x00, 'Logical unit not ready, cause not reportable', 'LUN_NOT_READY'],
  [0x04, 0x01, 'Logical unit is in process of becoming ready', 'LUN_NOT_READY_BECOMING_READY'],
  [
    0x04,
    0x02,
    'Logical unit not ready, initializing command required',
    'LUN_NOT_READY_INITIALIZING_COMMAND_REQUIRED',
  ],
  [0x04, 0x03, 'Logical unit not ready, manual intervention required'],
  [0x04, 0x04, 'Logical unit not ready, format in progress'],
  [0x04, 0x07, 'Logical unit not ready, operation in progress'],
  [0x04, 0x09, 'Logical unit not ready, self-test in progress'],
  [
    0x04,
    0x0a,
    'Logical unit not accessible, asymmetric access state transition',
    'ASYMMETRIC_ACCESS_STATE_TRANSITION',
  ],
  [0x04, 0x0b, 'Logical unit not accessible, target port in standby state'],
  [0x04, 0x0c, 'Logical unit not accessible, target port in unavailable state'],
  [0x04, 0x11, 'Logical unit not ready, notify (enable spinup) required'],
  [0x04, 0x12, 'Logical unit not ready, offline'],
  [0x04, 0x14, 'Logical unit not ready, space allocation in progress'],
  [0x04, 0x1b, 'Logical unit not ready, sanitize in progress'],
  [0x05, 0x00, 'Logical unit does not respond to selection'],
  [0x08, 0x00, 'Logical unit communication failure'],
  [0x08, 0x01, 'Logical unit communication time-out'],
  [0x0c, ANY_ASCQ, 'Write error'],
  [0x0c, 0x00, 'Write error', 'WRITE_ERROR'],
  [0x0c, 0x02, 'Write error - auto reallocation failed'],
  [0x0c, 0x03, 'Write error - recommend reassignment'],
  [0x10, ANY_ASCQ, 'Protection information error'],
  [0x10, 0x01, 'Logical block guard check failed', 'LOGICAL_BLOCK_GUARD_CHECK_FAILED'],
  [0x10, 0x02, 'Logical block application tag check failed'],
  [0x10, 0x03, 'Logical block reference tag check failed'],
  [0x11, ANY_ASCQ, 'Unrecovered read error'],
  [0x11, 0x00, 'Unrecovered read error', 'UNRECOVERED_READ_ERROR'],
  [0x11, 0x01, 'Read retries exhausted'],
  [0x11, 0x02, 'Error too long to correct'],
  [0x11, 0x04, 'Unrecovered read error - auto reallocate failed'],
  [0x11, 0x0b, 'Unrecovered read error - recommend reassignment'],
  [0x11, 0x0c, 'Unrecovered read error - recommend rewrite the data'],
  [0x14, 0x01, 'Record not found'],
  [0x15, 0x00, 'Random positioning error'],
  [0x17, 0x00, 'Recovered data with no error correction applied'],
  [0x17, 0x01, 'Recovered data with retries'],
  [0x18, 0x00, 'Recovered data with error correction applied'],
  [0x1a, 0x00, 'Parameter list length error', 'PARAMETER_LIST_LENGTH_ERROR'],
  [0x1d, 0x00, 'Miscompare during verify operation', 'MISCOMPARE_DURING_VERIFY'],
  [0x20, 0x00, 'Invalid command operation code', 'INVALID_COMMAND_OPERATION_CODE'],
  [0x21, 0x00, 'Logical block address out of range', 'LBA_OUT_OF_RANGE'],
  [0x21, 0x01, 'Invalid element address'],
  [0x24, 0x00, 'Invalid field in CDB', 'INVALID_FIELD_IN_CDB'],
  [0x25, 0x00, 'Logical unit not supported', 'LOGICAL_UNIT_NOT_SUPPORTED'],
  [0x26, 0x00, 'Invalid field in parameter list', 'INVALID_FIELD_IN_PARAMETER_LIST'],
  [0x26, 0x01, 'Parameter not supported'],
  [0x26, 0x02, 'Parameter value invalid'],
  [0x27, ANY_ASCQ, 'Write protected'],
  [0x27, 0x00, 'Write protected', 'WRITE_PROTECTED'],
  [0x27, 0x01, 'Hardware write protected'],
  [0x27, 0x02, 'Logical unit software write protected'],
  [0x27, 0x07, 'Space allocation failed write protect', 'SPACE_ALLOCATION_FAILED_WRITE_PROTECT'],
  [0x28, 0x00, 'Not ready to ready change, medium may have changed'],
  [0x29, ANY_ASCQ, 'Power on or reset occurred'],
  [
    0x29,
    0x00,
    'Power on, reset, or bus device reset occurred',
    'POWER_ON_RESET_OR_BUS_DEVICE_RESET',
  ],
  [0x29, 0x01, 'Power on occurred'],
  [0x29, 0x02, 'SCSI bus reset occurred'],
  [0x29, 0x03, 'Bus device reset function occurred'],
  [0x29, 0x04, 'Device internal reset'],
  [0x29, 0x07, 'I_T nexus loss occurred'],
  [0x2a, ANY_ASCQ, 'Parameters changed'],
  [0x2a, 0x00, 'Parameters changed', 'PARAMETERS_CHANGED'],
  [0x2a, 0x01, 'Mode parameters changed', 'MODE_PARAMETERS_CHANGED'],
  [0x2a, 0x02, 'Log parameters changed'],
  [0x2a, 0x03, 'Reservations preempted'],
  [0x2a, 0x04, 'Reservations released'],
  [0x2a, 0x05, 'Registrations preempted'],
  [0x2a, 0x06, 'Asymmetric access state changed'],
  [0x2a, 0x09, 'Capacity data has changed', 'CAPACITY_DATA_HAS_CHANGED'],
  [0x2c, 0x00, 'Command sequence error'],
  [0x2f, 0x00, 'Commands cleared by another initiator'],
  [0x31, 0x00, 'Medium format corrupted'],
  [0x32, 0x00, 'No defect spare location available'],
  [0x38, 0x07, 'Thin provisioning soft threshold reached'],
  [0x39, 0x00, 'Saving parameters not supported', 'SAVING_PARAMETERS_NOT_SUPPORTED'],
  [0x3a, ANY_ASCQ, 'Medium not present'],
  [0x3a, 0x00, 'Medium not present', 'MEDIUM_NOT_PRESENT'],
  [0x3e, 0x01, 'Logical unit failure'],
  [0x3e, 0x02, 'Timeout on logical unit'],
  [0x3f, ANY_ASCQ, 'Target operating conditions have changed'],
  [0x3f, 0x00, 'Target operating conditions have changed'],
  [0x3f, 0x01, 'Microcode has been changed'],
  [0x3f, 0x03, 'Inquiry data has changed', 'INQUIRY_DATA_HAS_CHANGED'],
  [0x3f, 0x05, 'Device identifier changed'],
  [0x3f, 0x0e, 'Reported LUNs data has changed', 'REPORTED_LUNS_DATA_HAS_CHANGED'],
  [0x44, 0x00, 'Internal target failure', 'INTERNAL_TARGET_FAILURE'],
  [0x47, ANY_ASCQ, 'SCSI parity error'],
  [0x47, 0x00, 'SCSI parity error'],
  [0x47, 0x01, 'Data phase CRC error detected'],
  [0x4b, ANY_ASCQ, 'Data phase error'],
  [0x4b, 0x00, 'Data phase error'],
  [0x4e, 0x00, 'Overlapped commands attempted'],
  [0x55, ANY_ASCQ, 'System resource failure'],
  [0x55, 0x03, 'Insufficient resources', 'INSUFFICIENT_RESOURCES'],
  [0x5d, ANY_ASCQ, 'Failure prediction threshold exceeded'],
  [0x5d, 0x00, 'Failure prediction threshold exceeded'],
  [0x5d, 0xff, 'Failure prediction threshold exceeded (false)'],
] as const satisfies readonly (
  readonly [number, number, string] | readonly [number, number, string, string]
)[];

type AscEntry = (typeof ASC_TABLE)[number];
type NamedAscEntry = Extract<AscEntry, readonly [number, number, string, string]>;
type AscNames = { readonly [E in NamedAscEntry as E[3]]: readonly [E[0], E[1]] };

/** ASC/ASCQ pairs this library produces or reacts to, by name (the named rows of the table above). */
export const Asc: AscNames = Object.freeze(
  Object.fromEntries(
    ASC_TABLE.filter((e): e is NamedAscEntry => e.length === 4).map(
      ([asc, ascq, , name]) => [name, Object.freeze([asc, ascq] as const)] as const,
    ),
  ),
) as AscNames;

/** ASCQ is a byte, so ANY_ASCQ (0x100) cannot collide with a real qualifier. */
const ascKey = (asc: number, ascq: number): number => asc * 0x200 + ascq;

const ASC_TEXT = new Map<number, string>(
  ASC_TABLE.map(([asc, ascq, text]) => [ascKey(asc, ascq), text]),
);

function hex2(value: number): string {
  return value.toString(16).padStart(2, '0');
}

/**
 * A readable text for an ASC/ASCQ pair: the table's text; for a qualifier the table lacks, the
 * family's text with the qualifier; otherwise the raw codes (ASC or ASCQ >= 0x80 is vendor specific).
 */
export function ascDescription(asc: number, ascq: number): string {
  const exact = ASC_TEXT.get(ascKey(asc, ascq));
  if (exact !== undefined) return exact;
  const family = ASC_TEXT.get(ascKey(asc, ANY_ASCQ));
  if (family !== undefined) return `${family} (ASCQ 0x${hex2(ascq)})`;
  const vendor = asc >= 0x80 || ascq >= 0x80 ? 'vendor specific ' : '';
  return `${vendor}additional sense 0x${hex2(asc)}/0x${hex2(ascq)}`;
}

export const FIXED_SENSE_BYTES = 18;

/**
 * Decodes sense data in either format. Pass exactly the bytes the target returned (sense_len of
 * the virtio-scsi response, not the whole sense buffer). Never throws and never reads past the
 * end: fields the data or its ADDITIONAL SENSE LENGTH does not reach read as 0 / undefined.
 * Returns undefined when there is no sense key to report (empty or too short, or a response code
 * that is not a sense format), so the caller can report the raw status instead.
 */
export function decodeSense(bytes: Uint8Array): ScsiSenseInfo | undefined {
  if (bytes.length < 2) return undefined;
  const responseCode = bytes[0]! & 0x7f;
  let senseKey: number;
  let asc = 0;
  let ascq = 0;
  let information: number | undefined;
  if (responseCode === 0x70 || responseCode === 0x71) {
    // Byte 2 holds the sense key; without it there is nothing to report.
    if (bytes.length < 3) return undefined;
    senseKey = bytes[2]! & 0x0f;
    // ASC/ASCQ exist only if the additional length reaches them.
    const end = bytes.length > 7 ? Math.min(bytes.length, 8 + bytes[7]!) : bytes.length;
    if (end > 12) asc = bytes[12]!;
    if (end > 13) ascq = bytes[13]!;
    // VALID says the INFORMATION field (bytes 3..6) holds the information.
    if ((bytes[0]! & 0x80) !== 0 && bytes.length >= 7) information = getBE(bytes, 3, 4);
  } else if (responseCode === 0x72 || responseCode === 0x73) {
    senseKey = bytes[1]! & 0x0f;
    asc = bytes[2] ?? 0;
    ascq = bytes[3] ?? 0;
    const end = bytes.length > 7 ? Math.min(bytes.length, 8 + bytes[7]!) : bytes.length;
    for (let at = 8; at + 2 <= end;) {
      const type = bytes[at]!;
      const length = bytes[at + 1]!;
      // Information descriptor: VALID bit, then an 8-byte INFORMATION field.
      if (type === 0x00 && length >= 0x0a && at + 12 <= end && (bytes[at + 2]! & 0x80) !== 0) {
        const value = getBE(bytes, at + 4, 8);
        // Values a number cannot hold exactly (>= 2^53) are not reported rather than rounded.
        information = Number.isSafeInteger(value) ? value : undefined;
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
    deferred: responseCode === 0x71 || responseCode === 0x73,
    raw: Buffer.from(bytes),
  };
}

/**
 * Whether CHECK CONDITION with this sense still means the command did its work: RECOVERED
 * ERROR (the target recovered, SPC-4), and NO SENSE without FILEMARK, EOM or ILI (nothing to
 * report). Deferred errors never: they say the current command was not run.
 */
export function isCompletedSense(info: ScsiSenseInfo): boolean {
  if (info.deferred) return false;
  if (info.senseKey === SenseKey.RECOVERED_ERROR) return true;
  if (info.senseKey !== SenseKey.NO_SENSE) return false;
  const raw = info.raw;
  // FILEMARK / EOM / ILI: fixed format byte 2 bits 7..5; descriptor format: none to check here.
  const fixed = ((raw[0] ?? 0) & 0x7f) === 0x70;
  return !fixed || ((raw[2] ?? 0) & 0xe0) === 0;
}

/**
 * Whether a sense condition is worth retrying after a backoff delay, as opposed to failing the
 * request at once:
 *
 * - UNIT ATTENTION (any ASC): the target reports an event it saw since the last command from
 *   this initiator (29/xx power on or reset, 2a/xx parameters or capacity changed, 3f/0e LUN
 *   inventory changed...) and did not run the command. Reporting the condition clears it, so the
 *   same command sent again runs. (The caller may still want to act on the event, e.g. re-read the
 *   capacity after 2a/09.)
 * - NOT READY 04/01 (becoming ready) and 04/0a (asymmetric access state transition): transient
 *   states that end on their own within seconds. Other NOT READY causes either need someone to act
 *   (04/02 initializing command required, 04/03 manual intervention, 3a medium not present) or
 *   last far longer than a retry budget (format, sanitize), so they fail at once.
 * - ABORTED COMMAND: the target gave up on the command for a reason outside the medium (transport
 *   or protocol errors, 47/xx, 4b/xx, commands cleared by another initiator...); a fresh attempt
 *   usually succeeds. Except ASC 0x10: a protection information check failed (guard, application
 *   or reference tag), which reading or writing the same data again will fail in the same way.
 *
 * Everything else is final: MEDIUM ERROR and HARDWARE ERROR (the target has already retried),
 * ILLEGAL REQUEST, DATA PROTECT, MISCOMPARE and the rest are about the request itself, and
 * RECOVERED ERROR / NO SENSE mean the command completed.
 */
export function isRetryableSense(info: Pick<ScsiSenseInfo, 'senseKey' | 'asc' | 'ascq'>): boolean {
  switch (info.senseKey) {
    case SenseKey.UNIT_ATTENTION:
      return true;
    case SenseKey.NOT_READY:
      return info.asc === 0x04 && (info.ascq === 0x01 || info.ascq === 0x0a);
    case SenseKey.ABORTED_COMMAND:
      return info.asc !== 0x10;
    default:
      return false;
  }
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
  // The fixed format's INFORMATION field has 4 bytes: a value it cannot hold is left out.
  if (
    information !== undefined &&
    Number.isInteger(information) &&
    information >= 0 &&
    information <= 0xffff_ffff
  ) {
    out[0] |= 0x80;
    putBE(out, 3, 4, information);
  }
  out[7] = FIXED_SENSE_BYTES - 8;
  out[12] = asc & 0xff;
  out[13] = ascq & 0xff;
  return out;
}
