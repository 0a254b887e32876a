import { InvalidArgumentError, ProtocolError, UnsupportedError } from '../../errors.js';
import type { SocketEndpoint } from '../../protocol/endpoint.js';
import type { VhostUserFrontend } from '../../protocol/frontend.js';
import { VhostUserProtocolFeature } from '../../protocol/messages.js';
import type { GuestMemory } from '../../memory/guest-memory.js';
import { featureNames, VhostFeature, VirtioFeature } from '../../virtio/features.js';
import type { BlockLimits, BlockRequest } from '../../block/request.js';
import {
  RequestSpreader,
  type DeviceDriver,
  type VhostFeatureInfo,
  type VhostProtocolFeatureInfo,
} from '../device.js';
import { VhostDeviceResources, VhostSetup, type VhostSetupOptions } from '../vhost-setup.js';
import { newDeviceStats, type DeviceStats } from '../stats.js';
import { BlkQueue, SLOT_STRIDE } from './blk-queue.js';
import { BLK_DRIVER_FEATURES } from './features.js';
import { VIRTIO_BLK_SECTOR_SIZE, VirtioBlkConfig, VirtioBlkFeature } from './spec.js';

export interface VirtioBlkDriverOptions extends VhostSetupOptions {
  queues: number;
}
/** virtio_blk_config as negotiated, in plain numbers. */
export type VirtioBlkConfigValues = ReturnType<typeof VirtioBlkConfig.decode>;

/** What was negotiated, for `dev.info` and `vhost-user info`. */
export interface BlkDeviceInfo {
  type: 'virtio-blk';
  socketPath: string;
  features: VhostFeatureInfo;
  protocolFeatures: VhostProtocolFeatureInfo;
  config: Omit<VirtioBlkConfigValues, 'capacity'> & { capacity: number };
  queues: number;
  queueSize: number;
  /** Queues the backend has (GET_QUEUE_NUM), when it says. */
  backendQueues: number | undefined;
  /** Data segments per request and bytes per segment the driver uses (after size_max/seg_max). */
  maxSegments: number;
  maxSegmentBytes: number;
  eventIdx: boolean;
  indirect: boolean;
  replyAck: boolean;
  writeCache: 'writeback' | 'writethrough' | 'unknown';
}

const CONFIG_BYTES = VirtioBlkConfig.size;
const U32_MAX = 0xffff_ffff;

/**
 * A virtio-blk device behind a vhost-user socket: the handshake, the rings, and request
 * submission (BlockDriver) for the block layer.
 */
export class VirtioBlkDriver implements DeviceDriver {
  readonly endpoint: SocketEndpoint;
  readonly frontend: VhostUserFrontend;
  readonly memory: GuestMemory;
  readonly queues: BlkQueue[];
  readonly limits: BlockLimits;
  readonly info: BlkDeviceInfo;
  readonly stats: DeviceStats;
  readonly #resources: VhostDeviceResources;
  readonly #spreader: RequestSpreader;

  private constructor(
    resources: VhostDeviceResources,
    queues: BlkQueue[],
    limits: BlockLimits,
    info: BlkDeviceInfo,
    stats: DeviceStats,
  ) {
    this.#resources = resources;
    this.endpoint = resources.endpoint;
    this.frontend = resources.frontend;
    this.memory = resources.memory;
    this.queues = queues;
    this.#spreader = new RequestSpreader(queues);
    this.limits = limits;
    this.info = info;
    this.stats = stats;
  }

  /**
   * Connects and runs the whole vhost-user handshake. On any failure every fd and mapping made so
   * far is released before the error propagates.
   */
  static open(socketPath: string, options: VirtioBlkDriverOptions): Promise<VirtioBlkDriver> {
    return VhostSetup.run(socketPath, options, (setup) =>
      VirtioBlkDriver.#handshake(setup, options),
    );
  }

