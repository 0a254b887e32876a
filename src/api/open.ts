import { constants } from 'node:buffer';
import { InvalidArgumentError } from '../errors.js';
import { VirtioBlkDriver } from '../devices/blk/driver.js';
import { VirtioScsiDriver } from '../devices/scsi/driver.js';
import { identifyScsi } from '../devices/scsi/identify.js';
import type { VhostSetupOptions } from '../devices/vhost-setup.js';
import {
  VHOST_USER_SCSI_MAX_REQUEST_QUEUES,
  VIRTIO_SCSI_MAX_LUN,
  VIRTIO_SCSI_MAX_TARGET,
} from '../devices/scsi/spec.js';
import type { HugePages } from '../memory/region.js';
import { describeTrace, traceFromEnv } from './trace.js';
import {
  BlockDevice,
  DEFAULT_REQUEST_TIMEOUT_MS,
  type BlockDeviceSettings,
} from './block-device.js';
import {
  checkCompletionOptions,
  type CompletionMode,
  type CompletionOptions,
} from '../completion/index.js';
import { checkIntegerOption, checkTimeout } from './validate.js';

export interface OpenOptions {
  /** Descriptors per virtqueue: a power of two, default 256 (at least 4, at most 32768). */
  queueSize?: number;
  /** Request queues to use (the device must have that many). Default 1. */
  queues?: number;
  /** Bytes of shared memory for I/O buffers (allocBuffer and bounce buffers). Default 64 MiB, at most buffer.constants.MAX_LENGTH. */
  memorySize?: number;
  /** Back shared memory with 2 MiB or 1 GiB hugepages (they must be reserved). Default false. */
  hugepages?: HugePages;
  /** Create the memory as a file in this hugetlbfs mount instead of memfd_create(MFD_HUGETLB). */
  hugetlbfsPath?: string;
  /** Milliseconds to wait for each handshake reply. Default 5000. */
  timeout?: number;
  /**
   * Milliseconds before an I/O call fails with TimeoutError. Default 30000; 0 disables. Checked
   * every 250 ms: a call fails up to 500 ms after its timeout (later if timers run late). With 0,
   * close() waits up to 30 s for calls in flight before it fails them.
   */
  requestTimeout?: number;
  /** Largest bounce buffer per request, in bytes; longer copies are split and pipelined. Default 1 MiB. */
  bounceChunkSize?: number;
  /**
   * Leave features out even when the backend offers them: VIRTIO_RING_F_EVENT_IDX,
   * VIRTIO_RING_F_INDIRECT_DESC, VHOST_USER_PROTOCOL_F_REPLY_ACK. For testing and debugging backends.
   */
  disableFeatures?: { eventIdx?: boolean; indirect?: boolean; replyAck?: boolean };
  /**
   * How completions are noticed: 'event' (eventfd wake-ups), 'poll' (check the rings every
   * event-loop turn while I/O is in flight), 'sleep-poll' (poll, sleep in native code, poll),
   * 'adaptive' (spin for a self-tuned time while I/O is in flight, else sleep on the eventfd).
   * Default 'adaptive'.
   */
  completion?: CompletionMode;
  /** Knobs of the completion strategies (defaults come from measurement). */
  completionOptions?: CompletionOptions;
  /** Log every vhost-user message (true: to stderr). Default: on when DEBUG includes "vhost-user". */
  trace?: boolean | ((line: string) => void);
}

/** Options of openScsiDevice: the LUN to use, and everything openBlockDevice takes. */
export interface ScsiOpenOptions extends OpenOptions {
  /** SCSI target and LUN. When neither is given, the first disk LUN that answers is opened. */
  target?: number;
  lun?: number;
  /** Scan every target and list every LUN in `dev.info.luns` (slower; `vhost-user info` does). */
  scanAll?: boolean;
}

/** Options of openDevice: the device type and that type's options. */
export type DeviceOpenOptions =
  ({ type?: 'blk' } & OpenOptions) | ({ type: 'scsi' } & ScsiOpenOptions);

const MiB = 1024 * 1024;

/** The checked options every device type shares. */
interface CommonSettings {
  setup: VhostSetupOptions;
  queues: number;
  requestTimeout: number;
  completion: CompletionMode;
}

function checkCommonOptions(socketPath: string, options: OpenOptions): CommonSettings {
  if (typeof socketPath !== 'string' || socketPath.length === 0) {
    throw new InvalidArgumentError('socketPath must be a non-empty string');
  }
  // A request is a chain of at least 3 descriptors (header or request, data, status or
  // response), and no chain may be longer than its queue, indirect tables included.
  const queueSize = checkIntegerOption('queueSize', options.queueSize, 4, 32768, 256);
  if ((queueSize & (queueSize - 1)) !== 0) {
    throw new InvalidArgumentError(`queueSize must be a power of two, got ${queueSize}`);
  }
  const hugepages = options.hugepages ?? false;
  if (hugepages !== false && hugepages !== '2M' && hugepages !== '1G') {
    throw new InvalidArgumentError(
      `hugepages must be false, '2M' or '1G', got ${String(hugepages)}`,
    );
  }
  const requestTimeout = options.requestTimeout ?? DEFAULT_REQUEST_TIMEOUT_MS;
  if (requestTimeout !== 0) checkTimeout('requestTimeout', requestTimeout);
  const completion = options.completion ?? 'adaptive';
  checkCompletionOptions(completion, options.completionOptions);
  const log = options.trace === undefined ? traceFromEnv() : options.trace;
  return {
    setup: {
      queueSize,
      memorySize: checkIntegerOption(
        'memorySize',
        options.memorySize,
        64 * 1024,
        constants.MAX_LENGTH,
        64 * MiB,
      ),
      hugepages,
      hugetlbfsPath: options.hugetlbfsPath,
      timeoutMs: checkTimeout('timeout', options.timeout) ?? 5000,
      trace: describeTrace(log),
      disable: {
        eventIdx: options.disableFeatures?.eventIdx === true,
        indirect: options.disableFeatures?.indirect === true,
        replyAck: options.disableFeatures?.replyAck === true,
      },
    },
    queues: checkIntegerOption('queues', options.queues, 1, 256, 1),
    requestTimeout,
    completion,
  };
}

