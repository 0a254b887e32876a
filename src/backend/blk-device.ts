/**
 * Executes virtio-blk requests (virtio spec "Block Device: Device Operation") on a Storage. The
 * request is a byte stream, not a descriptor layout: the 16-byte header may span descriptors, the
 * data follows it in the readable part, and the status is the chain's last writable byte.
 */

import {
  VIRTIO_BLK_ID_BYTES,
  VIRTIO_BLK_S_IOERR,
  VIRTIO_BLK_S_OK,
  VIRTIO_BLK_S_UNSUPP,
  VIRTIO_BLK_SECTOR_SIZE,
  VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP,
  VirtioBlkDiscardWriteZeroes,
  VirtioBlkOutHdr,
  VirtioBlkType,
} from '../devices/blk/spec.js';
import type { DeviceModel, RequestFault } from './device-model.js';
import type { DeviceChain, IoSegment } from './device-queue.js';
import { copyFromSegments, copyToSegments, type Storage } from './storage.js';
import { MAX_DISCARD_SECTORS, MAX_DISCARD_SEGMENTS } from './blk-config.js';

export interface BlkResult {
  status: number;
  /** Bytes written into the chain, status byte included (the used element's len). */
  len: number;
  /** The request broke an advertised limit (size_max, seg_max, discard limits). */
  rejected: boolean;
}

const HDR_BYTES = VirtioBlkOutHdr.size;
const DWZ_BYTES = VirtioBlkDiscardWriteZeroes.size;

export class BlkDevice implements DeviceModel {
  readonly #storage: Storage;
  /** Bytes exposed: whole blocks of the storage. */
  readonly capacity: number;
  readonly #readOnly: boolean;
  readonly #serial: Buffer;
  readonly #hdr = Buffer.alloc(HDR_BYTES);
  readonly #dwz = Buffer.alloc(DWZ_BYTES);

