/**
 * Options of the embedded vhost-user-blk / vhost-user-scsi backend, and their one checking function: everything is
 * validated before any fd is opened, so a bad option never leaves resources behind.
 */

import { InvalidArgumentError } from '../errors.js';
import { VIRTIO_BLK_ID_BYTES } from '../devices/blk/spec.js';
import { VIRTQ_MAX_SIZE } from '../virtqueue/layout.js';
import {
  VHOST_USER_SCSI_MAX_REQUEST_QUEUES,
  VIRTIO_SCSI_MAX_LUN,
  VIRTIO_SCSI_MAX_TARGET,
} from '../devices/scsi/spec.js';

/** The device the backend exports: virtio-blk, or virtio-scsi with one LUN. */
export type BackendType = 'blk' | 'scsi';

/** Misbehaviours for testing frontends; every one is off unless set. */
export interface BlockServerFaults {
  /** Close the socket once this many virtio requests have completed. */
  dropConnectionAfterRequests?: number;
  /** Hold each completion this many milliseconds before it reaches the used ring. */
  delayCompletionsMs?: number;
  /** With delayCompletionsMs: hold only every Nth request (a slow request among fast ones). */
  delayEvery?: number;
  /**
   * Every Nth request completes with VIRTIO_BLK_S_IOERR (without touching the storage); in scsi
   * mode with CHECK CONDITION, MEDIUM ERROR (reads, writes) or HARDWARE ERROR (anything else).
   */
  ioErrorEvery?: number;
  /** scsi: every Nth command completes with SCSI status BUSY, no sense. */
  scsiBusyEvery?: number;
  /** scsi: every Nth command completes with SCSI status TASK SET FULL, no sense. */
  taskSetFullEvery?: number;
  /** scsi: every Nth command completes with virtio-scsi response VIRTIO_SCSI_S_BUSY. */
  virtioBusyEvery?: number;
  /** scsi: every Nth command completes with response VIRTIO_SCSI_S_TRANSPORT_FAILURE. */
  transportFailureEvery?: number;
  /** scsi: every Nth command completes with CHECK CONDITION, UNIT ATTENTION 0x29/0x00. */
  unitAttentionEvery?: number;
  /** scsi: every Nth READ transfers half its blocks (rounded down), GOOD status, resid set. */
  shortReadEvery?: number;
  /**
   * scsi: the LUN is write-protected (writes, UNMAP, WRITE SAME fail with DATA PROTECT 0x27/0x00)
   * while MODE SENSE reports it writable, so a frontend meets the error on its normal write path.
   */
  hideWriteProtect?: boolean;
  /**
   * scsi: ABORT TASK is answered VIRTIO_SCSI_S_FUNCTION_REJECTED and the command it names stays
   * held (a delayed completion goes on as if nothing happened). Other TMFs work as usual.
   */
  rejectAbortTask?: boolean;
  /**
   * scsi: LOGICAL UNIT RESET is answered VIRTIO_SCSI_S_FUNCTION_REJECTED and changes nothing (a
   * LUN that cannot be reset: the frontend must give up on it rather than wait).
   */
  rejectLunReset?: boolean;
  /**
   * scsi: task management requests on the controlq are neither carried out nor answered; each
   * chain stays in flight until the ring stops (GET_VRING_BASE, RESET_OWNER) or the connection
   * goes. Asynchronous-notification requests are still answered.
   */
  ignoreTaskManagement?: boolean;
  /** After N requests, push a used element whose id is not a chain in flight. */
  badUsedIdAfter?: number;
  /** After N requests, push a used len larger than the chain's writable bytes. */
  badUsedLenAfter?: number;
  /** After N requests, push the same used element twice. */
  duplicateUsedAfter?: number;
  /** Reply to this request (e.g. 'VHOST_USER_GET_FEATURES') with another request code. */
  wrongReplyCode?: string;
  /** Reply to this request with a payload of the wrong size. */
  wrongReplySize?: string;
  /** Send only the first bytes of the reply to this request, then keep the socket open. */
  truncatedReply?: string;
}

