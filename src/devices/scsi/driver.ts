/**
 * A virtio-scsi controller behind a vhost-user socket (SPDK's vhost-scsi, or the embedded
 * backend's scsi mode): the handshake, the control, event and request queues, and request
 * submission for the block layer. Which LUN it serves, its size and its limits are learned after
 * the rings are up, with SCSI commands (see identify.ts), and set with configure().
 */

import {
  BackendRejectedError,
  InvalidArgumentError,
  ProtocolError,
  TimeoutError,
  UnsupportedError,
  VirtioScsiResponseError,
  type ScsiSenseError,
} from '../../errors.js';
import type { SocketEndpoint } from '../../protocol/endpoint.js';
import type { VhostUserFrontend } from '../../protocol/frontend.js';
import { VhostUserProtocolFeature } from '../../protocol/messages.js';
import type { GuestMemory } from '../../memory/guest-memory.js';
import { bit, featureNames, VhostFeature, VirtioFeature } from '../../virtio/features.js';
import type { BlockLimits, BlockRequest } from '../../block/request.js';
import {
  RequestSpreader,
  type DeviceDriver,
  type DeviceQueue,
  type VhostFeatureInfo,
  type VhostProtocolFeatureInfo,
} from '../device.js';
import { VhostDeviceResources, VhostSetup, type VhostSetupOptions } from '../vhost-setup.js';
import { newDeviceStats, type DeviceStats } from '../stats.js';
import type { BlockLimitsVpd, ProvisioningVpd } from './data.js';
import { ScsiControlQueue } from './control-queue.js';
import { ScsiEventQueue, type ScsiEvent } from './event-queue.js';
import { ScsiRequestQueue, type ScsiQueueSettings } from './scsi-queue.js';
import {
  VIRTIO_SCSI_CDB_DEFAULT_SIZE,
  VIRTIO_SCSI_FIRST_REQUESTQ,
  VIRTIO_SCSI_MAX_LUN,
  VIRTIO_SCSI_MAX_TARGET,
  VIRTIO_SCSI_S_FUNCTION_COMPLETE,
  VIRTIO_SCSI_SENSE_DEFAULT_SIZE,
  VirtioScsiConfig,
  VirtioScsiFeature,
  VirtioScsiResponse,
  VirtioScsiTmf,
  virtioScsiResponseName,
  type VirtioScsiConfigValues,
} from './spec.js';

export type { ScsiEvent } from './event-queue.js';

export interface VirtioScsiDriverOptions extends VhostSetupOptions {
  queues: number;
}

/** The feature bits this driver implements. */
export const SCSI_DRIVER_FEATURES =
  bit(VirtioFeature.VIRTIO_F_VERSION_1) |
  bit(VirtioFeature.VIRTIO_RING_F_INDIRECT_DESC) |
  bit(VirtioFeature.VIRTIO_RING_F_EVENT_IDX) |
  bit(VhostFeature.VHOST_USER_F_PROTOCOL_FEATURES) |
  bit(VirtioScsiFeature.VIRTIO_SCSI_F_HOTPLUG) |
  bit(VirtioScsiFeature.VIRTIO_SCSI_F_CHANGE);

/** One logical unit found by a scan. */
export interface ScsiLunInfo {
  target: number;
  lun: number;
  /** SCSI peripheral device type (0 = disk). */
  deviceType: number;
  vendor: string;
  product: string;
  revision: string;
}

