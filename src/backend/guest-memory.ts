/**
 * The frontend's memory as the backend sees it: the regions of SET_MEM_TABLE mapped into this
 * process, and the two translations the protocol needs (guest-physical addresses from
 * descriptors, frontend userspace addresses from SET_VRING_ADDR) to a region and an offset.
 */

import { native, type MappingHandle } from '../native.js';
import type { VhostUserMemoryRegion } from '../protocol/messages.js';

const PAGE_SIZE = 4096;
/** Addresses at or above 2^53 cannot be numbers; no region of ours can lie there. */
const MAX_ADDR = Number.MAX_SAFE_INTEGER;

export interface MappedRegion {
  readonly gpa: number;
  readonly uva: number;
  readonly size: number;
  /** The whole mapping; region byte 0 is at `base` (mmap offsets must be page aligned). */
  readonly buffer: SharedArrayBuffer;
  readonly base: number;
  /** Over the whole mapping, for descriptor reads without allocating. */
  readonly view: DataView;
  readonly handle: MappingHandle;
}

/** A byte range located in a mapped region: `offset` is relative to `region.buffer`. */
export interface Located {
  region: MappedRegion;
  offset: number;
}

/** fcntl seal bits (linux/fcntl.h). */
export const F_SEAL_SEAL = 0x1;
export const F_SEAL_SHRINK = 0x2;
export const F_SEAL_GROW = 0x4;

/** Why a memory table was refused; the session turns it into a nack or a dropped connection. */
export class MemoryTableError extends Error {}

export class BackendMemory {
  readonly regions: readonly MappedRegion[];
  #last: MappedRegion | undefined;
  #closed = false;

  private constructor(regions: MappedRegion[]) {
    this.regions = regions;
  }

  /**
   * Maps every region. Each fd must really hold mmap_offset + memory_size bytes (checked with
   * fstat), because touching a page past the end of a shorter file raises SIGBUS, which would kill
   * the backend. The fds are always closed, mapped or not. Throws MemoryTableError.
   *
   * fstat only tells the size now: the frontend could ftruncate the file afterwards. A memfd that
   * can still take seals (F_SEAL_SEAL clear) must therefore carry F_SEAL_SHRINK, or the table is
   * refused: QEMU's memory-backend-memfd (seal=on by default) and this package's frontend seal
   * theirs. Files that can never be sealed are accepted as they are, and there the risk remains:
   * regular files, tmpfs and hugetlbfs files (F_GET_SEALS reports F_SEAL_SEAL on those), memfds
   * made without MFD_ALLOW_SEALING, and memfds their creator locked with F_SEAL_SEAL but no
   * F_SEAL_SHRINK. A frontend that shrinks such a file under a running backend kills it with
   * SIGBUS (which JavaScript cannot catch).
   */
  static map(table: readonly VhostUserMemoryRegion[], fds: readonly number[]): BackendMemory {
    const mapped: MappedRegion[] = [];
    try {
      if (table.length !== fds.length) {
        throw new MemoryTableError(`${table.length} regions but ${fds.length} fds`);
      }
      table.forEach((entry, i) => {
        const size = Number(entry.memorySize);
        const gpa = Number(entry.guestPhysAddr);
        const uva = Number(entry.userspaceAddr);
        const offset = Number(entry.mmapOffset);
        if ([size, gpa, uva, offset].some((n) => !Number.isSafeInteger(n) || n + size > MAX_ADDR)) {
          throw new MemoryTableError(`region ${i}: addresses beyond 2^53 are not supported`);
        }
        for (const other of mapped) {
          if (gpa < other.gpa + other.size && other.gpa < gpa + size) {
            throw new MemoryTableError(`region ${i}: guest addresses overlap another region`);
          }
        }
        checkSeals(fds[i]!, i);
        let fileSize: number;
        try {
          fileSize = native.fstatSize(fds[i]!);
        } catch (err) {
          throw new MemoryTableError(`region ${i}: fstat failed: ${(err as Error).message}`);
        }
        if (fileSize < offset + size) {
          throw new MemoryTableError(
            `region ${i}: fd holds ${fileSize} bytes, region needs ${offset + size}`,
          );
        }
        const base = offset % PAGE_SIZE;
        let result;
        try {
          result = native.mmap(fds[i]!, base + size, offset - base, 'shared');
        } catch (err) {
          throw new MemoryTableError(`region ${i}: mmap failed: ${(err as Error).message}`);
        }
        const buffer = result.buffer as SharedArrayBuffer;
        // No view over the whole buffer but a DataView: Node 20's typed arrays stop at 4 GiB.
        mapped.push({
          gpa,
          uva,
          size,
          buffer,
          base,
          view: new DataView(buffer),
          handle: result.handle,
        });
      });
    } catch (err) {
      for (const region of mapped) native.munmap(region.handle);
      throw err;
    } finally {
      for (const fd of fds) native.close(fd);
    }
    return new BackendMemory(mapped);
  }

  /** [gpa, gpa + length) inside one region, or undefined. length 0 still needs gpa mapped. */
  translateGpa(gpa: number, length: number): Located | undefined {
    const last = this.#last;
    if (last !== undefined && gpa >= last.gpa && gpa + length <= last.gpa + last.size) {
      return { region: last, offset: last.base + (gpa - last.gpa) };
    }
    for (const region of this.regions) {
      if (
        gpa >= region.gpa &&
        gpa < region.gpa + region.size &&
        gpa + length <= region.gpa + region.size
      ) {
        this.#last = region;
        return { region, offset: region.base + (gpa - region.gpa) };
      }
    }
    return undefined;
  }

  /**
   * [gpa, gpa + length) cut at region boundaries, for a buffer that runs from one region into the
   * next (guest addresses are contiguous where the regions are not: different fds, say), or
   * undefined if a byte of it is not mapped. Slower than translateGpa: for what that refused.
   */
  translateGpaPieces(gpa: number, length: number): (Located & { length: number })[] | undefined {
    const pieces: (Located & { length: number })[] = [];
    for (let at = gpa, left = length; left > 0;) {
      const region = this.regions.find((r) => at >= r.gpa && at < r.gpa + r.size);
      if (region === undefined) return undefined;
      const n = Math.min(left, region.gpa + region.size - at);
      pieces.push({ region, offset: region.base + (at - region.gpa), length: n });
      at += n;
      left -= n;
    }
    return pieces;
  }

  /** Same as translateGpa for a frontend userspace address (ring addresses). */
  translateUva(uva: number, length: number): Located | undefined {
    for (const region of this.regions) {
      if (
        uva >= region.uva &&
        uva < region.uva + region.size &&
        uva + length <= region.uva + region.size
      ) {
        return { region, offset: region.base + (uva - region.uva) };
      }
    }
    return undefined;
  }

  /**
   * Unmaps everything. The buffers are SharedArrayBuffers, so views still held read zero pages
   * afterwards instead of faulting (see native.munmap). Idempotent.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const region of this.regions) native.munmap(region.handle);
  }
}

/** See BackendMemory.map: a sealable file must be sealed against shrinking. */
function checkSeals(fd: number, i: number): void {
  let seals: number;
  try {
    seals = native.memfdSeals(fd);
  } catch (err) {
    throw new MemoryTableError(`region ${i}: F_GET_SEALS failed: ${(err as Error).message}`);
  }
  if (seals >= 0 && (seals & (F_SEAL_SEAL | F_SEAL_SHRINK)) === 0) {
    throw new MemoryTableError(
      `region ${i}: the memfd is not sealed with F_SEAL_SHRINK (it could shrink under the mapping)`,
    );
  }
}
