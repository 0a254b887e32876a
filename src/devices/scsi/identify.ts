/**
 * Finding and identifying the LUN a virtio-scsi device does I/O on: the scan (REPORT LUNS per
 * target, INQUIRY per LUN), then TEST UNIT READY, INQUIRY VPD pages, READ CAPACITY (16, else
 * 10) and MODE SENSE. Runs on the open device through its pass-through command path, so
 * retries, timeouts and failures behave as for any command.
 */

import { ScsiSenseError, UnsupportedError, VirtioScsiResponseError } from '../../errors.js';
import type { BlockLimits } from '../../block/request.js';
import {
  buildInquiry,
  buildModeSense10,
  buildModeSense6,
  buildReadCapacity10,
  buildReadCapacity16,
  buildReportLuns,
  buildTestUnitReady,
  MAX_BLOCKS_10,
  MAX_BLOCKS_16,
  MODE_PAGE_ALL,
  MODE_PAGE_CACHING,
} from './cdb.js';
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
  designatorText,
  READ_CAPACITY_10_BYTES,
  READ_CAPACITY_10_OVERFLOW,
  READ_CAPACITY_16_BYTES,
  reportLunsLength,
  vpdPageLength,
  SCSI_TYPE_DISK,
  STANDARD_INQUIRY_BYTES,
  VpdPage,
  type BlockLimitsVpd,
  type Capacity,
  type ProvisioningVpd,
} from './data.js';
import { SenseKey } from './sense.js';
import { VIRTIO_SCSI_MAX_LUN, VirtioScsiResponse } from './spec.js';
import type { ScsiIdentity, ScsiLunInfo } from './driver.js';

/** Sends one command and resolves to its data; rejects with the device's typed errors. */
export type ScsiCommandRunner = (
  cdb: Uint8Array,
  options: { dataIn?: number; target?: number; lun?: number },
) => Promise<{ data: Buffer; status: number }>;

export interface IdentifyOptions {
  /** Open this LUN; scan for the first disk when both are undefined. */
  target: number | undefined;
  lun: number | undefined;
  /** Scan every target (for `vhost-user info`), not only up to the first disk. */
  scanAll: boolean;
  maxTarget: number;
  maxLun: number;
  /** Bytes per command the controller allows (max_sectors), Infinity if it sets none. */
  maxTransferBytes: number;
  maxSegments: number;
}

const VPD_ALLOCATION = 252;
/** VPD pages are re-read at their full length up to this (PAGE LENGTH is 16 bits). */
/** INQUIRY's ALLOCATION LENGTH is 16 bits: the last 4 bytes of a maximal page stay unread. */
const VPD_MAX_ALLOCATION = 0xffff;
const REPORT_LUNS_ALLOCATION = 8 + 8 * 256;
/** SPC-4: REPORT LUNS with an allocation length below 16 is an invalid field. */
const REPORT_LUNS_MIN_ALLOCATION = 16;
/** Every LUN virtio-scsi can address, and no more: a backend's LUN LIST LENGTH is not trusted. */
const REPORT_LUNS_MAX_ALLOCATION = 8 + 8 * (VIRTIO_SCSI_MAX_LUN + 1);
/** All mode pages fit MODE SENSE(6)'s 255 bytes on a disk; the header alone is all we need. */
const MODE_SENSE_ALLOCATION = 255;

function cdb(build: (out: Uint8Array, at: number) => number): Uint8Array {
  const out = new Uint8Array(16);
  return out.subarray(0, build(out, 0));
}

function isSense(err: unknown, key: number): err is ScsiSenseError {
  return err instanceof ScsiSenseError && err.senseKey === key;
}

function isResponse(err: unknown, response: number): boolean {
  return err instanceof VirtioScsiResponseError && err.response === response;
}

