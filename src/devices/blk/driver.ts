import { native } from '../../native.js';
import { InvalidArgumentError, ProtocolError, UnsupportedError } from '../../errors.js';
import { SocketEndpoint } from '../../protocol/endpoint.js';
import { VhostUserFrontend, type TraceDirection } from '../../protocol/frontend.js';
import {
  VHOST_USER_F_PROTOCOL_FEATURES,
  VhostUserProtocolFeature,
  protocolFeatureNames,
} from '../../protocol/messages.js';
import { GuestMemory } from '../../memory/guest-memory.js';
import type { HugePages } from '../../memory/region.js';
import { splitRingLayout, type SplitRingLayout } from '../../virtqueue/layout.js';
import { SplitVirtqueue } from '../../virtqueue/split.js';
import { bit, featureNames, hasBit, VhostFeature, VirtioFeature } from '../../virtio/features.js';
import type { BlockDriver, BlockLimits, BlockRequest } from '../../block/request.js';
import { newDeviceStats, type DeviceStats } from '../stats.js';
import { BlkQueue, SLOT_STRIDE } from './blk-queue.js';
import { BLK_DRIVER_FEATURES } from './features.js';
import { VIRTIO_BLK_SECTOR_SIZE, VirtioBlkConfig, VirtioBlkFeature } from './spec.js';

export interface VirtioBlkDriverOptions {
  queueSize: number;
  queues: number;
  memorySize: number;
  hugepages: HugePages;
  hugetlbfsPath: string | undefined;
  timeoutMs: number;
  trace: ((direction: TraceDirection, summary: string) => void) | undefined;
  /** Features to leave out even when offered (for testing backends and for debugging). */
  disable: { eventIdx: boolean; indirect: boolean; replyAck: boolean };
}

/** virtio_blk_config as negotiated, in plain numbers. */
export type VirtioBlkConfigValues = ReturnType<typeof VirtioBlkConfig.decode>;

/** What was negotiated, for `dev.info` and `vhost-user info`. */
export interface BlkDeviceInfo {
  type: 'virtio-blk';
  socketPath: string;
  features: { offered: bigint; negotiated: bigint; names: string[]; offeredNames: string[] };
  protocolFeatures: { offered: bigint; negotiated: bigint; names: string[] };
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
/** Indirect tables are sized for this many descriptors at most, to bound memory per queue. */
const MAX_INDIRECT_ENTRIES = 256;
const RING_ALIGN = 4096;
const U32_MAX = 0xffff_ffff;

/**
 * A virtio-blk device behind a vhost-user socket: the handshake, the rings, and request
 * submission (BlockDriver) for the block layer.
 */
export class VirtioBlkDriver implements BlockDriver {
  readonly endpoint: SocketEndpoint;
  readonly frontend: VhostUserFrontend;
  readonly memory: GuestMemory;
  readonly queues: BlkQueue[];
  readonly limits: BlockLimits;
  readonly info: BlkDeviceInfo;
  readonly stats: DeviceStats;
  #next = 0;
  #torn = false;
  readonly #errFds: number[];

  private constructor(parts: {
    endpoint: SocketEndpoint;
    frontend: VhostUserFrontend;
    memory: GuestMemory;
    queues: BlkQueue[];
    limits: BlockLimits;
    info: BlkDeviceInfo;
    stats: DeviceStats;
    errFds: number[];
  }) {
    this.endpoint = parts.endpoint;
    this.frontend = parts.frontend;
    this.memory = parts.memory;
    this.queues = parts.queues;
    this.limits = parts.limits;
    this.info = parts.info;
    this.stats = parts.stats;
    this.#errFds = parts.errFds;
  }

  /**
   * Connects and runs the whole vhost-user handshake. On any failure every fd and mapping made so
   * far is released before the error propagates.
   */
  static async open(socketPath: string, options: VirtioBlkDriverOptions): Promise<VirtioBlkDriver> {
    const endpoint = SocketEndpoint.connect(socketPath);
    const resources = new Resources();
    resources.onRelease(() => endpoint.close());
    try {
      return await VirtioBlkDriver.#handshake(socketPath, endpoint, resources, options);
    } catch (err) {
      resources.releaseAll();
      throw err;
    }
  }