/** What was negotiated and identified, for `dev.info` and `vhost-user info`. */
export interface ScsiDeviceInfo {
  type: 'virtio-scsi';
  socketPath: string;
  features: VhostFeatureInfo;
  protocolFeatures: VhostProtocolFeatureInfo;
  /** virtio_scsi_config as the device reported it, or the spec's defaults if it cannot. */
  config: VirtioScsiConfigValues;
  configSource: 'device' | 'defaults';
  queues: number;
  queueSize: number;
  backendQueues: number | undefined;
  maxSegments: number;
  maxSegmentBytes: number;
  eventIdx: boolean;
  indirect: boolean;
  replyAck: boolean;
  cdbSize: number;
  senseSize: number;
  /** The LUN this device does I/O on. */
  target: number;
  lun: number;
  vendor: string;
  product: string;
  revision: string;
  /** Unit serial number (VPD 0x80), if the LUN has one. */
  serial: string | undefined;
  /** The LUN's designator (VPD 0x83: NAA, EUI-64 or name), if it has one. */
  designator: string | undefined;
  /** What getId() returns: the serial, else the designator, else ''. */
  id: string;
  /** READ(16)/WRITE(16) in use (else the 10-byte commands). */
  commands16: boolean;
  writeCache: 'writeback' | 'writethrough' | 'unknown';
  blockLimits: BlockLimitsVpd | undefined;
  provisioning: ProvisioningVpd | undefined;
  /** Every LUN the scan saw (only the opened one unless all were asked for). */
  luns: ScsiLunInfo[];
}

/** What identification learned, for configure(). */
export interface ScsiIdentity {
  target: number;
  lun: number;
  limits: BlockLimits;
  settings: Omit<ScsiQueueSettings, 'cdbSize' | 'senseSize' | 'zeroBlockGpa' | 'target' | 'lun'>;
  info: Pick<
    ScsiDeviceInfo,
    | 'vendor'
    | 'product'
    | 'revision'
    | 'serial'
    | 'designator'
    | 'id'
    | 'commands16'
    | 'writeCache'
    | 'blockLimits'
    | 'provisioning'
    | 'luns'
  >;
}

/**
 * If an ABORT TASK is refused or leaves its command with the device, the LUN is reset; a TMF that
 * gets no answer is not retried.
 */
export class VirtioScsiDriver implements DeviceDriver {
  readonly endpoint: SocketEndpoint;
  readonly frontend: VhostUserFrontend;
  readonly memory: GuestMemory;
  readonly queues: DeviceQueue[];
  readonly requestQueues: ScsiRequestQueue[];
  readonly control: ScsiControlQueue;
  readonly events: ScsiEventQueue;
  limits: BlockLimits;
  readonly info: ScsiDeviceInfo;
  readonly stats: DeviceStats;
  readonly #resources: VhostDeviceResources;
  readonly #spreader: RequestSpreader;
  #deferredHandler: (() => void) | undefined;
  #deferredTimer: NodeJS.Timeout | undefined;
  #deferredDue = Infinity;
  #eventHandler: ((event: ScsiEvent) => void) | undefined;
  #deferredErrorHandler: ((error: ScsiSenseError) => void) | undefined;
  #failureHandler: ((error: Error) => void) | undefined;
  #zeroBlock = -1;
  /** LUNs being reset, each with the commands given up on meanwhile that wait for its end. */
  readonly #resetting = new Map<string, bigint[]>();
  /** Commands the LUN queues at most (cmd_per_lun); beyond it requests wait, not fail. */
  readonly #cmdPerLun: number;
  /** How long a task management function may take before it is escalated or the device fails. */
  readonly #tmfTimeoutMs: number;
  readonly #tmfTimers = new Set<NodeJS.Timeout>();

