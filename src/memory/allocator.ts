/**
 * First-fit allocator over one region's byte range, with coalescing on free. Blocks are
 * `granule`-aligned so that buffers suit backends that open their files with O_DIRECT.
 *
 * It allocates nothing once its free list has grown to its widest: bounce buffers come from here
 * on every I/O into or out of an ordinary Buffer that the bounce cache cannot serve (an
 * unaligned write's edge blocks at depth 32, say), where a splice's returned array, a Map's
 * rehash and a shrunk array's regrowth made 60-80 B a write (measured).
 */
export class RangeAllocator {
  readonly size: number;
  readonly granule: number;
  /**
   * Free extents sorted by offset, in the first #freeCount elements of parallel arrays that never
   * shrink (shifted in place, never spliced).
   */
  readonly #freeOffsets: number[] = [];
  readonly #freeSizes: number[] = [];
  #freeCount = 0;
  /** Allocated size in granules, by the block's first granule (0: not the start of a block). */
  readonly #granulesAt: Uint32Array;
  #allocatedCount = 0;
  #freeBytes = 0;

  constructor(size: number, granule = 4096) {
    this.size = size - (size % granule);
    this.granule = granule;
    this.#granulesAt = new Uint32Array(this.size / granule);
    if (this.size > 0) this.#insertFree(0, 0, this.size);
    this.#freeBytes = this.size;
  }

  get freeBytes(): number {
    return this.#freeBytes;
  }

  get allocatedCount(): number {
    return this.#allocatedCount;
  }

  /** The largest request that would succeed now. */
  get largestFree(): number {
    let max = 0;
    for (let i = 0; i < this.#freeCount; i++) max = Math.max(max, this.#freeSizes[i]!);
    return max;
  }

  /** Returns the offset of a block of at least `bytes`, or -1 if no extent is large enough. */
  alloc(bytes: number): number {
    const need = this.roundUp(bytes);
    const sizes = this.#freeSizes;
    for (let i = 0; i < this.#freeCount; i++) {
      const extent = sizes[i]!;
      if (extent < need) continue;
      const offset = this.#freeOffsets[i]!;
      if (extent === need) {
        this.#removeFree(i);
      } else {
        this.#freeOffsets[i] = offset + need;
        sizes[i] = extent - need;
      }
      this.#granulesAt[offset / this.granule] = need / this.granule;
      this.#allocatedCount++;
      this.#freeBytes -= need;
      return offset;
    }
    return -1;
  }

  /** Size actually reserved for the block at `offset`, or undefined if it is not allocated. */
  sizeOf(offset: number): number | undefined {
    const granules = this.#granulesOf(offset);
    return granules === 0 ? undefined : granules * this.granule;
  }

  /** Returns the block at `offset`. Throws if it was not allocated (double free). */
  free(offset: number): void {
    const granules = this.#granulesOf(offset);
    if (granules === 0) throw new Error(`RangeAllocator: offset ${offset} is not allocated`);
    const size = granules * this.granule;
    this.#granulesAt[offset / this.granule] = 0;
    this.#allocatedCount--;
    this.#freeBytes += size;
    const offsets = this.#freeOffsets;
    const sizes = this.#freeSizes;
    const count = this.#freeCount;
    // Binary search for the insertion point: O(log n), then a shift of the extents after it.
    let lo = 0;
    let hi = count;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (offsets[mid]! < offset) lo = mid + 1;
      else hi = mid;
    }
    const mergesLeft = lo > 0 && offsets[lo - 1]! + sizes[lo - 1]! === offset;
    const mergesRight = lo < count && offset + size === offsets[lo]!;
    if (mergesLeft && mergesRight) {
      sizes[lo - 1] = sizes[lo - 1]! + size + sizes[lo]!;
      this.#removeFree(lo);
    } else if (mergesLeft) {
      sizes[lo - 1] = sizes[lo - 1]! + size;
    } else if (mergesRight) {
      offsets[lo] = offset;
      sizes[lo] = sizes[lo]! + size;
    } else {
      this.#insertFree(lo, offset, size);
    }
  }

  roundUp(bytes: number): number {
    const g = this.granule;
    return Math.max(g, Math.ceil(bytes / g) * g);
  }

  /** The block's size in granules if `offset` starts one, else 0. */
  #granulesOf(offset: number): number {
    if (!Number.isInteger(offset) || offset < 0 || offset % this.granule !== 0) return 0;
    return this.#granulesAt[offset / this.granule] ?? 0;
  }

  #insertFree(at: number, offset: number, size: number): void {
    const offsets = this.#freeOffsets;
    const sizes = this.#freeSizes;
    for (let i = this.#freeCount; i > at; i--) {
      offsets[i] = offsets[i - 1]!;
      sizes[i] = sizes[i - 1]!;
    }
    offsets[at] = offset;
    sizes[at] = size;
    this.#freeCount++;
  }

  #removeFree(at: number): void {
    const offsets = this.#freeOffsets;
    const sizes = this.#freeSizes;
    const last = --this.#freeCount;
    for (let i = at; i < last; i++) {
      offsets[i] = offsets[i + 1]!;
      sizes[i] = sizes[i + 1]!;
    }
  }
}
