import { native, type HugePageSize, type MappingHandle } from '../native.js';
import { InvalidArgumentError, SystemError } from '../errors.js';

/** Where the pages of shared memory come from. */
export type HugePages = false | '2M' | '1G';

export interface RegionOptions {
  /** Shows in /proc/PID/maps as memfd:<name>. */
  name: string;
  /** Bytes wanted; rounded up to the page size. */
  size: number;
  hugepages: HugePages;
  /** A hugetlbfs mount to create the file in, instead of memfd_create(MFD_HUGETLB). */
  hugetlbfsPath?: string | undefined;
  /**
   * 'shared' gives a SharedArrayBuffer (rings: JS needs Atomics on them); 'plain' gives a
   * detachable ArrayBuffer (I/O buffers handed to the application: after close they read as empty).
   */
  view: 'plain' | 'shared';
}

const PAGE_SIZES: Record<'none' | '2M' | '1G', number> = {
  none: 4096,
  '2M': 2 * 1024 * 1024,
  '1G': 1024 * 1024 * 1024,
};

/** One memfd (or hugetlbfs file) mapped into this process and shared with the backend. */
export class SharedRegion {
  readonly name: string;
  readonly fd: number;
  readonly size: number;
  readonly pageSize: number;
  readonly buffer: ArrayBuffer | SharedArrayBuffer;
  readonly #mapping: MappingHandle;
  #closed = false;

  private constructor(
    name: string,
    fd: number,
    size: number,
    pageSize: number,
    mapping: MappingHandle,
    buffer: ArrayBuffer | SharedArrayBuffer,
  ) {
    this.name = name;
    this.fd = fd;
    this.size = size;
    this.pageSize = pageSize;
    this.#mapping = mapping;
    this.buffer = buffer;
  }

  static create(options: RegionOptions): SharedRegion {
    const pageSize = PAGE_SIZES[options.hugepages === false ? 'none' : options.hugepages];
    if (pageSize === undefined) {
      throw new InvalidArgumentError(
        `hugepages must be false, '2M' or '1G', got ${String(options.hugepages)}`,
      );
    }
    const size = Math.ceil(options.size / pageSize) * pageSize;
    let fd: number;
    try {
      if (options.hugetlbfsPath !== undefined) {
        fd = native.hugetlbfsCreate(options.hugetlbfsPath);
      } else {
        fd = native.memfdCreate(
          options.name,
          (options.hugepages === false ? 0 : pageSize) as HugePageSize,
        );
      }
    } catch (err) {
      throw new SystemError(
        options.hugepages === false
          ? 'cannot create shared memory'
          : `cannot create ${options.hugepages} hugepage memory (are hugepages reserved? see /sys/kernel/mm/hugepages)`,
        err,
      );
    }
    try {
      native.ftruncate(fd, size);
      sealSize(fd, options.hugepages !== false || options.hugetlbfsPath !== undefined);
      const { handle, buffer } = native.mmap(fd, size, 0, options.view);
      return new SharedRegion(options.name, fd, size, pageSize, handle, buffer);
    } catch (err) {
      native.close(fd);
      throw new SystemError(`cannot map ${size} bytes of shared memory`, err);
    }
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Unmaps (detaching every Buffer over a 'plain' region) and closes the fd. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    native.munmap(this.#mapping);
    native.close(this.fd);
  }
}

/**
 * Fixes the file's size (F_SEAL_SHRINK | F_SEAL_GROW), so the backend can trust that its mapping
 * never loses pages under it (a shrunk file makes the backend's next access raise SIGBUS); a
 * backend may refuse a sealable memfd that is not sealed. Hugetlb memfds of kernels before 4.16
 * and hugetlbfs files cannot be sealed (EINVAL / EPERM): they go unsealed.
 */
function sealSize(fd: number, huge: boolean): void {
  try {
    native.memfdSeal(fd);
  } catch (err) {
    const code = (err as { code?: unknown }).code;
    if (huge && (code === 'EINVAL' || code === 'EPERM')) return;
    throw err;
  }
}