  private constructor(
    resources: VhostDeviceResources,
    parts: {
      stats: DeviceStats;
      info: ScsiDeviceInfo;
      limits: BlockLimits;
      settings: ScsiQueueSettings;
      tmfTimeoutMs: number;
    },
  ) {
    this.#resources = resources;
    this.#cmdPerLun = parts.info.config.cmdPerLun;
    this.#tmfTimeoutMs = parts.tmfTimeoutMs;
    this.endpoint = resources.endpoint;
    this.frontend = resources.frontend;
    this.memory = resources.memory;
    this.stats = parts.stats;
    this.info = parts.info;
    this.limits = parts.limits;
    const rings = resources.rings;
    const area = (index: number): { buffer: SharedArrayBuffer; offset: number; gpa: number } => ({
      buffer: this.memory.controlBuffer,
      offset: rings[index]!.areaOffset,
      gpa: rings[index]!.areaGpa,
    });
    this.control = new ScsiControlQueue(rings[0]!, area(0));
    this.events = new ScsiEventQueue(rings[1]!, area(1), (event) => this.#eventHandler?.(event));
    const host = {
      stats: this.stats,
      retryScheduled: (due: number) => this.#armDeferred(due),
      abortTask: (target: number, lun: number, tag: bigint) => this.#abortTask(target, lun, tag),
      deferredError: (error: ScsiSenseError) => {
        this.stats.deferredErrors++;
        this.#deferredErrorHandler?.(error);
      },
    };
    this.requestQueues = rings
      .slice(VIRTIO_SCSI_FIRST_REQUESTQ)
      .map((ring) => new ScsiRequestQueue(ring, area(ring.index), { ...parts.settings }, host));
    this.queues = [this.control, this.events, ...this.requestQueues];
    this.#spreader = new RequestSpreader(this.requestQueues);
    this.events.stock();
    this.events.kick();
  }

  static open(socketPath: string, options: VirtioScsiDriverOptions): Promise<VirtioScsiDriver> {
    return VhostSetup.run(socketPath, options, (setup) =>
      VirtioScsiDriver.#handshake(setup, options),
    );
  }

  static async #handshake(
    setup: VhostSetup,
    options: VirtioScsiDriverOptions,
  ): Promise<VirtioScsiDriver> {
    await setup.start();
    if (setup.backendQueues !== undefined && setup.backendQueues <= VIRTIO_SCSI_FIRST_REQUESTQ) {
      throw new UnsupportedError(
        'open',
        `the backend has ${setup.backendQueues} queue(s); a virtio-scsi controller has at least 3 ` +
          '(control, event, request): is this a vhost-user-scsi backend?',
      );
    }
    const { config, source } = await readConfig(setup);
    const negotiated = await setup.negotiate(SCSI_DRIVER_FEATURES);
    const cdbSize = config.cdbSize;
    const senseSize = config.senseSize;
    if (cdbSize < 16 || cdbSize > 256 || senseSize < 18 || senseSize > 256) {
      throw new ProtocolError(
        `device reports cdb_size ${cdbSize} / sense_size ${senseSize}: need 16..256 / 18..256`,
        'VHOST_USER_GET_CONFIG',
      );
    }
    const queueSize = options.queueSize;
    const deviceSegMax = config.segMax > 0 ? config.segMax : queueSize;
    // A chain is the request header, the data (one segment: our data areas are contiguous)
    // and the response.
    const { indirectEntries, chainDescriptors } = setup.chainLimits(Math.min(deviceSegMax, 1) + 2);
    const maxSegments = Math.max(1, Math.min(deviceSegMax, chainDescriptors - 2));
    const deviceQueues = Math.max(1, config.numQueues);
    const backendRequestQueues =
      setup.backendQueues === undefined
        ? undefined
        : setup.backendQueues - VIRTIO_SCSI_FIRST_REQUESTQ;
    const available = Math.min(deviceQueues, backendRequestQueues ?? deviceQueues);
    if (options.queues > available) {
      throw new InvalidArgumentError(
        `queues: ${options.queues} requested, the device has ${Math.max(0, available)}`,
      );
    }
    const areaBytes = Math.max(
      ScsiRequestQueue.areaBytes(queueSize, cdbSize, senseSize),
      ScsiControlQueue.areaBytes(queueSize),
      ScsiEventQueue.areaBytes(),
    );
    const rings = await setup.createRings(
      VIRTIO_SCSI_FIRST_REQUESTQ + options.queues,
      indirectEntries,
      areaBytes,
    );
    await setup.finish();

    // max_sectors counts 512-byte sectors; 0 or absent means the spec gives no hint.
    const maxTransferBytes = config.maxSectors > 0 ? config.maxSectors * 512 : Infinity;
    const limits: BlockLimits = {
      blockSize: 512,
      capacity: 0,
      readOnly: true,
      maxSegmentBytes: Infinity,
      maxSegments,
      maxTransferBytes,
      canFlush: false,
      canDiscard: false,
      canWriteZeroes: false,
      maxDiscardBytes: 512,
      maxWriteZeroesBytes: 512,
    };
    const info: ScsiDeviceInfo = {
      type: 'virtio-scsi',
      socketPath: setup.socketPath,
      features: {
        offered: setup.offered,
        negotiated,
        names: featureNames(negotiated, VirtioFeature, VhostFeature, VirtioScsiFeature),
        offeredNames: featureNames(setup.offered, VirtioFeature, VhostFeature, VirtioScsiFeature),
      },
      protocolFeatures: setup.protocol,
      config,
      configSource: source,
      queues: options.queues,
      queueSize,
      backendQueues: setup.backendQueues,
      maxSegments,
      maxSegmentBytes: Infinity,
      eventIdx: setup.eventIdx,
      indirect: setup.indirect,
      replyAck: setup.frontend.replyAck,
      cdbSize,
      senseSize,
      target: 0,
      lun: 0,
      vendor: '',
      product: '',
      revision: '',
      serial: undefined,
      designator: undefined,
      id: '',
      commands16: true,
      writeCache: 'unknown',
      blockLimits: undefined,
      provisioning: undefined,
      luns: [],
    };
    const settings: ScsiQueueSettings = {
      cdbSize,
      senseSize,
      target: 0,
      lun: 0,
      blockSize: 512,
      use16: true,
      discardWithUnmap: true,
      zeroesByUnmap: false,
      writeThrough: false,
      zeroBlockGpa: 0,
    };
    return new VirtioScsiDriver(new VhostDeviceResources(setup, rings), {
      stats: newDeviceStats(),
      info,
      limits,
      settings,
      tmfTimeoutMs: options.timeoutMs,
    });
  }

