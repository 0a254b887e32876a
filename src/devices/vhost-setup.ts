/**
 * The device-independent part of opening a vhost-user device: connect, negotiate the protocol,
 * read the config space, share memory and hand the backend its rings. virtio-blk and
 * virtio-scsi drivers call these steps in order and add their own in between; everything taken
 * is released if a later step fails.
 */

import { DisconnectedError, ProtocolError } from '../errors.js';
import { native } from '../native.js';
import { SocketEndpoint } from '../protocol/endpoint.js';
import { VhostUserFrontend, type TraceDirection } from '../protocol/frontend.js';
import {
  VHOST_USER_F_PROTOCOL_FEATURES,
  VhostUserProtocolFeature,
  describeMessage,
  protocolFeatureNames,
} from '../protocol/messages.js';
import { GuestMemory } from '../memory/guest-memory.js';
import type { HugePages } from '../memory/region.js';
import { splitRingLayout, type SplitRingLayout } from '../virtqueue/layout.js';
import { SplitVirtqueue } from '../virtqueue/split.js';
import { bit, hasBit, VirtioFeature } from '../virtio/features.js';
import type { VhostProtocolFeatureInfo } from './device.js';

export interface VhostSetupOptions {
  queueSize: number;
  memorySize: number;
  hugepages: HugePages;
  hugetlbfsPath: string | undefined;
  timeoutMs: number;
  trace: ((direction: TraceDirection, summary: string) => void) | undefined;
  /** Features to leave out even when offered (for testing backends and for debugging). */
  disable: { eventIdx: boolean; indirect: boolean; replyAck: boolean };
}

/** One ring handed to the backend, with the driver area reserved after it. */
export interface RingParts {
  readonly index: number;
  readonly vq: SplitVirtqueue;
  readonly kickFd: number;
  readonly callFd: number;
  readonly errFd: number;
  /** The per-queue driver area (request headers, status bytes) in the control region. */
  readonly areaOffset: number;
  readonly areaGpa: number;
}

const RING_ALIGN = 4096;
/** Indirect tables are sized for this many descriptors at most, to bound memory per queue. */
const MAX_INDIRECT_ENTRIES = 256;

export class VhostSetup {
  readonly socketPath: string;
  readonly options: VhostSetupOptions;
  readonly endpoint: SocketEndpoint;
  readonly frontend: VhostUserFrontend;
  readonly #resources = new Resources();
  offered = 0n;
  protocol: VhostProtocolFeatureInfo = { offered: 0n, negotiated: 0n, names: [] };
  /** Queues the backend has (GET_QUEUE_NUM), when it says. */
  backendQueues: number | undefined;
  negotiated = 0n;
  memory: GuestMemory | undefined;
  readonly errFds: number[] = [];

  private constructor(socketPath: string, options: VhostSetupOptions, endpoint: SocketEndpoint) {
    this.socketPath = socketPath;
    this.options = options;
    this.endpoint = endpoint;
    this.#resources.onRelease(() => endpoint.close());
    this.frontend = new VhostUserFrontend(endpoint, {
      timeoutMs: options.timeoutMs,
      ...(options.trace ? { trace: options.trace } : {}),
    });
  }

  /**
   * Runs `body` on a fresh connection. On any failure every fd and mapping made so far is
   * released before the error propagates; on success the driver `body` returns owns them.
   */
  static async run<T>(
    socketPath: string,
    options: VhostSetupOptions,
    body: (setup: VhostSetup) => Promise<T>,
  ): Promise<T> {
    const setup = new VhostSetup(socketPath, options, SocketEndpoint.connect(socketPath));
    try {
      const result = await body(setup);
      setup.#resources.forget();
      return result;
    } catch (err) {
      setup.#resources.releaseAll();
      throw err;
    }
  }