export interface BlockServerOptions {
  /** 'blk' (default): vhost-user-blk; 'scsi': vhost-user-scsi with one LUN. */
  type?: BackendType;
  /** scsi: the target id of the LUN, 0..255, default 0; other targets answer BAD_TARGET. */
  target?: number;
  /** scsi: the LUN number, 0..16383, default 0. */
  lun?: number;
  /** scsi: max_sectors (512-byte units per command) advertised and enforced, default 0xFFFF. */
  maxSectors?: number;
  /** Listen on this path (a stale socket file there is removed first). */
  socketPath?: string;
  /** An already-listening socket fd (the vhost-user spec's --fd convention). */
  listenFd?: number;
  /** Backing file; the disk has its size. Exactly one of file / size. */
  file?: string;
  /** RAM disk of this many bytes. */
  size?: number;
  readOnly?: boolean;
  /** blk_size: power of two in 512..65536, default 512. */
  blockSize?: number;
  /** Request queues (num_queues; scsi adds the control and event queues), default 1. */
  queues?: number;
  /** Largest ring accepted (SET_VRING_NUM), default 1024. */
  queueSize?: number;
  /** size_max advertised (VIRTIO_BLK_F_SIZE_MAX) and enforced; 0 = no limit (not offered), default 0; else at least 16. */
  sizeMax?: number;
  /** seg_max advertised and enforced, default 126. */
  segMax?: number;
  /** Ask for no kicks and drain the rings by polling. */
  polling?: boolean;
  /** O_DIRECT for the file: default (undefined) tries it and falls back; false never; true insists. */
  direct?: boolean;
  /** VIRTIO_BLK_T_GET_ID / VPD 0x80 answer (at most 20 bytes), default 'vhost-user-embedded'. */
  serial?: string;
  faults?: BlockServerFaults;
  /** Receives a one-line summary of every vhost-user message, both directions. */
  trace?: (line: string) => void;
}

/** Options after defaults, as the rest of the backend uses them. */
export interface ResolvedOptions {
  type: BackendType;
  target: number;
  lun: number;
  maxSectors: number;
  socketPath: string | undefined;
  listenFd: number | undefined;
  file: string | undefined;
  size: number | undefined;
  readOnly: boolean;
  blockSize: number;
  queues: number;
  queueSize: number;
  sizeMax: number;
  segMax: number;
  polling: boolean;
  direct: boolean | undefined;
  serial: Buffer;
  faults: BlockServerFaults;
  trace: ((line: string) => void) | undefined;
}

const REQUEST_FAULTS = ['wrongReplyCode', 'wrongReplySize', 'truncatedReply'] as const;
const COUNT_FAULTS = [
  'dropConnectionAfterRequests',
  'delayCompletionsMs',
  'delayEvery',
  'ioErrorEvery',
  'badUsedIdAfter',
  'badUsedLenAfter',
  'duplicateUsedAfter',
] as const;
/** Every-Nth faults that only virtio-scsi has (1 = every request; 0 is refused). */
const SCSI_EVERY_FAULTS = [
  'scsiBusyEvery',
  'taskSetFullEvery',
  'virtioBusyEvery',
  'transportFailureEvery',
  'unitAttentionEvery',
  'shortReadEvery',
] as const;
/** On/off faults that only virtio-scsi has. */
const SCSI_BOOLEAN_FAULTS = [
  'hideWriteProtect',
  'rejectAbortTask',
  'rejectLunReset',
  'ignoreTaskManagement',
] as const;

