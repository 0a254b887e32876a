import type { SplitVirtqueue } from '../../virtqueue/split.js';
import { kickIfNeeded, SegmentArrays, slotsUseMemory, type DeviceQueue } from '../device.js';
import {
  DeviceIoError,
  QueueBrokenError,
  ShortTransferError,
  UnsupportedError,
} from '../../errors.js';
import type { BlockRequest, BlockRequestKind } from '../../block/request.js';
import type { DeviceStats } from '../stats.js';
import {
  STATUS_NOT_WRITTEN,
  VIRTIO_BLK_S_IOERR,
  VIRTIO_BLK_S_OK,
  VIRTIO_BLK_S_UNSUPP,
  VIRTIO_BLK_SECTOR_SIZE,
  VirtioBlkType,
  type VirtioBlkRequestType,
} from './spec.js';

/**
 * Per-request driver area in the control region, one per slot: the request header
 * (virtio_blk_outhdr), a discard/write-zeroes segment, and the status byte.
 */
export const SLOT_STRIDE = 64;
const HDR_OFF = 0;
const DWZ_OFF = 16;
const STATUS_OFF = 48;

export interface BlkQueueMemory {
  buffer: SharedArrayBuffer;
  /** Byte offset of the slot array in `buffer`, and its guest-physical address. */
  slotsOffset: number;
  slotsGpa: number;
}

const TYPE_OF: Record<Exclude<BlockRequestKind, 'command'>, VirtioBlkRequestType> = {
  read: VirtioBlkType.VIRTIO_BLK_T_IN,
  write: VirtioBlkType.VIRTIO_BLK_T_OUT,
  flush: VirtioBlkType.VIRTIO_BLK_T_FLUSH,
  'get-id': VirtioBlkType.VIRTIO_BLK_T_GET_ID,
  discard: VirtioBlkType.VIRTIO_BLK_T_DISCARD,
  'write-zeroes': VirtioBlkType.VIRTIO_BLK_T_WRITE_ZEROES,
};

/**
 * One virtio-blk request queue: turns BlockRequests into descriptor chains
 * (header RO, data RO/WO, status WO) and completions back into errors or success.
 */
export class BlkQueue implements DeviceQueue {
  readonly vq: SplitVirtqueue;
  readonly kickFd: number;
  readonly callFd: number;
  readonly filledByEngineOnly = true;
  readonly #maxSegmentBytes: number;
  readonly #checkReadLen: boolean;
  readonly #stats: DeviceStats;
  readonly #view: DataView;
  readonly #bytes: Uint8Array;
  readonly #slotsOffset: number;
  readonly #slotsGpa: number;
  /** slot -> request in flight */
  readonly #slots: (BlockRequest | undefined)[];
  readonly #freeSlots: Int32Array;
  #freeSlotCount = 0;
  readonly #segArrays = new SegmentArrays();
  readonly #completeOne = (slot: number, len: number): void => this.#complete(slot, len);

  /**
   * @param checkReadLen whether a successful read must report (used len) every data byte
   *   written: true with VIRTIO_F_VERSION_1; legacy devices are known to set len wrongly.
   */
  constructor(
    vq: SplitVirtqueue,
    memory: BlkQueueMemory,
    fds: { kickFd: number; callFd: number },
    maxSegmentBytes: number,
    stats: DeviceStats,
    checkReadLen = true,
  ) {
    this.vq = vq;
    this.kickFd = fds.kickFd;
    this.callFd = fds.callFd;
    this.#maxSegmentBytes = maxSegmentBytes;
    this.#checkReadLen = checkReadLen;
    this.#stats = stats;
    this.#view = new DataView(memory.buffer);
    this.#bytes = new Uint8Array(memory.buffer);
    this.#slotsOffset = memory.slotsOffset;
    this.#slotsGpa = memory.slotsGpa;
    this.#slots = new Array<BlockRequest | undefined>(vq.size).fill(undefined);
    this.#freeSlots = new Int32Array(vq.size);
    for (let i = 0; i < vq.size; i++) this.#freeSlots[i] = vq.size - 1 - i;
    this.#freeSlotCount = vq.size;
  }

  get inFlight(): number {
    return this.vq.size - this.#freeSlotCount;
  }