  static async #handshake(
    socketPath: string,
    endpoint: SocketEndpoint,
    resources: Resources,
    options: VirtioBlkDriverOptions,
  ): Promise<VirtioBlkDriver> {
    const frontend = new VhostUserFrontend(endpoint, {
      timeoutMs: options.timeoutMs,
      ...(options.trace ? { trace: options.trace } : {}),
    });
    const offered = await frontend.getFeatures();
    let protocolOffered = 0n;
    let protocolNegotiated = 0n;
    if (hasBit(offered, VHOST_USER_F_PROTOCOL_FEATURES)) {
      protocolOffered = await frontend.getProtocolFeatures();
      protocolNegotiated =
        protocolOffered &
        ((options.disable.replyAck ? 0n : bit(VhostUserProtocolFeature.REPLY_ACK)) |
          bit(VhostUserProtocolFeature.CONFIG) |
          bit(VhostUserProtocolFeature.MQ));
      await frontend.setProtocolFeatures(protocolNegotiated);
      if (hasBit(protocolNegotiated, VhostUserProtocolFeature.REPLY_ACK))
        frontend.setReplyAck(true);
    }
    await frontend.setOwner();
    let backendQueues: number | undefined;
    if (hasBit(protocolNegotiated, VhostUserProtocolFeature.MQ)) {
      backendQueues = await frontend.getQueueNum();
    }
    if (!hasBit(protocolNegotiated, VhostUserProtocolFeature.CONFIG)) {
      throw new UnsupportedError(
        'open',
        'backend does not offer VHOST_USER_PROTOCOL_F_CONFIG, so the device size cannot be read',
      );
    }
    const config = VirtioBlkConfig.decode(await frontend.getConfig(0, CONFIG_BYTES));

    let wanted = BLK_DRIVER_FEATURES;
    if (options.disable.eventIdx) wanted &= ~bit(VirtioFeature.VIRTIO_RING_F_EVENT_IDX);
    if (options.disable.indirect) wanted &= ~bit(VirtioFeature.VIRTIO_RING_F_INDIRECT_DESC);
    const negotiated = offered & wanted;
    const has = (n: number): boolean => hasBit(negotiated, n);
    await frontend.setFeatures(negotiated);

    const blockSize = has(VirtioBlkFeature.VIRTIO_BLK_F_BLK_SIZE)
      ? config.blkSize
      : VIRTIO_BLK_SECTOR_SIZE;
    if (blockSize < 512 || blockSize > 65536 || (blockSize & (blockSize - 1)) !== 0) {
      throw new ProtocolError(
        `device reports blk_size ${blockSize}, not a power of two in 512..65536`,
        'VHOST_USER_GET_CONFIG',
      );
    }
    const capacity = Number(config.capacity) * VIRTIO_BLK_SECTOR_SIZE;
    if (!Number.isSafeInteger(capacity)) {
      throw new ProtocolError(
        `device capacity ${config.capacity} sectors is too large`,
        'VHOST_USER_GET_CONFIG',
      );
    }
    const eventIdx = has(VirtioFeature.VIRTIO_RING_F_EVENT_IDX);
    const indirect = has(VirtioFeature.VIRTIO_RING_F_INDIRECT_DESC);
    const queueSize = options.queueSize;
    // size_max 0 means no limit (qemu-storage-daemon offers SIZE_MAX with 0).
    const maxSegmentBytes =
      has(VirtioBlkFeature.VIRTIO_BLK_F_SIZE_MAX) && config.sizeMax > 0 ? config.sizeMax : Infinity;
    const deviceSegMax =
      has(VirtioBlkFeature.VIRTIO_BLK_F_SEG_MAX) && config.segMax > 0 ? config.segMax : queueSize;
    const indirectEntries = indirect
      ? Math.min(deviceSegMax + 2, queueSize, MAX_INDIRECT_ENTRIES)
      : 0;
    // A chain holds the header and status besides the data segments.
    const maxSegments = Math.max(
      1,
      Math.min(deviceSegMax, (indirect ? Math.max(indirectEntries, queueSize) : queueSize) - 2),
    );
    if (maxSegments * maxSegmentBytes < blockSize) {
      throw new ProtocolError(
        `size_max ${maxSegmentBytes} x seg_max ${maxSegments} cannot carry one ${blockSize}-byte block`,
        'VHOST_USER_GET_CONFIG',
      );
    }
    const wantQueues = options.queues;
    const deviceQueues = has(VirtioBlkFeature.VIRTIO_BLK_F_MQ) ? Math.max(1, config.numQueues) : 1;
    const available = Math.min(deviceQueues, backendQueues ?? deviceQueues);
    if (wantQueues > available) {
      throw new InvalidArgumentError(
        `queues: ${wantQueues} requested, the device has ${available}`,
      );
    }

    const layout = splitRingLayout(queueSize, indirectEntries);
    const slotsBytes = queueSize * SLOT_STRIDE;
    const perQueue = alignUp(layout.totalBytes, RING_ALIGN) + alignUp(slotsBytes, RING_ALIGN);
    const memory = new GuestMemory({
      controlSize: perQueue * wantQueues,
      dataSize: options.memorySize,
      hugepages: options.hugepages,
      hugetlbfsPath: options.hugetlbfsPath,
    });
    resources.onRelease(() => memory.close());
    const table = memory.memoryTable();
    await frontend.setMemTable(
      table.regions.map((r) => ({ ...r })),
      table.fds,
    );

    const stats = newDeviceStats();
    const queues: BlkQueue[] = [];
    const errFds: number[] = [];
    for (let index = 0; index < wantQueues; index++) {
      const base = index * perQueue;
      const vq = new SplitVirtqueue(
        index,
        layout,
        {
          buffer: memory.controlBuffer,
          offset: base,
          gpa: memory.controlGpa + base,
        },
        { eventIdx, indirect },
      );
      const kickFd = native.eventfd();
      resources.onRelease(() => native.close(kickFd));
      const callFd = native.eventfd();
      resources.onRelease(() => native.close(callFd));
      const errFd = native.eventfd();
      resources.onRelease(() => native.close(errFd));
      errFds.push(errFd);
      const slotsOffset = base + alignUp(layout.totalBytes, RING_ALIGN);
      queues.push(
        new BlkQueue(
          vq,
          {
            buffer: memory.controlBuffer,
            slotsOffset,
            slotsGpa: memory.controlGpa + slotsOffset,
          },
          { kickFd, callFd },
          maxSegmentBytes,
          stats,
        ),
      );
      await setupVring(
        frontend,
        memory,
        index,
        base,
        layout,
        { kickFd, callFd, errFd },
        hasBit(offered, VHOST_USER_F_PROTOCOL_FEATURES),
      );
    }
    // Without REPLY_ACK nothing tells us the backend processed the setup: a round trip orders it
    // before the first kick.
    if (!frontend.replyAck) await frontend.barrier();

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
      canFlush: has(VirtioBlkFeature.VIRTIO_BLK_F_FLUSH),
      canDiscard: has(VirtioBlkFeature.VIRTIO_BLK_F_DISCARD),
      canWriteZeroes: has(VirtioBlkFeature.VIRTIO_BLK_F_WRITE_ZEROES),
      maxDiscardBytes: sectorsToBytes(config.maxDiscardSectors),
      maxWriteZeroesBytes: sectorsToBytes(config.maxWriteZeroesSectors),
    };
    const info: BlkDeviceInfo = {
      type: 'virtio-blk',
      socketPath,
      features: {
        offered,
        negotiated,
        names: featureNames(negotiated, VirtioFeature, VhostFeature, VirtioBlkFeature),
        offeredNames: featureNames(offered, VirtioFeature, VhostFeature, VirtioBlkFeature),
      },
      protocolFeatures: {
        offered: protocolOffered,
        negotiated: protocolNegotiated,
        names: protocolFeatureNames(protocolNegotiated),
      },
      config: { ...config, capacity: Number(config.capacity) },
      queues: wantQueues,
      queueSize,
      backendQueues,
      maxSegments,
      maxSegmentBytes,
      eventIdx,
      indirect,
      replyAck: frontend.replyAck,
      writeCache: !has(VirtioBlkFeature.VIRTIO_BLK_F_CONFIG_WCE)
        ? 'unknown'
        : config.writeback !== 0
          ? 'writeback'
          : 'writethrough',
    };
    const driver = new VirtioBlkDriver({
      endpoint,
      frontend,
      memory,
      queues,
      limits,
      info,
      stats,
      errFds,
    });
    resources.forget();
    return driver;
  }

  get inFlight(): number {
    let n = 0;
    for (const q of this.queues) n += q.inFlight;
    return n;
  }

  /** Spreads requests over the queues, least busy first. */
  trySubmit(request: BlockRequest): boolean {
    const queues = this.queues;
    if (queues.length === 1) return queues[0]!.trySubmit(request);
    for (let i = 0; i < queues.length; i++) {
      const q = queues[(this.#next + i) % queues.length]!;
      if (q.trySubmit(request)) {
        this.#next = (this.#next + i + 1) % queues.length;
        return true;
      }
    }
    return false;
  }

  /** Whether the device may still access [gpa, gpa + length) (a request there is in flight). */
  usesMemory(gpa: number, length: number): boolean {
    return this.queues.some((q) => q.usesMemory(gpa, length));
  }

  kick(): void {
    for (const q of this.queues) q.kick();
  }

  /** Fds to wait on in a blocking wait: every call eventfd, every error eventfd, the socket. */
  waitFds(): number[] {
    return [...this.queues.map((q) => q.callFd), ...this.#errFds, this.endpoint.fd];
  }

  get errFds(): readonly number[] {
    return this.#errFds;
  }

  /**
   * Stops the rings (GET_VRING_BASE: the backend stops processing them and reports where it
   * stopped) and releases everything. Safe to call when the backend is already gone.
   */
  async shutdown(): Promise<void> {
    if (this.#torn) return;
    if (!this.endpoint.closed && this.endpoint.error === undefined) {
      try {
        for (const q of this.queues) await this.frontend.getVringBase(q.vq.index);
      } catch {
        // A backend failing at teardown must not keep our fds and memory alive.
      }
    }
    this.destroy();
  }

  /** Releases fds and memory at once, without talking to the backend. Idempotent. */
  destroy(): void {
    if (this.#torn) return;
    this.#torn = true;
    this.endpoint.close();
    for (const q of this.queues) {
      native.close(q.kickFd);
      native.close(q.callFd);
    }
    for (const fd of this.#errFds) native.close(fd);
    this.memory.close();
  }
}

async function setupVring(
  frontend: VhostUserFrontend,
  memory: GuestMemory,
  index: number,
  base: number,
  layout: SplitRingLayout,
  fds: { kickFd: number; callFd: number; errFd: number },
  enableMessage: boolean,
): Promise<void> {
  // The ring addresses are in the frontend's address space (UVA), not guest-physical.
  const uva = (offset: number): bigint => BigInt(memory.controlUva + base + offset);
  await frontend.setVringNum(index, layout.size);
  await frontend.setVringAddr({
    index,
    flags: 0,
    descriptor: uva(layout.descOffset),
    used: uva(layout.usedOffset),
    available: uva(layout.availOffset),
    log: 0n,
  });
  await frontend.setVringBase(index, 0);
  // Call before kick: the backend may start the ring as soon as it has the kick fd.
  await frontend.setVringCall(index, fds.callFd);
  await frontend.setVringErr(index, fds.errFd);
  await frontend.setVringKick(index, fds.kickFd);
  // Rings start disabled once VHOST_USER_F_PROTOCOL_FEATURES is negotiated.
  if (enableMessage) await frontend.setVringEnable(index, true);
}

function alignUp(n: number, align: number): number {
  return Math.ceil(n / align) * align;
}

/** Undo-list for a multi-step open: everything acquired is released if a later step fails. */
class Resources {
  #release: (() => void)[] = [];
  onRelease(fn: () => void): void {
    this.#release.push(fn);
  }
  forget(): void {
    this.#release = [];
  }
  releaseAll(): void {
    for (const fn of this.#release.reverse()) {
      try {
        fn();
      } catch {
        // Keep releasing the rest.
      }
    }
    this.#release = [];
  }
}