/** LUNs of one target: REPORT LUNS, or LUN 0 alone if the target does not implement it. */
async function lunsOf(
  run: ScsiCommandRunner,
  target: number,
  maxTransferBytes: number,
): Promise<number[] | undefined> {
  // A controller's max_sectors may allow less than a 256-LUN list: ask for what one command may
  // carry, in whole entries, and never below the 16 bytes SPC-4 requires.
  const allocation = Math.max(
    REPORT_LUNS_MIN_ALLOCATION,
    Math.min(REPORT_LUNS_ALLOCATION, Math.floor(maxTransferBytes / 8) * 8),
  );
  try {
    const { data } = await run(
      cdb((o, a) => buildReportLuns(o, a, allocation)),
      {
        dataIn: allocation,
        target,
        lun: 0,
      },
    );
    if (reportLunsLength(data) > data.length && data.length === allocation) {
      // More LUNs than fit: ask again with room for all of them.
      const length = Math.min(reportLunsLength(data), REPORT_LUNS_MAX_ALLOCATION, maxTransferBytes);
      const again = await run(
        cdb((o, a) => buildReportLuns(o, a, length)),
        {
          dataIn: length,
          target,
          lun: 0,
        },
      );
      return decodeReportLuns(again.data);
    }
    return decodeReportLuns(data);
  } catch (err) {
    if (isResponse(err, VirtioScsiResponse.VIRTIO_SCSI_S_BAD_TARGET)) return undefined;
    if (isResponse(err, VirtioScsiResponse.VIRTIO_SCSI_S_INCORRECT_LUN)) return undefined;
    if (err instanceof ScsiSenseError) return [0];
    throw err;
  }
}

async function inquire(
  run: ScsiCommandRunner,
  target: number,
  lun: number,
): Promise<ScsiLunInfo | undefined> {
  try {
    const { data } = await run(
      cdb((o, a) => buildInquiry(o, a, undefined, STANDARD_INQUIRY_BYTES)),
      {
        dataIn: STANDARD_INQUIRY_BYTES,
        target,
        lun,
      },
    );
    const inquiry = decodeStandardInquiry(data);
    if (inquiry.peripheralQualifier !== 0) return undefined;
    return {
      target,
      lun,
      deviceType: inquiry.deviceType,
      vendor: inquiry.vendor,
      product: inquiry.product,
      revision: inquiry.revision,
    };
  } catch (err) {
    if (err instanceof ScsiSenseError || err instanceof VirtioScsiResponseError) return undefined;
    throw err;
  }
}

/** Finds the LUNs to report and the one to open. */
async function scan(
  run: ScsiCommandRunner,
  options: IdentifyOptions,
): Promise<{ chosen: ScsiLunInfo | undefined; luns: ScsiLunInfo[] }> {
  const luns: ScsiLunInfo[] = [];
  let chosen: ScsiLunInfo | undefined;
  const targets =
    options.target !== undefined
      ? [options.target]
      : Array.from({ length: options.maxTarget + 1 }, (_, i) => i);
  for (const target of targets) {
    const list =
      options.lun !== undefined
        ? [options.lun]
        : await lunsOf(run, target, options.maxTransferBytes);
    if (list === undefined) continue;
    for (const lun of list) {
      if (lun > options.maxLun) continue;
      const found = await inquire(run, target, lun);
      if (found === undefined) continue;
      luns.push(found);
      if (chosen === undefined && found.deviceType === SCSI_TYPE_DISK) chosen = found;
    }
    if (chosen !== undefined && !options.scanAll) break;
  }
  return { chosen, luns };
}

async function vpd(
  run: ScsiCommandRunner,
  page: number,
  address: { target: number; lun: number },
  maxTransferBytes: number,
): Promise<Buffer | undefined> {
  try {
    const { data } = await run(
      cdb((o, a) => buildInquiry(o, a, page, VPD_ALLOCATION)),
      {
        dataIn: VPD_ALLOCATION,
        ...address,
      },
    );
    if (data.length < 4 || data[1] !== page) return undefined;
    const full = Math.min(vpdPageLength(data), VPD_MAX_ALLOCATION, maxTransferBytes);
    if (full <= data.length || data.length < VPD_ALLOCATION) return data;
    // A longer page (many designators): read it whole.
    const again = await run(
      cdb((o, a) => buildInquiry(o, a, page, full)),
      {
        dataIn: full,
        ...address,
      },
    );
    return again.data.length >= 4 && again.data[1] === page ? again.data : data;
  } catch (err) {
    if (isSense(err, SenseKey.ILLEGAL_REQUEST)) return undefined;
    throw err;
  }
}