  static async #handshake(
    setup: VhostSetup,
    options: VirtioBlkDriverOptions,
  ): Promise<VirtioBlkDriver> {
    await setup.start();
    if (!setup.hasProtocol(VhostUserProtocolFeature.CONFIG)) {
      throw new UnsupportedError(
        'open',
        'backend does not offer VHOST_USER_PROTOCOL_F_CONFIG, so the device size cannot be read',
      );
    }
    const config = VirtioBlkConfig.decode(await setup.frontend.getConfig(0, CONFIG_BYTES));
    const negotiated = await setup.negotiate(BLK_DRIVER_FEATURES);
    const has = (n: number): boolean => setup.has(n);

    const blockSize = has(VirtioBlkFeature.VIRTIO_BLK_F_BLK_SIZE)
      ? config.blkSize
      : VIRTIO_BLK_SECTOR_SIZE;
    if (blockSize < 512 || blockSize > 65536 || (blockSize & (blockSize - 1)) !== 0) {
      throw new ProtocolError(
        `device reports blk_size ${blockSize}, not a power of two in 512..65536`,
        'VHOST_USER_GET_CONFIG',
      );
    }
    const sectorBytes = Number(config.capacity) * VIRTIO_BLK_SECTOR_SIZE;
    if (!Number.isSafeInteger(sectorBytes)) {
      throw new ProtocolError(
        `device capacity ${config.capacity} sectors is too large`,
        'VHOST_USER_GET_CONFIG',
      );
    }
    // Only whole blocks can be read or written: a tail shorter than blk_size (capacity in
    // 512-byte sectors need not be a multiple of it) would fail every I/O that touches it.
    const capacity = Math.floor(sectorBytes / blockSize) * blockSize;
    const queueSize = options.queueSize;
    // size_max 0 means no limit (qemu-storage-daemon offers SIZE_MAX with 0).
    const maxSegmentBytes =
      has(VirtioBlkFeature.VIRTIO_BLK_F_SIZE_MAX) && config.sizeMax > 0 ? config.sizeMax : Infinity;
    // Without SEG_MAX the device sets no limit: only our queue size does.
    const offersSegMax = has(VirtioBlkFeature.VIRTIO_BLK_F_SEG_MAX) && config.segMax > 0;
    const deviceSegMax = offersSegMax ? config.segMax : queueSize;
    // A chain holds the header and status besides the data segments.
    const { indirectEntries, chainDescriptors } = setup.chainLimits(deviceSegMax + 2);
    const maxSegments = Math.max(1, Math.min(deviceSegMax, chainDescriptors - 2));
    if (offersSegMax && deviceSegMax * maxSegmentBytes < blockSize) {
      throw new ProtocolError(
        `size_max ${maxSegmentBytes} x seg_max ${deviceSegMax} cannot carry one ${blockSize}-byte block`,
        'VHOST_USER_GET_CONFIG',
      );
    }
    if (maxSegments * maxSegmentBytes < blockSize) {
      // The device could take a block; the chains our queue size allows cannot.
      const segments = Math.ceil(blockSize / maxSegmentBytes);
      throw new InvalidArgumentError(
        `queueSize ${queueSize} leaves ${maxSegments} data segments of at most ${maxSegmentBytes} ` +
          `bytes per request, less than one ${blockSize}-byte block: use a queueSize of at least ` +
          `${2 ** Math.ceil(Math.log2(segments + 2))}`,
      );
    }
    const wantQueues = options.queues;
    const deviceQueues = has(VirtioBlkFeature.VIRTIO_BLK_F_MQ) ? Math.max(1, config.numQueues) : 1;
    const available = Math.min(deviceQueues, setup.backendQueues ?? deviceQueues);
    if (wantQueues > available) {
      throw new InvalidArgumentError(
        `queues: ${wantQueues} requested, the device has ${available}`,
      );
    }

    const rings = await setup.createRings(wantQueues, indirectEntries, queueSize * SLOT_STRIDE);
    const memory = setup.memory!;
    const stats = newDeviceStats();
    const queues = rings.map(
      (ring) =>
        new BlkQueue(
          ring.vq,
          { buffer: memory.controlBuffer, slotsOffset: ring.areaOffset, slotsGpa: ring.areaGpa },
          { kickFd: ring.kickFd, callFd: ring.callFd },
          maxSegmentBytes,
          stats,
          has(VirtioFeature.VIRTIO_F_VERSION_1),
        ),
    );
    await setup.finish();

    const readOnly = has(VirtioBlkFeature.VIRTIO_BLK_F_RO);
    const sectorsToBytes = (sectors: number): number => {
      const bytes = Math.min(sectors > 0 ? sectors : U32_MAX, U32_MAX) * VIRTIO_BLK_SECTOR_SIZE;
      return Math.max(blockSize, Math.floor(bytes / blockSize) * blockSize);
    };
    const limits: BlockLimits = {
      blockSize,
      capacity,
      readOnly,
      maxSegmentBytes,
      maxSegments,
      maxTransferBytes: Infinity,
      canFlush: has(VirtioBlkFeature.VIRTIO_BLK_F_FLUSH),
      canDiscard: has(VirtioBlkFeature.VIRTIO_BLK_F_DISCARD),
      canWriteZeroes: has(VirtioBlkFeature.VIRTIO_BLK_F_WRITE_ZEROES),
      maxDiscardBytes: sectorsToBytes(config.maxDiscardSectors),
      maxWriteZeroesBytes: sectorsToBytes(config.maxWriteZeroesSectors),
    };
    const info: BlkDeviceInfo = {
      type: 'virtio-blk',
      socketPath: setup.socketPath,
      features: {
        offered: setup.offered,
        negotiated,
        names: featureNames(negotiated, VirtioFeature, VhostFeature, VirtioBlkFeature),
        offeredNames: featureNames(setup.offered, VirtioFeature, VhostFeature, VirtioBlkFeature),
      },
      protocolFeatures: setup.protocol,
      config: { ...config, capacity: Number(config.capacity) },
      queues: wantQueues,
      queueSize,
      backendQueues: setup.backendQueues,
      maxSegments,
      maxSegmentBytes,
      eventIdx: setup.eventIdx,
      indirect: setup.indirect,
      replyAck: setup.frontend.replyAck,
      writeCache: !has(VirtioBlkFeature.VIRTIO_BLK_F_CONFIG_WCE)
        ? 'unknown'
        : config.writeback !== 0
          ? 'writeback'
          : 'writethrough',
    };
    return new VirtioBlkDriver(new VhostDeviceResources(setup, rings), queues, limits, info, stats);
  }

  get inFlight(): number {
    let n = 0;
    for (const q of this.queues) n += q.inFlight;
    return n;
  }

  /** Spreads requests over the queues round-robin, skipping full ones. */
  trySubmit(request: BlockRequest): boolean {
    return this.#spreader.trySubmit(request);
  }

  usesMemory(gpa: number, length: number): boolean {
    // Indexed, as slotsUseMemory: the deferred frees of unaligned writes call this.
    const queues = this.queues;
    for (let i = 0; i < queues.length; i++) if (queues[i]!.usesMemory(gpa, length)) return true;
    return false;
  }

  kick(): void {
    for (const q of this.queues) q.kick();
  }

  waitFds(): number[] {
    return this.#resources.waitFds();
  }

  get errFds(): readonly number[] {
    return this.#resources.errFds;
  }

  /**
   * Stops the rings (GET_VRING_BASE: the backend stops processing them and reports where it
   * stopped) and releases everything. Safe to call when the backend is already gone.
   */
  shutdown(): Promise<void> {
    return this.#resources.shutdown();
  }

  /** Releases fds and memory at once, without talking to the backend. Idempotent. */
  destroy(): void {
    this.#resources.destroy();
  }
}