  /** Writes the request into the ring (and publishes it); the kick is deferred to kick(). */
  trySubmit(request: BlockRequest): boolean {
    if (this.vq.broken) throw new QueueBrokenError(this.vq.index, 'queue is broken');
    if (request.kind === 'command') {
      throw new UnsupportedError('command', 'virtio-blk devices take no raw commands');
    }
    if (this.#freeSlotCount === 0) return false;
    const dataSegments = this.#dataSegmentCount(request);
    const total = dataSegments + 2;
    if (!this.vq.canAdd(total)) return false;
    const slot = this.#freeSlots[--this.#freeSlotCount]!;
    const base = this.#slotsOffset + slot * SLOT_STRIDE;
    const gpa = this.#slotsGpa + slot * SLOT_STRIDE;
    const view = this.#view;
    view.setUint32(base + HDR_OFF, TYPE_OF[request.kind], true);
    view.setUint32(base + HDR_OFF + 4, 0, true);
    if (request.kind === 'flush' || request.kind === 'get-id') {
      view.setUint32(base + HDR_OFF + 8, 0, true);
      view.setUint32(base + HDR_OFF + 12, 0, true);
    } else {
      putSector(view, base + HDR_OFF + 8, request);
    }
    this.#bytes[base + STATUS_OFF] = STATUS_NOT_WRITTEN;

    const segs = this.#segArrays.get(total);
    let i = 0;
    const hdr = segs[i++]!;
    hdr.gpa = gpa + HDR_OFF;
    hdr.len = 16;
    hdr.write = false;
    if (request.kind === 'discard' || request.kind === 'write-zeroes') {
      putSector(view, base + DWZ_OFF, request);
      view.setUint32(base + DWZ_OFF + 8, request.length / VIRTIO_BLK_SECTOR_SIZE, true);
      // flags stay 0: write-zeroes never sets VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP, because the
      // caller asked for zeroes, not for deallocation; discard has no flags.
      view.setUint32(base + DWZ_OFF + 12, 0, true);
      const s = segs[i++]!;
      s.gpa = gpa + DWZ_OFF;
      s.len = 16;
      s.write = false;
    } else if (dataSegments > 0) {
      const write = request.kind === 'read' || request.kind === 'get-id';
      const max = this.#maxSegmentBytes;
      let left = request.length;
      let at = request.dataGpa;
      while (left > 0) {
        const len = left > max ? max : left;
        const s = segs[i++]!;
        s.gpa = at;
        s.len = len;
        s.write = write;
        at += len;
        left -= len;
      }
    }
    const status = segs[i]!;
    status.gpa = gpa + STATUS_OFF;
    status.len = 1;
    status.write = true;
    // The slot number is the token: drain hands it back with the used element.
    if (!this.vq.add(segs, slot)) {
      this.#freeSlotCount++;
      return false;
    }
    this.#slots[slot] = request;
    this.vq.publish();
    this.#stats.requests++;
    return true;
  }

  /** Notifies the device of everything published since the last kick, if it wants to know. */
  kick(): void {
    if (kickIfNeeded(this.vq, this.kickFd)) this.#stats.kicks++;
  }

  /** Completes every request the device has returned. Returns how many. */
  drain(): number {
    return this.vq.drain(this.#completeOne);
  }

  /** Does any request in flight (abandoned ones included) use memory in [gpa, gpa + length)? */
  usesMemory(gpa: number, length: number): boolean {
    return slotsUseMemory(this.#slots, gpa, length);
  }

  /** Fails every request in flight (the backend is gone, so no descriptor can come back). */
  abandonAll(error: Error): void {
    for (let slot = 0; slot < this.#slots.length; slot++) {
      const request = this.#slots[slot];
      if (request === undefined) continue;
      this.#slots[slot] = undefined;
      this.#freeSlots[this.#freeSlotCount++] = slot;
      request.onComplete(request, error);
    }
  }

  #complete(slot: number, len: number): void {
    const request = this.#slots[slot];
    if (request === undefined) {
      // The ring validated the token, so this is our own bookkeeping failing.
      throw new QueueBrokenError(this.vq.index, `used element for idle slot ${slot}`);
    }
    this.#slots[slot] = undefined;
    this.#freeSlots[this.#freeSlotCount++] = slot;
    const status = this.#bytes[this.#slotsOffset + slot * SLOT_STRIDE + STATUS_OFF]!;
    this.#stats.completions++;
    let error = status === VIRTIO_BLK_S_OK ? null : statusError(this.vq.index, request, status);
    // The data of a read counts only as far as len says the device wrote it: the rest of the
    // buffer is stale memory, never a successful read. Lenient where devices are known to
    // differ: len may leave the status byte out (cloud-hypervisor's backend counts data only),
    // and 0 is taken for "not reported".
    if (error === null && request.kind === 'read' && this.#checkReadLen) {
      if (len !== 0 && len < request.length) {
        error = new ShortTransferError('read', request.length, request.length - len);
      }
    }
    request.onComplete(request, error);
  }

  #dataSegmentCount(request: BlockRequest): number {
    switch (request.kind) {
      case 'read':
      case 'write':
      case 'get-id':
        return this.#maxSegmentBytes === Infinity
          ? 1
          : Math.ceil(request.length / this.#maxSegmentBytes);
      case 'discard':
      case 'write-zeroes':
        return 1;
      case 'flush':
      case 'command':
        return 0;
    }
  }
}

/** The one place where a virtio-blk status byte becomes an error. */
export function statusError(queue: number, request: BlockRequest, status: number): Error {
  const position =
    request.kind === 'flush' || request.kind === 'get-id' ? undefined : request.position;
  switch (status) {
    case VIRTIO_BLK_S_IOERR:
      return new DeviceIoError(request.kind, status, position);
    case VIRTIO_BLK_S_UNSUPP:
      return new UnsupportedError(request.kind, 'device answered VIRTIO_BLK_S_UNSUPP', status);
    case STATUS_NOT_WRITTEN:
      return new QueueBrokenError(
        queue,
        `device returned a ${request.kind} request without writing its status`,
      );
    default:
      return new DeviceIoError(request.kind, status, position);
  }
}

/**
 * The request's first sector, as a little-endian u64 at `offset`. Computed here from the request,
 * not passed: past 1 TiB a sector number is above 2^31, and one passed to a call V8 did not
 * inline would be a new heap number per request.
 */
function putSector(view: DataView, offset: number, request: BlockRequest): void {
  const sector = request.position / VIRTIO_BLK_SECTOR_SIZE;
  view.setUint32(offset, sector >>> 0, true);
  view.setUint32(offset + 4, Math.floor(sector / 0x1_0000_0000), true);
}