async function readCapacity(
  run: ScsiCommandRunner,
  address: { target: number; lun: number },
): Promise<{ capacity: Capacity; use16: boolean }> {
  try {
    const { data } = await run(
      cdb((o, a) => buildReadCapacity16(o, a, READ_CAPACITY_16_BYTES)),
      {
        dataIn: READ_CAPACITY_16_BYTES,
        ...address,
      },
    );
    if (data.length >= 12) return { capacity: decodeReadCapacity16(data), use16: true };
  } catch (err) {
    if (!isSense(err, SenseKey.ILLEGAL_REQUEST)) throw err;
  }
  const { data } = await run(cdb(buildReadCapacity10), {
    dataIn: READ_CAPACITY_10_BYTES,
    ...address,
  });
  if (data.length < READ_CAPACITY_10_BYTES || data.readUInt32BE(0) === READ_CAPACITY_10_OVERFLOW) {
    throw new UnsupportedError(
      'open',
      'the LUN needs READ CAPACITY(16) for its size but does not implement it',
    );
  }
  return { capacity: decodeReadCapacity10(data), use16: false };
}

/**
 * The write-protect bit (in every mode parameter header) and the write cache (caching page).
 * Asks like Linux's sd: all pages first, then the caching page alone, with MODE SENSE(10) and
 * then (6); a LUN that refuses every form is taken as writable with an unknown cache.
 */
async function modeSense(
  run: ScsiCommandRunner,
  address: { target: number; lun: number },
): Promise<{ writeProtect: boolean; writeCache: boolean | undefined }> {
  for (const page of [MODE_PAGE_ALL, MODE_PAGE_CACHING]) {
    for (const ten of [true, false]) {
      try {
        const build = ten ? buildModeSense10 : buildModeSense6;
        const { data } = await run(
          cdb((o, a) => build(o, a, page, MODE_SENSE_ALLOCATION)),
          { dataIn: MODE_SENSE_ALLOCATION, ...address },
        );
        if (data.length >= (ten ? 4 : 3)) return decodeModeSense(data, ten);
      } catch (err) {
        if (!isSense(err, SenseKey.ILLEGAL_REQUEST)) throw err;
      }
    }
  }
  return { writeProtect: false, writeCache: undefined };
}

