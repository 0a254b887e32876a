import { RangeAllocator } from './allocator.js';
import { SharedRegion, type HugePages } from './region.js';

/**
 * The backend sees our memory through two address spaces (vhost-user spec, SET_MEM_TABLE):
 * guest-physical addresses (GPA) appear in descriptors, and the frontend's "userspace" addresses
 * (UVA) appear in SET_VRING_ADDR. Neither needs to be a real pointer: the backend only uses them
 * to find offsets within the regions it mapped. We pick synthetic bases, far apart and with
 * different spacing, so that using one where the other belongs fails loudly in tests, and so
 * that no real address of this process ever reaches JavaScript or the backend.
 */
export const GPA_BASE = 0x1_0000_0000;
export const UVA_BASE = 0x7e00_0000_0000;
const GPA_REGION_STRIDE = 0x4000_0000; // 1 GiB
const UVA_REGION_STRIDE = 0x10_0000_0000; // 64 GiB

export interface MemoryTableEntry {
  guestPhysAddr: bigint;
  memorySize: bigint;
  userspaceAddr: bigint;
  mmapOffset: bigint;
}

export interface GuestMemoryOptions {
  /** Bytes for rings and per-request headers/status (SharedArrayBuffer view). */
  controlSize: number;
  /** Bytes for I/O buffers: allocBuffer and bounce buffers (detachable ArrayBuffer view). */
  dataSize: number;
  hugepages: HugePages;
  hugetlbfsPath?: string | undefined;
}

/** All memory shared with one backend: only these regions are ever handed to it. */
export class GuestMemory {
  readonly control: SharedRegion;
  readonly data: SharedRegion;
  readonly controlGpa: number;
  readonly dataGpa: number;
  readonly controlUva: number;
  readonly dataUva: number;
  readonly allocator: RangeAllocator;
  /** Control region as a SharedArrayBuffer, for Atomics on ring indices. */
  readonly controlBuffer: SharedArrayBuffer;
  /** Data region bytes; views over it become empty after close(). */
  readonly dataBytes: Uint8Array;

  constructor(options: GuestMemoryOptions) {
    const common = { hugepages: options.hugepages, hugetlbfsPath: options.hugetlbfsPath };
    const control = SharedRegion.create({
      name: 'vhost-user-rings',
      size: options.controlSize,
      view: 'shared',
      ...common,
    });
    let data: SharedRegion;
    try {
      data = SharedRegion.create({
        name: 'vhost-user-buffers',
        size: options.dataSize,
        view: 'plain',
        ...common,
      });
    } catch (err) {
      control.close();
      throw err;
    }
    this.control = control;
    this.data = data;
    this.controlBuffer = control.buffer as SharedArrayBuffer;
    this.dataBytes = new Uint8Array(data.buffer);
    this.controlGpa = GPA_BASE;
    this.dataGpa = GPA_BASE + Math.ceil(control.size / GPA_REGION_STRIDE) * GPA_REGION_STRIDE;
    this.controlUva = UVA_BASE;
    this.dataUva = UVA_BASE + Math.ceil(control.size / UVA_REGION_STRIDE) * UVA_REGION_STRIDE;
    this.allocator = new RangeAllocator(data.size);
  }

  /** The regions for VHOST_USER_SET_MEM_TABLE, and their fds in the same order. */
  memoryTable(): { regions: MemoryTableEntry[]; fds: number[] } {
    const entry = (region: SharedRegion, gpa: number, uva: number): MemoryTableEntry => ({
      guestPhysAddr: BigInt(gpa),
      memorySize: BigInt(region.size),
      userspaceAddr: BigInt(uva),
      mmapOffset: 0n,
    });
    return {
      regions: [
        entry(this.control, this.controlGpa, this.controlUva),
        entry(this.data, this.dataGpa, this.dataUva),
      ],
      fds: [this.control.fd, this.data.fd],
    };
  }

  /** Offset of `view` inside the data region, or -1 if it lives elsewhere (needs bouncing). */
  dataOffsetOf(view: ArrayBufferView): number {
    return view.buffer === this.data.buffer && !this.data.closed ? view.byteOffset : -1;
  }

  get closed(): boolean {
    return this.data.closed;
  }

  close(): void {
    this.data.close();
    this.control.close();
  }
}