  /** Adopts what identification learned: the LUN, its size and limits, its commands. */
  configure(identity: ScsiIdentity): void {
    const blockSize = identity.limits.blockSize;
    let zeroBlockGpa = 0;
    if (identity.limits.canWriteZeroes || identity.settings.discardWithUnmap === false) {
      if (this.#zeroBlock < 0) {
        this.#zeroBlock = this.memory.allocator.alloc(blockSize);
        if (this.#zeroBlock < 0) {
          throw new InvalidArgumentError('memorySize leaves no room for a block of zeroes');
        }
        this.memory.dataBytes.fill(0, this.#zeroBlock, this.#zeroBlock + blockSize);
      }
      zeroBlockGpa = this.memory.dataGpa + this.#zeroBlock;
    }
    for (const queue of this.requestQueues) {
      queue.settings = {
        ...queue.settings,
        ...identity.settings,
        target: identity.target,
        lun: identity.lun,
        zeroBlockGpa,
      };
    }
    this.limits = identity.limits;
    Object.assign(this.info, identity.info, { target: identity.target, lun: identity.lun });
  }

  get inFlight(): number {
    let n = 0;
    for (const q of this.requestQueues) n += q.inFlight;
    return n;
  }

  trySubmit(request: BlockRequest): boolean {
    if (this.#cmdPerLun > 0 && this.inFlight >= this.#cmdPerLun) return false;
    return this.#spreader.trySubmit(request);
  }

  usesMemory(gpa: number, length: number): boolean {
    // Indexed, as slotsUseMemory: the deferred frees of unaligned writes call this.
    const queues = this.requestQueues;
    for (let i = 0; i < queues.length; i++) if (queues[i]!.usesMemory(gpa, length)) return true;
    return false;
  }

  kick(): void {
    for (const q of this.queues) q.kick();
  }

  abandon(owner: unknown): void {
    for (const q of this.requestQueues) q.abandon(owner);
  }

  setDeferredHandler(handler: () => void): void {
    this.#deferredHandler = handler;
  }

  setEventHandler(handler: (event: ScsiEvent) => void): void {
    this.#eventHandler = handler;
  }

  knownId(): string {
    return this.info.id;
  }

  setDeferredErrorHandler(handler: (error: ScsiSenseError) => void): void {
    this.#deferredErrorHandler = handler;
  }

  setFailureHandler(handler: (error: Error) => void): void {
    this.#failureHandler = handler;
  }

  runDeferred(now: number): number {
    let next = -1;
    for (const q of this.requestQueues) {
      const wait = q.runDue(now);
      if (wait >= 0 && (next < 0 || wait < next)) next = wait;
    }
    if (next >= 0) this.#armDeferred(now + next);
    return next;
  }

  #armDeferred(due: number): void {
    if (this.#deferredTimer !== undefined && due >= this.#deferredDue) return;
    if (this.#deferredTimer !== undefined) clearTimeout(this.#deferredTimer);
    this.#deferredDue = due;
    this.#deferredTimer = setTimeout(
      () => {
        this.#deferredTimer = undefined;
        this.#deferredDue = Infinity;
        this.#deferredHandler?.();
      },
      Math.max(0, due - Date.now()),
    );
  }

  /**
   * ABORT TASK; if the device refuses it or does not answer in time, or says it is done but does
   * not return the command within the timeout, LOGICAL UNIT RESET (once at a time per LUN); if
   * the reset is not answered in time either, or leaves the command with the device, the device
   * has stopped working and fails (every request is answered, nothing waits forever).
   */
  #abortTask(target: number, lun: number, tag: bigint): void {
    this.stats.taskAborts++;
    this.#taskManagement(
      VirtioScsiTmf.VIRTIO_SCSI_T_TMF_ABORT_TASK,
      target,
      lun,
      tag,
      (response) => {
        if (response === 'gone') return;
        if (!succeeded(response)) {
          // Refused, or no answer: the command may still be running.
          this.#resetLun(target, lun, tag);
          return;
        }
        // The command's own used element may trail the answer; one that never comes would
        // hold its slot for good (cmd_per_lun such losses and no I/O goes out).
        this.#afterTmfTimeout(() => {
          if (this.#holds(tag)) this.#resetLun(target, lun, tag);
        });
      },
    );
  }

  /** Resets the LUN for the command `tag`, or leaves it to the reset already under way. */
  #resetLun(target: number, lun: number, tag: bigint): void {
    const key = `${target}:${lun}`;
    const joined = this.#resetting.get(key);
    if (joined !== undefined) {
      joined.push(tag);
      return;
    }
    this.#resetting.set(key, []);
    this.stats.lunResets++;
    const tmf = VirtioScsiTmf.VIRTIO_SCSI_T_TMF_LOGICAL_UNIT_RESET;
    this.#taskManagement(tmf, target, lun, 0n, (response) => {
      const later = this.#resetting.get(key) ?? [];
      this.#resetting.delete(key);
      if (response === 'gone') return;
      if (succeeded(response)) {
        this.#afterTmfTimeout(() => {
          // The reset ends every command on the LUN: one still held is lost with its slot.
          if (this.#holds(tag)) {
            this.#failureHandler?.(
              new TimeoutError('return of a command after LOGICAL UNIT RESET', this.#tmfTimeoutMs),
            );
            return;
          }
          // Those given up on while it was under way may have reached the device after it.
          for (const t of later) if (this.#holds(t)) this.#resetLun(target, lun, t);
        });
        return;
      }
      // Neither the command nor the LUN can be stopped: its slot would stay taken for good.
      this.#failureHandler?.(
        response === 'timeout'
          ? new TimeoutError('LOGICAL UNIT RESET', this.#tmfTimeoutMs)
          : new VirtioScsiResponseError(
              'LOGICAL UNIT RESET',
              response,
              virtioScsiResponseName(response),
            ),
      );
    });
  }

  /** Whether the command tagged `tag` is still with the device. */
  #holds(tag: bigint): boolean {
    return this.requestQueues.some((q) => q.holds(tag));
  }

  /** Runs `check` once a task management function has had its time to take effect. */
  #afterTmfTimeout(check: () => void): void {
    const timer = setTimeout(() => {
      this.#tmfTimers.delete(timer);
      check();
    }, this.#tmfTimeoutMs);
    // As for the TMFs themselves: the commands concerned were given up on.
    timer.unref();
    this.#tmfTimers.add(timer);
  }

  /** Sends one TMF; `done` gets the response byte, 'timeout', or 'gone' (device torn down). */
  #taskManagement(
    subtype: number,
    target: number,
    lun: number,
    tag: bigint,
    done: (response: number | 'timeout' | 'gone') => void,
  ): void {
    let answered = false;
    const timer = setTimeout(() => {
      this.#tmfTimers.delete(timer);
      if (answered) return;
      answered = true;
      done('timeout');
    }, this.#tmfTimeoutMs);
    // Task management is for requests given up on, which keep no process alive either: a
    // script that gave up on a read and ended would otherwise live until the TMFs timed out.
    timer.unref();
    this.#tmfTimers.add(timer);
    this.control.submit({
      subtype,
      target,
      lun,
      tag,
      onResponse: (response) => {
        clearTimeout(timer);
        this.#tmfTimers.delete(timer);
        if (answered) return;
        answered = true;
        done(response ?? 'gone');
      },
    });
    this.control.kick();
  }

  waitFds(): number[] {
    return this.#resources.waitFds();
  }

  get errFds(): readonly number[] {
    return this.#resources.errFds;
  }

  shutdown(): Promise<void> {
    this.#stopTimer();
    return this.#resources.shutdown();
  }

  destroy(): void {
    this.#stopTimer();
    this.#resources.destroy();
  }

  #stopTimer(): void {
    if (this.#deferredTimer !== undefined) clearTimeout(this.#deferredTimer);
    this.#deferredTimer = undefined;
    for (const timer of this.#tmfTimers) clearTimeout(timer);
    this.#tmfTimers.clear();
  }
}

/** FUNCTION COMPLETE or FUNCTION SUCCEEDED: the function was carried out. */
function succeeded(response: number | 'timeout'): boolean {
  return (
    response === VIRTIO_SCSI_S_FUNCTION_COMPLETE ||
    response === VirtioScsiResponse.VIRTIO_SCSI_S_FUNCTION_SUCCEEDED
  );
}

/**
 * virtio_scsi_config by GET_CONFIG when the backend offers it; else (SPDK's vhost-scsi answers
 * no config) the spec's defaults, with num_queues from GET_QUEUE_NUM.
 */
async function readConfig(
  setup: VhostSetup,
): Promise<{ config: VirtioScsiConfigValues; source: 'device' | 'defaults' }> {
  if (setup.hasProtocol(VhostUserProtocolFeature.CONFIG)) {
    try {
      const config = VirtioScsiConfig.decode(
        await setup.frontend.getConfig(0, VirtioScsiConfig.size),
      );
      return { config, source: 'device' };
    } catch (err) {
      // A backend that offers CONFIG for other device types may refuse it for SCSI.
      if (!(err instanceof ProtocolError || err instanceof BackendRejectedError)) throw err;
      if (setup.endpoint.closed || setup.endpoint.error !== undefined) throw err;
    }
  }
  const queues = setup.backendQueues;
  return {
    config: {
      numQueues: queues !== undefined && queues > VIRTIO_SCSI_FIRST_REQUESTQ ? queues - 2 : 1,
      segMax: 0,
      maxSectors: 0xffff,
      cmdPerLun: 128,
      eventInfoSize: 16,
      senseSize: VIRTIO_SCSI_SENSE_DEFAULT_SIZE,
      cdbSize: VIRTIO_SCSI_CDB_DEFAULT_SIZE,
      maxChannel: 0,
      maxTarget: VIRTIO_SCSI_MAX_TARGET,
      maxLun: VIRTIO_SCSI_MAX_LUN,
    },
    source: 'defaults',
  };
}