  constructor(storage: Storage, capacity: number, readOnly: boolean, serial: Buffer) {
    this.#storage = storage;
    this.capacity = capacity;
    this.#readOnly = readOnly;
    this.#serial = Buffer.alloc(VIRTIO_BLK_ID_BYTES);
    serial.copy(this.#serial);
  }

  /**
   * Runs the request and writes its status byte. Never throws. Any `fault` is an IOERR that
   * leaves the storage untouched.
   */
  execute(chain: DeviceChain, fault?: RequestFault): BlkResult {
    let result: BlkResult;
    if (fault !== undefined) result = fail(VIRTIO_BLK_S_IOERR);
    else if (chain.problem !== undefined) result = fail(VIRTIO_BLK_S_IOERR, chain.overLimit);
    else {
      try {
        result = this.#run(chain);
      } catch {
        // A failing file (EIO, ENOSPC...) is the request's I/O error, not the backend's.
        result = fail(VIRTIO_BLK_S_IOERR);
      }
    }
    chain.status[0] = result.status;
    return result;
  }

  #run(chain: DeviceChain): BlkResult {
    if (chain.readableBytes < HDR_BYTES) return fail(VIRTIO_BLK_S_IOERR);
    copyFromSegments(chain.readable, 0, this.#hdr);
    const hdr = VirtioBlkOutHdr.decode(this.#hdr);
    const sector = Number(hdr.sector);
    const dataOut = chain.readableBytes - HDR_BYTES;
    const dataIn = chain.writableBytes - 1;
    switch (hdr.type) {
      case VirtioBlkType.VIRTIO_BLK_T_IN: {
        if (!this.#inRange(sector, dataIn)) return fail(VIRTIO_BLK_S_IOERR);
        this.#storage.read(slice(chain.writable, 0, dataIn), sector * VIRTIO_BLK_SECTOR_SIZE);
        return ok(dataIn + 1);
      }
      case VirtioBlkType.VIRTIO_BLK_T_OUT: {
        if (this.#readOnly || !this.#inRange(sector, dataOut)) return fail(VIRTIO_BLK_S_IOERR);
        this.#storage.write(
          slice(chain.readable, HDR_BYTES, dataOut),
          sector * VIRTIO_BLK_SECTOR_SIZE,
        );
        return ok(1);
      }
      case VirtioBlkType.VIRTIO_BLK_T_FLUSH:
        this.#storage.flush();
        return ok(1);
      case VirtioBlkType.VIRTIO_BLK_T_GET_ID: {
        const n = Math.min(VIRTIO_BLK_ID_BYTES, dataIn);
        copyToSegments(chain.writable, 0, this.#serial.subarray(0, n));
        return ok(n + 1);
      }
      case VirtioBlkType.VIRTIO_BLK_T_DISCARD:
      case VirtioBlkType.VIRTIO_BLK_T_WRITE_ZEROES:
        return this.#discardOrZero(chain, hdr.type === VirtioBlkType.VIRTIO_BLK_T_DISCARD);
      default:
        return fail(VIRTIO_BLK_S_UNSUPP);
    }
  }

  /** Discard is advisory, but it zeroes too: readers expect what qemu's discard=unmap gives. */
  #discardOrZero(chain: DeviceChain, discard: boolean): BlkResult {
    if (this.#readOnly) return fail(VIRTIO_BLK_S_IOERR);
    const bytes = chain.readableBytes - HDR_BYTES;
    if (bytes === 0 || bytes % DWZ_BYTES !== 0) return fail(VIRTIO_BLK_S_IOERR);
    if (bytes / DWZ_BYTES > MAX_DISCARD_SEGMENTS) return fail(VIRTIO_BLK_S_UNSUPP, true);
    const ranges: { at: number; length: number }[] = [];
    for (let skip = HDR_BYTES; skip < chain.readableBytes; skip += DWZ_BYTES) {
      copyFromSegments(chain.readable, skip, this.#dwz);
      const seg = VirtioBlkDiscardWriteZeroes.decode(this.#dwz);
      const allowed = discard ? 0 : VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP;
      if ((seg.flags & ~allowed) !== 0) return fail(VIRTIO_BLK_S_UNSUPP);
      if (seg.numSectors > MAX_DISCARD_SECTORS) return fail(VIRTIO_BLK_S_IOERR, true);
      const sector = Number(seg.sector);
      const length = seg.numSectors * VIRTIO_BLK_SECTOR_SIZE;
      if (!this.#inRange(sector, length)) return fail(VIRTIO_BLK_S_IOERR);
      ranges.push({ at: sector * VIRTIO_BLK_SECTOR_SIZE, length });
    }
    for (const r of ranges) this.#storage.writeZeroes(r.at, r.length);
    return ok(1);
  }

  /** Whole sectors, inside the capacity. */
  #inRange(sector: number, length: number): boolean {
    if (length < 0 || length % VIRTIO_BLK_SECTOR_SIZE !== 0) return false;
    const start = sector * VIRTIO_BLK_SECTOR_SIZE;
    return Number.isSafeInteger(start) && start + length <= this.capacity;
  }
}

function ok(len: number): BlkResult {
  return { status: VIRTIO_BLK_S_OK, len, rejected: false };
}

function fail(status: number, rejected = false): BlkResult {
  return { status, len: 1, rejected };
}

/** The segments covering [skip, skip + length) of the stream they form. */
export function slice(segments: readonly IoSegment[], skip: number, length: number): IoSegment[] {
  const out: IoSegment[] = [];
  let left = length;
  for (const s of segments) {
    if (left === 0) break;
    const len = s.buf.length;
    if (skip >= len) {
      skip -= len;
      continue;
    }
    const n = Math.min(len - skip, left);
    out.push({ buf: s.buf.subarray(skip, skip + n), addr: s.addr + skip });
    left -= n;
    skip = 0;
  }
  return out;
}