/** @throws InvalidArgumentError naming the first bad option. */
export function resolveOptions(options: BlockServerOptions): ResolvedOptions {
  if (typeof options !== 'object' || options === null) {
    throw new InvalidArgumentError('options must be an object');
  }
  if ((options.socketPath === undefined) === (options.listenFd === undefined)) {
    throw new InvalidArgumentError('exactly one of socketPath and listenFd must be given');
  }
  if (
    options.socketPath !== undefined &&
    (typeof options.socketPath !== 'string' || !options.socketPath)
  ) {
    throw new InvalidArgumentError('socketPath must be a non-empty string');
  }
  const listenFd = optionalInt('listenFd', options.listenFd, 0, 0x7fff_ffff);
  if ((options.file === undefined) === (options.size === undefined)) {
    throw new InvalidArgumentError('exactly one of file and size must be given');
  }
  if (options.file !== undefined && (typeof options.file !== 'string' || !options.file)) {
    throw new InvalidArgumentError('file must be a non-empty string');
  }
  const size = optionalInt('size', options.size, 512, Number.MAX_SAFE_INTEGER);
  const blockSize = optionalInt('blockSize', options.blockSize, 512, 65536) ?? 512;
  if ((blockSize & (blockSize - 1)) !== 0) {
    throw new InvalidArgumentError(`blockSize must be a power of two, got ${blockSize}`);
  }
  if (size !== undefined && size < blockSize) {
    throw new InvalidArgumentError(`size ${size} is smaller than one ${blockSize}-byte block`);
  }
  const queueSize = optionalInt('queueSize', options.queueSize, 1, VIRTQ_MAX_SIZE) ?? 1024;
  if ((queueSize & (queueSize - 1)) !== 0) {
    throw new InvalidArgumentError(`queueSize must be a power of two, got ${queueSize}`);
  }
  const serial = Buffer.from(options.serial ?? 'vhost-user-embedded', 'utf8');
  if (typeof (options.serial ?? '') !== 'string' || serial.length > VIRTIO_BLK_ID_BYTES) {
    throw new InvalidArgumentError(
      `serial must be a string of at most ${VIRTIO_BLK_ID_BYTES} bytes`,
    );
  }
  for (const name of ['readOnly', 'polling', 'direct'] as const) {
    const value = options[name];
    if (value !== undefined && typeof value !== 'boolean') {
      throw new InvalidArgumentError(`${name} must be a boolean`);
    }
  }
  if (options.trace !== undefined && typeof options.trace !== 'function') {
    throw new InvalidArgumentError('trace must be a function');
  }
  if (options.type !== undefined && options.type !== 'blk' && options.type !== 'scsi') {
    throw new InvalidArgumentError(`type must be 'blk' or 'scsi', got ${String(options.type)}`);
  }
  const type = options.type ?? 'blk';
  const faults = options.faults ?? {};
  if (typeof faults !== 'object' || faults === null) {
    throw new InvalidArgumentError('faults must be an object');
  }
  for (const name of COUNT_FAULTS) optionalInt(`faults.${name}`, faults[name], 0, 0x7fff_ffff);
  for (const name of ['ioErrorEvery', 'delayEvery'] as const) {
    if (faults[name] === 0) throw new InvalidArgumentError(`faults.${name} must be >= 1`);
  }
  for (const name of SCSI_EVERY_FAULTS) optionalInt(`faults.${name}`, faults[name], 1, 0x7fff_ffff);
  for (const name of SCSI_BOOLEAN_FAULTS) {
    if (faults[name] !== undefined && typeof faults[name] !== 'boolean') {
      throw new InvalidArgumentError(`faults.${name} must be a boolean`);
    }
  }
  if (type === 'blk') {
    // Options of the other device type are mistakes, not no-ops.
    const scsiOnly = [
      ...(['target', 'lun', 'maxSectors'] as const).filter((n) => options[n] !== undefined),
      ...[...SCSI_EVERY_FAULTS, ...SCSI_BOOLEAN_FAULTS]
        .filter((n) => faults[n] !== undefined)
        .map((n) => `faults.${n}`),
    ];
    if (scsiOnly.length > 0) {
      throw new InvalidArgumentError(`${scsiOnly[0]} needs type 'scsi'`);
    }
  } else if (options.sizeMax !== undefined) {
    throw new InvalidArgumentError("sizeMax is a virtio-blk limit; type 'scsi' has maxSectors");
  }
  const maxQueues = type === 'scsi' ? VHOST_USER_SCSI_MAX_REQUEST_QUEUES : 256;
  for (const name of REQUEST_FAULTS) {
    const value = faults[name];
    if (value !== undefined && (typeof value !== 'string' || !value.startsWith('VHOST_USER_'))) {
      throw new InvalidArgumentError(
        `faults.${name} must be a request name like VHOST_USER_GET_FEATURES`,
      );
    }
  }
  return {
    type,
    target: optionalInt('target', options.target, 0, VIRTIO_SCSI_MAX_TARGET) ?? 0,
    lun: optionalInt('lun', options.lun, 0, VIRTIO_SCSI_MAX_LUN) ?? 0,
    maxSectors: optionalInt('maxSectors', options.maxSectors, 1, 0xffff_ffff) ?? 0xffff,
    socketPath: options.socketPath,
    listenFd,
    file: options.file,
    size,
    readOnly: options.readOnly === true,
    blockSize,
    queues: optionalInt('queues', options.queues, 1, maxQueues) ?? 1,
    queueSize,
    sizeMax: checkSizeMax(options.sizeMax),
    segMax: optionalInt('segMax', options.segMax, 1, 0xffff_ffff) ?? 126,
    polling: options.polling === true,
    direct: options.direct,
    serial,
    faults: { ...faults },
    trace: options.trace,
  };
}

/**
 * size_max 1..15 would make a device that fails every request: the limit is enforced on every
 * descriptor, and the request header and each discard / write-zeroes segment are 16-byte
 * descriptors that drivers never split.
 */
function checkSizeMax(value: unknown): number {
  const sizeMax = optionalInt('sizeMax', value, 0, 0xffff_ffff) ?? 0;
  if (sizeMax > 0 && sizeMax < 16) {
    throw new InvalidArgumentError(`sizeMax must be 0 (no limit) or at least 16, got ${sizeMax}`);
  }
  return sizeMax;
}

function optionalInt(name: string, value: unknown, min: number, max: number): number | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw new InvalidArgumentError(
      `${name} must be an integer in [${min}, ${max}], got ${String(value)}`,
    );
  }
  return value;
}