/** Runs the scan and identification; throws UnsupportedError if no disk LUN answers. */
export async function identifyScsi(
  run: ScsiCommandRunner,
  options: IdentifyOptions,
): Promise<ScsiIdentity> {
  const { chosen, luns } = await scan(run, options);
  if (chosen === undefined) {
    const where =
      options.target === undefined
        ? `targets 0..${options.maxTarget}`
        : `target ${options.target} LUN ${options.lun ?? '(any)'}`;
    // Say what did answer (a CD-ROM, an enclosure...), so a scan is never silent.
    const seen = luns.map(
      (l) => `target ${l.target} lun ${l.lun}: type 0x${l.deviceType.toString(16)} ${l.product}`,
    );
    throw new UnsupportedError(
      'open',
      `no disk logical unit answered on ${where}${seen.length > 0 ? ` (found ${seen.join('; ')})` : ''}`,
    );
  }
  const address = { target: chosen.target, lun: chosen.lun };
  // The first command after a reset or power-on gets UNIT ATTENTION: the driver retries it.
  await run(cdb(buildTestUnitReady), address);

  const pages = await vpd(run, VpdPage.SUPPORTED_PAGES, address, options.maxTransferBytes);
  const supported = pages === undefined ? [] : decodeSupportedPages(pages);
  const page = async (code: number): Promise<Buffer | undefined> =>
    supported.includes(code) ? vpd(run, code, address, options.maxTransferBytes) : undefined;
  const serialPage = await page(VpdPage.UNIT_SERIAL_NUMBER);
  const serial = serialPage === undefined ? undefined : decodeUnitSerialNumber(serialPage);
  const idPage = await page(VpdPage.DEVICE_IDENTIFICATION);
  const designator =
    idPage === undefined ? undefined : designatorText(decodeDeviceIdentification(idPage));
  const limitsPage = await page(VpdPage.BLOCK_LIMITS);
  const blockLimits: BlockLimitsVpd | undefined =
    limitsPage === undefined ? undefined : decodeBlockLimits(limitsPage);
  const provisioningPage = await page(VpdPage.LOGICAL_BLOCK_PROVISIONING);
  const provisioning: ProvisioningVpd | undefined =
    provisioningPage === undefined ? undefined : decodeProvisioning(provisioningPage);

  const { capacity, use16 } = await readCapacity(run, address);
  const blockSize = capacity.blockLength;
  if (blockSize < 512 || blockSize > 65536 || (blockSize & (blockSize - 1)) !== 0) {
    throw new UnsupportedError(
      'open',
      `the LUN's block length ${blockSize} is not a power of two in 512..65536`,
    );
  }
  // No READ or WRITE could carry a block: every I/O would break the controller's limit.
  if (options.maxTransferBytes < blockSize) {
    throw new UnsupportedError(
      'open',
      `the controller's max_sectors allows ${options.maxTransferBytes} bytes per command, ` +
        `less than one ${blockSize}-byte block of the LUN`,
    );
  }
  const bytes = capacity.blocks * blockSize;
  if (!Number.isSafeInteger(bytes)) {
    throw new UnsupportedError(
      'open',
      `the LUN's capacity (${capacity.blocks} blocks) is too large`,
    );
  }
  const mode = await modeSense(run, address);

  // Per command: the controller's max_sectors, the LUN's MAXIMUM TRANSFER LENGTH, and what the
  // CDB's transfer length field can carry (65,535 blocks without the 16-byte commands).
  const cdbBlocks = use16 ? MAX_BLOCKS_16 : MAX_BLOCKS_10;
  const lunBlocks =
    blockLimits !== undefined && blockLimits.maxTransferBlocks > 0
      ? blockLimits.maxTransferBlocks
      : Infinity;
  const maxTransferBytes = floorTo(
    Math.min(options.maxTransferBytes, lunBlocks * blockSize, cdbBlocks * blockSize),
    blockSize,
  );
  // Thin provisioning must be enabled (LBPME, READ CAPACITY(16)) for the deallocation commands
  // the provisioning page lists to mean anything, as Linux's sd requires.
  const thin = use16 && capacity.provisioning;
  const unmap = thin && provisioning?.unmap === true;
  const writeSameUnmap = thin && provisioning?.writeSameUnmap === true;
  const unmapBlocks =
    blockLimits !== undefined &&
    blockLimits.maxUnmapBlocks > 0 &&
    blockLimits.maxUnmapDescriptors > 0
      ? blockLimits.maxUnmapBlocks
      : MAX_BLOCKS_16;
  const writeSameBlocks =
    blockLimits !== undefined && blockLimits.maxWriteSameBlocks > 0
      ? Math.min(blockLimits.maxWriteSameBlocks, MAX_BLOCKS_16)
      : MAX_BLOCKS_16;
  // WRITE SAME support cannot be asked for; a LUN that reports a write-same limit or
  // WRITE SAME with UNMAP implements it.
  const canWriteSame = use16 && (writeSameUnmap || (blockLimits?.maxWriteSameBlocks ?? 0) > 0);
  const limits: BlockLimits = {
    blockSize,
    capacity: bytes,
    readOnly: mode.writeProtect,
    maxSegmentBytes: Infinity,
    maxSegments: options.maxSegments,
    maxTransferBytes: Math.max(blockSize, maxTransferBytes),
    // Always SYNCHRONIZE CACHE, even where the write cache was off at open (WCE 0): it may be
    // turned on later (MODE SELECT, another initiator), and a flush skipped then would leave
    // writes not durable. Such a LUN need not implement the command: see writeThrough.
    canFlush: true,
    canDiscard: unmap || writeSameUnmap,
    canWriteZeroes: canWriteSame,
    maxDiscardBytes: floorTo(
      Math.min(unmap ? unmapBlocks : writeSameBlocks, 1 << 30) * blockSize,
      blockSize,
    ),
    maxWriteZeroesBytes: floorTo(Math.min(writeSameBlocks, 1 << 30) * blockSize, blockSize),
  };
  return {
    target: chosen.target,
    lun: chosen.lun,
    limits,
    settings: {
      blockSize,
      use16,
      discardWithUnmap: unmap,
      zeroesByUnmap: writeSameUnmap && capacity.readsZeroes,
      writeThrough: mode.writeCache === false,
    },
    info: {
      vendor: chosen.vendor,
      product: chosen.product,
      revision: chosen.revision,
      serial,
      designator,
      id: serial !== undefined && serial.length > 0 ? serial : (designator ?? ''),
      commands16: use16,
      writeCache:
        mode.writeCache === undefined ? 'unknown' : mode.writeCache ? 'writeback' : 'writethrough',
      blockLimits,
      provisioning,
      luns,
    },
  };
}

function floorTo(n: number, unit: number): number {
  return Number.isFinite(n)
    ? Math.floor(n / unit) * unit
    : Math.floor(Number.MAX_SAFE_INTEGER / unit) * unit;
}
