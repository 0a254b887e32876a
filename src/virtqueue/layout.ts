/**
 * Split virtqueue memory layout and the constants of the virtio spec ("Split Virtqueues").
 * Offsets are relative to a base the caller aligns to 4096 bytes.
 */

/** Descriptor continues via the `next` field. */
export const VIRTQ_DESC_F_NEXT = 1;
/** Buffer is device write-only (otherwise device read-only). */
export const VIRTQ_DESC_F_WRITE = 2;
/** Buffer holds a table of indirect descriptors. */
export const VIRTQ_DESC_F_INDIRECT = 4;
/** avail.flags: driver does not want interrupts (ignored when EVENT_IDX is negotiated). */
export const VIRTQ_AVAIL_F_NO_INTERRUPT = 1;
/** used.flags: device does not want kicks (ignored when EVENT_IDX is negotiated). */
export const VIRTQ_USED_F_NO_NOTIFY = 1;

/** Bytes of one descriptor: addr u64, len u32, flags u16, next u16. */
export const VIRTQ_DESC_SIZE = 16;
/** Largest queue size the split ring allows. */
export const VIRTQ_MAX_SIZE = 32768;

export interface SplitRingLayout {
  /** Number of descriptors (queue size). */
  size: number;
  /** Descriptor table: 16 * size bytes, 16-aligned. */
  descOffset: number;
  /** Driver area: flags u16, idx u16, ring u16[size], used_event u16. 2-aligned. */
  availOffset: number;
  /** Device area: flags u16, idx u16, {id u32, len u32}[size], avail_event u16. */
  usedOffset: number;
  /** First of `size` indirect tables (one per descriptor index), 16-aligned. */
  indirectOffset: number;
  /** Entries per indirect table; 0 = no indirect tables. */
  indirectEntries: number;
  /** Bytes from the base to the end of the last area. */
  totalBytes: number;
}

function alignUp(n: number, align: number): number {
  return Math.ceil(n / align) * align;
}

/** Bytes of the avail ring (flags, idx, ring, used_event). */
export function availRingBytes(size: number): number {
  return 6 + 2 * size;
}

/** Bytes of the used ring (flags, idx, elements, avail_event). */
export function usedRingBytes(size: number): number {
  return 6 + 8 * size;
}

/**
 * Computes where the areas of a split ring go.
 *
 * @throws RangeError if `size` is not a power of two in 1..32768, or `indirectEntries` is not an
 *   integer in 0..size (the spec forbids chains longer than the queue size, indirect ones included,
 *   and backends such as DPDK reject such tables).
 */
export function splitRingLayout(size: number, indirectEntries: number): SplitRingLayout {
  if (!Number.isInteger(size) || size < 1 || size > VIRTQ_MAX_SIZE || (size & (size - 1)) !== 0) {
    throw new RangeError(`queue size must be a power of two in 1..${VIRTQ_MAX_SIZE}, got ${size}`);
  }
  if (!Number.isInteger(indirectEntries) || indirectEntries < 0 || indirectEntries > size) {
    throw new RangeError(
      `indirectEntries must be an integer in 0..${size} (the queue size), got ${indirectEntries}`,
    );
  }
  const descOffset = 0;
  const availOffset = descOffset + VIRTQ_DESC_SIZE * size;
  // The device writes the used ring while the driver writes the avail ring: keep them on separate
  // 64-byte cache lines so the two sides do not bounce one line between cores.
  const usedOffset = alignUp(availOffset + availRingBytes(size), 64);
  const indirectOffset = alignUp(usedOffset + usedRingBytes(size), VIRTQ_DESC_SIZE);
  const totalBytes = indirectOffset + size * indirectEntries * VIRTQ_DESC_SIZE;
  return {
    size,
    descOffset,
    availOffset,
    usedOffset,
    indirectOffset,
    indirectEntries,
    totalBytes,
  };
}

/**
 * The spec's vring_need_event: should the side that moved an index from `oldIdx` to `newIdx`
 * notify the other side, which asked to be told once `eventIdx` is passed? All u16, wrapping.
 */
export function vringNeedEvent(eventIdx: number, newIdx: number, oldIdx: number): boolean {
  return ((newIdx - eventIdx - 1) & 0xffff) < ((newIdx - oldIdx) & 0xffff);
}
