/**
 * First-fit allocator over one region's byte range, with coalescing on free. Blocks are
 * `granule`-aligned so that buffers suit backends that open their files with O_DIRECT.
 */
export class RangeAllocator {
  readonly size: number;
  readonly granule: number;
  /** Free extents sorted by offset: parallel arrays keep this allocation-free. */
  #freeOffsets: number[] = [];
  #freeSizes: number[] = [];
  /** offset -> allocated size */
  readonly #allocated = new Map<number, number>();
  #freeBytes: number;

  constructor(size: number, granule = 4096) {
    this.size = size - (size % granule);
    this.granule = granule;
    this.#freeOffsets.push(0);
    this.#freeSizes.push(this.size);
    this.#freeBytes = this.size;
  }

  get freeBytes(): number {
    return this.#freeBytes;
  }

  get allocatedCount(): number {
    return this.#allocated.size;
  }

  /** The largest request that would succeed now. */
  get largestFree(): number {
    let max = 0;
    for (const s of this.#freeSizes) if (s > max) max = s;
    return max;
  }

  /** Returns the offset of a block of at least `bytes`, or -1 if no extent is large enough. */
  alloc(bytes: number): number {
    const need = this.roundUp(bytes);
    const sizes = this.#freeSizes;
    for (let i = 0; i < sizes.length; i++) {
      const extent = sizes[i]!;
      if (extent < need) continue;
      const offset = this.#freeOffsets[i]!;
      if (extent === need) {
        this.#freeOffsets.splice(i, 1);
        sizes.splice(i, 1);
      } else {
        this.#freeOffsets[i] = offset + need;
        sizes[i] = extent - need;
      }
      this.#allocated.set(offset, need);
      this.#freeBytes -= need;
      return offset;
    }
    return -1;
  }

  /** Size actually reserved for the block at `offset`, or undefined if it is not allocated. */
  sizeOf(offset: number): number | undefined {
    return this.#allocated.get(offset);
  }

  /** Returns the block at `offset`. Throws if it was not allocated (double free). */
  free(offset: number): void {
    const size = this.#allocated.get(offset);
    if (size === undefined) throw new Error(`RangeAllocator: offset ${offset} is not allocated`);
    this.#allocated.delete(offset);
    this.#freeBytes += size;
    const offsets = this.#freeOffsets;
    const sizes = this.#freeSizes;
    // Binary search for the insertion point keeps free() O(log n) + splice.
    let lo = 0;
    let hi = offsets.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (offsets[mid]! < offset) lo = mid + 1;
      else hi = mid;
    }
    const mergesLeft = lo > 0 && offsets[lo - 1]! + sizes[lo - 1]! === offset;
    const mergesRight = lo < offsets.length && offset + size === offsets[lo]!;
    if (mergesLeft && mergesRight) {
      sizes[lo - 1] = sizes[lo - 1]! + size + sizes[lo]!;
      offsets.splice(lo, 1);
      sizes.splice(lo, 1);
    } else if (mergesLeft) {
      sizes[lo - 1] = sizes[lo - 1]! + size;
    } else if (mergesRight) {
      offsets[lo] = offset;
      sizes[lo] = sizes[lo]! + size;
    } else {
      offsets.splice(lo, 0, offset);
      sizes.splice(lo, 0, size);
    }
  }

  roundUp(bytes: number): number {
    const g = this.granule;
    return Math.max(g, Math.ceil(bytes / g) * g);
  }
}