  /**
   * GET_FEATURES, the protocol features we use (REPLY_ACK, CONFIG, MQ) when offered, SET_OWNER
   * and GET_QUEUE_NUM.
   */
  async start(): Promise<void> {
    const frontend = this.frontend;
    this.offered = await frontend.getFeatures();
    if (hasBit(this.offered, VHOST_USER_F_PROTOCOL_FEATURES)) {
      const offered = await frontend.getProtocolFeatures();
      const negotiated =
        offered &
        ((this.options.disable.replyAck ? 0n : bit(VhostUserProtocolFeature.REPLY_ACK)) |
          bit(VhostUserProtocolFeature.CONFIG) |
          bit(VhostUserProtocolFeature.MQ));
      await frontend.setProtocolFeatures(negotiated);
      if (hasBit(negotiated, VhostUserProtocolFeature.REPLY_ACK)) frontend.setReplyAck(true);
      this.protocol = { offered, negotiated, names: protocolFeatureNames(negotiated) };
    }
    await frontend.setOwner();
    if (this.hasProtocol(VhostUserProtocolFeature.MQ)) {
      this.backendQueues = await frontend.getQueueNum();
    }
  }

  hasProtocol(feature: number): boolean {
    return hasBit(this.protocol.negotiated, feature);
  }

  /** SET_FEATURES with what both sides have, minus the ring features the options disable. */
  async negotiate(wanted: bigint): Promise<bigint> {
    let mask = wanted;
    if (this.options.disable.eventIdx) mask &= ~bit(VirtioFeature.VIRTIO_RING_F_EVENT_IDX);
    if (this.options.disable.indirect) mask &= ~bit(VirtioFeature.VIRTIO_RING_F_INDIRECT_DESC);
    this.negotiated = this.offered & mask;
    await this.frontend.setFeatures(this.negotiated);
    return this.negotiated;
  }

  has(feature: number): boolean {
    return hasBit(this.negotiated, feature);
  }

  get eventIdx(): boolean {
    return this.has(VirtioFeature.VIRTIO_RING_F_EVENT_IDX);
  }

  get indirect(): boolean {
    return this.has(VirtioFeature.VIRTIO_RING_F_INDIRECT_DESC);
  }

  /**
   * Descriptors one chain may use, given the device's per-request segment limit: with indirect
   * descriptors a chain's table is bounded separately from the ring.
   */
  chainLimits(deviceSegMax: number): { indirectEntries: number; chainDescriptors: number } {
    const queueSize = this.options.queueSize;
    const indirectEntries = this.indirect
      ? Math.min(deviceSegMax, queueSize, MAX_INDIRECT_ENTRIES)
      : 0;
    return {
      indirectEntries,
      chainDescriptors: this.indirect ? Math.max(indirectEntries, queueSize) : queueSize,
    };
  }

  /**
   * Allocates shared memory (control region: `count` rings each followed by `areaBytes` of
   * driver area; data region: options.memorySize), sends SET_MEM_TABLE and sets up every
   * ring: size, addresses, base, call, err, kick, enable.
   */
  async createRings(
    count: number,
    indirectEntries: number,
    areaBytes: number,
  ): Promise<RingParts[]> {
    const layout = splitRingLayout(this.options.queueSize, indirectEntries);
    const ringBytes = alignUp(layout.totalBytes, RING_ALIGN);
    const perQueue = ringBytes + alignUp(areaBytes, RING_ALIGN);
    const memory = new GuestMemory({
      controlSize: perQueue * count,
      dataSize: this.options.memorySize,
      hugepages: this.options.hugepages,
      hugetlbfsPath: this.options.hugetlbfsPath,
    });
    this.memory = memory;
    this.#resources.onRelease(() => memory.close());
    const table = memory.memoryTable();
    try {
      await this.frontend.setMemTable(
        table.regions.map((r) => ({ ...r })),
        table.fds,
      );
    } catch (err) {
      throw this.#explainMemTableLoss(err);
    }
    const rings: RingParts[] = [];
    for (let index = 0; index < count; index++) {
      const base = index * perQueue;
      const vq = new SplitVirtqueue(
        index,
        layout,
        { buffer: memory.controlBuffer, offset: base, gpa: memory.controlGpa + base },
        { eventIdx: this.eventIdx, indirect: this.indirect },
      );
      const kickFd = this.#eventfd();
      const callFd = this.#eventfd();
      const errFd = this.#eventfd();
      this.errFds.push(errFd);
      rings.push({
        index,
        vq,
        kickFd,
        callFd,
        errFd,
        areaOffset: base + ringBytes,
        areaGpa: memory.controlGpa + base + ringBytes,
      });
      await this.#setupVring(memory, index, base, layout, { kickFd, callFd, errFd });
    }
    return rings;
  }