function deviceSettings(common: CommonSettings, options: OpenOptions): BlockDeviceSettings {
  return {
    requestTimeoutMs: common.requestTimeout,
    completion: common.completion,
    completionOptions: options.completionOptions,
    bounceChunkBytes: checkIntegerOption(
      'bounceChunkSize',
      options.bounceChunkSize,
      4096,
      64 * MiB,
      MiB,
    ),
  };
}

/**
 * Connects to a vhost-user-blk backend's socket and sets the device up.
 * @throws ConnectError, TimeoutError, ProtocolError, BackendRejectedError, UnsupportedError,
 *   SystemError (memory), InvalidArgumentError (options)
 */
export async function openBlockDevice(
  socketPath: string,
  options: OpenOptions = {},
): Promise<BlockDevice> {
  options ??= {}; // null is no options
  const common = checkCommonOptions(socketPath, options);
  const settings = deviceSettings(common, options);
  const driver = await VirtioBlkDriver.open(socketPath, { ...common.setup, queues: common.queues });
  return new BlockDevice(driver, settings);
}

/**
 * Connects to a vhost-user-scsi controller (SPDK's vhost-scsi, `vhost-user serve --type scsi`),
 * finds the LUN (the one given, or the first disk that answers), identifies it, and returns the
 * same device interface as openBlockDevice.
 * @throws as openBlockDevice, plus UnsupportedError when no disk LUN answers, and the SCSI
 *   errors (ScsiSenseError, ScsiStatusError, VirtioScsiResponseError) of the identification
 */
export async function openScsiDevice(
  socketPath: string,
  options: ScsiOpenOptions = {},
): Promise<BlockDevice> {
  options ??= {}; // null is no options
  const common = checkCommonOptions(socketPath, options);
  if (common.queues > VHOST_USER_SCSI_MAX_REQUEST_QUEUES) {
    throw new InvalidArgumentError(
      `queues must be at most ${VHOST_USER_SCSI_MAX_REQUEST_QUEUES} on a vhost-user-scsi device ` +
        `(rings 0..255, two of them the control and event queues), got ${common.queues}`,
    );
  }
  const settings = deviceSettings(common, options);
  const target =
    options.target === undefined
      ? undefined
      : checkIntegerOption('target', options.target, 0, VIRTIO_SCSI_MAX_TARGET, 0);
  const lun =
    options.lun === undefined
      ? undefined
      : checkIntegerOption('lun', options.lun, 0, VIRTIO_SCSI_MAX_LUN, 0);
  const driver = await VirtioScsiDriver.open(socketPath, {
    ...common.setup,
    queues: common.queues,
  });
  const dev = new BlockDevice(driver, settings);
  driver.setEventHandler((event) => dev.emitDeviceEvent(event));
  driver.setDeferredErrorHandler((error) => dev.emitDeferredError(error));
  try {
    const config = driver.info.config;
    const identity = await identifyScsi((cdb, o) => dev.scsiCommand(cdb, o), {
      target,
      lun: lun ?? (target === undefined ? undefined : 0),
      scanAll: options.scanAll === true,
      maxTarget: Math.min(config.maxTarget, VIRTIO_SCSI_MAX_TARGET),
      maxLun: Math.min(config.maxLun, VIRTIO_SCSI_MAX_LUN),
      maxTransferBytes: driver.limits.maxTransferBytes,
      maxSegments: driver.limits.maxSegments,
    });
    // The zero block configure() keeps for good goes first in memory, not after the
    // identification's cached bounce buffers, where it would split what the application gets.
    dev.releaseCachedMemory();
    driver.configure(identity);
    dev.refreshLimits();
  } catch (err) {
    await dev.close({ timeout: 1000 }).catch(() => undefined);
    throw err;
  }
  return dev;
}

/** Opens a virtio-blk (type 'blk', the default) or virtio-scsi (type 'scsi') device. */
export function openDevice(
  socketPath: string,
  options: DeviceOpenOptions = {},
): Promise<BlockDevice> {
  const { type, ...rest } = options ?? {};
  if (type === undefined || type === 'blk') return openBlockDevice(socketPath, rest);
  if (type === 'scsi') return openScsiDevice(socketPath, rest);
  return Promise.reject(
    new InvalidArgumentError(`type must be 'blk' or 'scsi', got ${String(type)}`),
  );
}