  /**
   * Without REPLY_ACK nothing tells us the backend processed the setup: a round trip orders it.
   * @throws ProtocolError if a message came unasked (behind the last reply): the device would
   * otherwise open with it unread, and no one would hear of it until close took it for a reply.
   */
  async finish(): Promise<void> {
    if (!this.frontend.replyAck) await this.frontend.barrier();
    const unread = this.endpoint.unread;
    if (unread !== undefined) {
      throw new ProtocolError(`unsolicited message from backend (${describeMessage(unread)})`);
    }
  }

  /**
   * A backend that hangs up on SET_MEM_TABLE most likely could not use the memory. SPDK's vhost
   * target is one (v26.09, measured): it registers each region in whole 2 MiB pages around where
   * it mapped it, and crashes when a region of memfd memory (4 KiB pages, mapped wherever the
   * kernel puts it) does not start on a 2 MiB boundary there. Hugepage memory always does.
   */
  #explainMemTableLoss(err: unknown): unknown {
    if (!(err instanceof DisconnectedError) || this.options.hugepages !== false) return err;
    return new DisconnectedError(
      `${err.message} on VHOST_USER_SET_MEM_TABLE: the backend may need hugepage-backed memory ` +
        `(SPDK's vhost target does): open with hugepages: '2M' (CLI: --hugepages 2M)`,
      { cause: err },
    );
  }

  #eventfd(): number {
    const fd = native.eventfd();
    this.#resources.onRelease(() => native.close(fd));
    return fd;
  }

  async #setupVring(
    memory: GuestMemory,
    index: number,
    base: number,
    layout: SplitRingLayout,
    fds: { kickFd: number; callFd: number; errFd: number },
  ): Promise<void> {
    const frontend = this.frontend;
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
    if (hasBit(this.offered, VHOST_USER_F_PROTOCOL_FEATURES)) {
      await frontend.setVringEnable(index, true);
    }
  }
}

/**
 * The rings, fds and memory of an open device, and their release: shared by the drivers so
 * that teardown is written once.
 */
export class VhostDeviceResources {
  readonly endpoint: SocketEndpoint;
  readonly frontend: VhostUserFrontend;
  readonly memory: GuestMemory;
  readonly rings: readonly RingParts[];
  readonly errFds: readonly number[];
  #torn = false;

  constructor(setup: VhostSetup, rings: readonly RingParts[]) {
    this.endpoint = setup.endpoint;
    this.frontend = setup.frontend;
    this.memory = setup.memory!;
    this.rings = rings;
    this.errFds = [...setup.errFds];
  }

  /** Call eventfds (ring order), error eventfds, then the socket. */
  waitFds(): number[] {
    return [...this.rings.map((r) => r.callFd), ...this.errFds, this.endpoint.fd];
  }

  /**
   * GET_VRING_BASE on every ring (the backend stops them), then release everything. The rings
   * together get one request timeout: each request has its own, and a backend answering every
   * ring just within it would hold close() for as many timeouts as there are rings. Rings not
   * stopped by then stop when the socket closes (the backend sees the hang-up).
   */
  async shutdown(): Promise<void> {
    if (this.#torn) return;
    if (!this.endpoint.closed && this.endpoint.error === undefined) {
      const stopRings = async (): Promise<void> => {
        for (const ring of this.rings) {
          if (this.#torn) return;
          await this.frontend.getVringBase(ring.index);
        }
      };
      let timer: NodeJS.Timeout | undefined;
      const deadline = new Promise<void>((resolve) => {
        timer = setTimeout(resolve, this.frontend.timeoutMs);
      });
      // A backend failing at teardown must not keep our fds and memory alive.
      await Promise.race([stopRings().catch(() => undefined), deadline]);
      clearTimeout(timer);
    }
    this.destroy();
  }

  /** Releases everything; one close that fails (an fd already gone) does not keep the rest. */
  destroy(): void {
    if (this.#torn) return;
    this.#torn = true;
    this.endpoint.close();
    for (const ring of this.rings) {
      closeQuietly(ring.kickFd);
      closeQuietly(ring.callFd);
    }
    for (const fd of this.errFds) closeQuietly(fd);
    this.memory.close();
  }
}

function closeQuietly(fd: number): void {
  try {
    native.close(fd);
  } catch {
    // Teardown goes on: the fd is not ours to keep either way.
  }
}

export function alignUp(n: number, align: number): number {
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
