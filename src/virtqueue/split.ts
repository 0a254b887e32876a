/**
 * Driver side of a split virtqueue (virtio spec, "Split Virtqueues") in shared memory.
 *
 * The device is another process that can write anything into the shared ring, so every value the
 * driver needs later (chains, free list, tokens, writable lengths) lives in private shadows here,
 * and only used.idx, used elements, used.flags and avail_event are read back, and validated.
 *
 * Memory ordering: the ring is a SharedArrayBuffer. Atomics.load / Atomics.store on it are
 * sequentially consistent (ECMAScript memory model), which is at least as strong as the
 * release/acquire/full barriers the spec asks for. V8 compiles an SC store to `xchg` (or
 * `mov` + `mfence`) on x86 and to `stlr` on arm64, and an SC load to `mov` / `ldar`; the compiler
 * does not move plain typed-array accesses across them. Plain stores are used for the bulk
 * (descriptors, ring slots) and one atomic per ordering point.
 */

import { endianness } from 'node:os';
import { InvalidArgumentError, QueueBrokenError } from '../errors.js';
import {
  type SplitRingLayout,
  VIRTQ_AVAIL_F_NO_INTERRUPT,
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
  VIRTQ_DESC_SIZE,
  VIRTQ_USED_F_NO_NOTIFY,
  vringNeedEvent,
} from './layout.js';

/** Where the ring lives. */
export interface RingMemory {
  /** Shared mapping of the ring (and usually of the data buffers). */
  buffer: SharedArrayBuffer;
  /** Byte offset of the layout base in `buffer`; 4096-aligned. */
  offset: number;
  /** Guest-physical address of the layout base (what the device sees). */
  gpa: number;
}

/** One buffer of a chain. */
export interface Segment {
  /** Guest-physical address. */
  gpa: number;
  /** Bytes, 0..2^32-1. */
  len: number;
  /** True if the device writes this buffer (VIRTQ_DESC_F_WRITE). */
  write: boolean;
}

/** Negotiated features that change how the ring is driven. */
export interface SplitVirtqueueFeatures {
  /** VIRTIO_F_EVENT_IDX (VIRTIO_RING_F_EVENT_IDX). */
  eventIdx: boolean;
  /** VIRTIO_F_INDIRECT_DESC (VIRTIO_RING_F_INDIRECT_DESC). */
  indirect: boolean;
}

const TWO_POW_32 = 4294967296;
const MAX_TOKEN = 2 ** 31;

// Per-head states in the private shadow.
const HEAD_FREE = 0;
/** Written into the ring but avail.idx not yet stored: the device cannot legally return it. */
const HEAD_ADDED = 1;
const HEAD_PUBLISHED = 2;

export class SplitVirtqueue {
  readonly index: number;
  readonly size: number;
  /** Guest-physical addresses of the three areas, for the backend's vring setup. */
  readonly descGpa: number;
  readonly availGpa: number;
  readonly usedGpa: number;

  private readonly mask: number;
  private readonly eventIdx: boolean;
  /** Entries per indirect table, or 0 when indirect descriptors are not in use. */
  private readonly indirectEntries: number;
  private readonly indirectGpa: number;

  // Views of shared memory.
  private readonly desc32: Uint32Array;
  private readonly desc16: Uint16Array;
  private readonly ind32: Uint32Array;
  private readonly ind16: Uint16Array;
  /** [0] flags, [1] idx, [2 + i] ring, [2 + size] used_event. */
  private readonly avail16: Uint16Array;
  /** [0] flags, [1] idx, [2 + 4 * size] avail_event. */
  private readonly used16: Uint16Array;
  /** Element i: id at [1 + 2i], len at [2 + 2i]. */
  private readonly used32: Uint32Array;
  private readonly usedEventIndex: number;
  private readonly availEventIndex: number;

  // Private shadows: never read back from shared memory.
  /** Free-list link, and for an allocated chain the link to its next descriptor. */
  private readonly nextFree: Uint16Array;
  private freeHead = 0;
  private numFree = 0;
  private readonly headState: Uint8Array;
  private readonly tokens: Uint32Array;
  /** Ring descriptors a chain occupies (1 for an indirect chain). */
  private readonly chainDescs: Uint16Array;
  private readonly chainTail: Uint16Array;
  private readonly writableBytes: Float64Array;
  private readonly availShadow: Uint16Array;
  private availFlags = 0;

  // Ring cursors (u16).
  /** Next avail slot to fill (includes unpublished chains). */
  private nextAvailIdx = 0;
  /** Last value stored into avail.idx. */
  private publishedIdx = 0;
  private availAtLastKick = 0;
  /** Chains published since the last kick decision; vring_need_event only sees 16 bits. */
  private publishedSinceKick = 0;
  private lastUsed = 0;
  private numInFlight = 0;
  private numPublishedInFlight = 0;
  private brokenError: QueueBrokenError | undefined;

  /**
   * Zeroes the ring areas, so construct it before the backend is told the ring addresses.
   *
   * @throws Error on a big-endian host (the ring is little-endian and written with typed arrays).
   * @throws RangeError if the memory does not hold the layout or is misaligned.
   */
  constructor(
    index: number,
    layout: SplitRingLayout,
    memory: RingMemory,
    features: SplitVirtqueueFeatures,
  ) {
    if (endianness() !== 'LE') {
      throw new Error(
        'SplitVirtqueue needs a little-endian host: rings are written with typed arrays',
      );
    }
    if (!Number.isInteger(index) || index < 0 || index > 0xffff) {
      throw new RangeError(`queue index must be an integer in 0..65535, got ${index}`);
    }
    const { size } = layout;
    if (!Number.isInteger(size) || size < 1 || size > 32768 || (size & (size - 1)) !== 0) {
      throw new RangeError(`layout.size must be a power of two in 1..32768, got ${size}`);
    }
    const base = memory.offset;
    if (!Number.isInteger(base) || base < 0 || base % 4096 !== 0) {
      throw new RangeError(`ring offset must be a non-negative multiple of 4096, got ${base}`);
    }
    if (base + layout.totalBytes > memory.buffer.byteLength) {
      throw new RangeError(
        `ring needs ${layout.totalBytes} bytes at offset ${base}, buffer has ${memory.buffer.byteLength}`,
      );
    }
    if (
      !Number.isSafeInteger(memory.gpa) ||
      memory.gpa < 0 ||
      memory.gpa % VIRTQ_DESC_SIZE !== 0 ||
      !Number.isSafeInteger(memory.gpa + layout.totalBytes)
    ) {
      throw new RangeError(`ring GPA must be a 16-aligned address below 2^53, got ${memory.gpa}`);
    }
    if (
      layout.descOffset % 16 !== 0 ||
      layout.availOffset % 2 !== 0 ||
      layout.usedOffset % 4 !== 0 ||
      layout.indirectOffset % 16 !== 0
    ) {
      throw new RangeError('layout areas are misaligned (desc 16, avail 2, used 4, indirect 16)');
    }

    this.index = index;
    this.size = size;
    this.mask = size - 1;
    this.eventIdx = features.eventIdx;
    this.indirectEntries = features.indirect ? layout.indirectEntries : 0;
    this.indirectGpa = memory.gpa + layout.indirectOffset;
    this.descGpa = memory.gpa + layout.descOffset;
    this.availGpa = memory.gpa + layout.availOffset;
    this.usedGpa = memory.gpa + layout.usedOffset;

    const { buffer } = memory;
    new Uint8Array(buffer, base, layout.totalBytes).fill(0);
    this.desc32 = new Uint32Array(buffer, base + layout.descOffset, 4 * size);
    this.desc16 = new Uint16Array(buffer, base + layout.descOffset, 8 * size);
    const indEntries = size * this.indirectEntries;
    this.ind32 = new Uint32Array(buffer, base + layout.indirectOffset, 4 * indEntries);
    this.ind16 = new Uint16Array(buffer, base + layout.indirectOffset, 8 * indEntries);
    this.avail16 = new Uint16Array(buffer, base + layout.availOffset, 3 + size);
    this.used16 = new Uint16Array(buffer, base + layout.usedOffset, 3 + 4 * size);
    this.used32 = new Uint32Array(buffer, base + layout.usedOffset, 1 + 2 * size);
    this.usedEventIndex = 2 + size;
    this.availEventIndex = 2 + 4 * size;

    this.nextFree = new Uint16Array(size);
    for (let i = 0; i < size; i++) this.nextFree[i] = i + 1; // size <= 32768 fits u16
    this.numFree = size;
    this.headState = new Uint8Array(size);
    this.tokens = new Uint32Array(size);
    this.chainDescs = new Uint16Array(size);
    this.chainTail = new Uint16Array(size);
    this.writableBytes = new Float64Array(size);
    this.availShadow = new Uint16Array(size);
  }

  /** Descriptors not used by any chain. */
  get freeDescriptors(): number {
    return this.numFree;
  }

  /** Chains added (published or not) and not yet returned by drain. */
  get inFlight(): number {
    return this.numInFlight;
  }

  /** Chains the device has been shown (published) and has not returned yet. */
  get publishedInFlight(): number {
    return this.numPublishedInFlight;
  }

  /** Whether enableInterruptsAfter can ask for an interrupt after more than one completion. */
  get canBatchInterrupts(): boolean {
    return this.eventIdx;
  }

  /** True once the device broke the ring rules; every later add/publish/drain throws. */
  get broken(): boolean {
    return this.brokenError !== undefined;
  }

  /** Chains were published since the last kick decision (kickNeeded). */
  get awaitingKick(): boolean {
    return this.publishedSinceKick > 0;
  }

  /** The avail index the device has been shown (last publish()). */
  get availIdx(): number {
    return this.publishedIdx;
  }

  /** The used index up to which the driver has consumed used elements. */
  get lastUsedIdx(): number {
    return this.lastUsed;
  }

  /** Can a chain of `n` segments be added right now? False while broken. */
  canAdd(n: number): boolean {
    if (this.brokenError !== undefined || n < 1 || n > this.size) return false;
    const need = n > 1 && n <= this.indirectEntries ? 1 : n;
    return this.numFree >= need;
  }

  /**
   * Writes one chain (descriptors and avail ring slot) without publishing it.
   *
   * @param segments device-readable segments first, then device-writable ones (spec order).
   * @param token integer 0..2^31, handed back by drain().
   * @returns false if there are not enough free descriptors right now (backpressure, retry later).
   * @throws RangeError if the chain is empty, longer than the queue size, or a segment or the
   *   token is out of range.
   * @throws InvalidArgumentError if a readable segment follows a writable one.
   * @throws QueueBrokenError if the queue is broken.
   */
  add(segments: readonly Segment[], token: number): boolean {
    if (this.brokenError !== undefined) throw this.brokenError;
    const n = segments.length;
    if (n === 0) throw new RangeError('a chain needs at least one segment');
    if (n > this.size) {
      throw new RangeError(`a chain of ${n} segments can never fit a queue of size ${this.size}`);
    }
    if (!Number.isInteger(token) || token < 0 || token > MAX_TOKEN) {
      throw new RangeError(`token must be an integer in 0..2^31, got ${token}`);
    }
    const indirect = n > 1 && n <= this.indirectEntries;
    if (this.numFree < (indirect ? 1 : n)) return false;

    // Validate everything before the first shared-memory write so a throw leaves no half chain.
    let writable = 0;
    let sawWrite = false;
    for (let i = 0; i < n; i++) {
      const s = segments[i]!;
      if (!Number.isSafeInteger(s.gpa) || s.gpa < 0) {
        throw new RangeError(`segment ${i}: gpa must be an integer in 0..2^53, got ${s.gpa}`);
      }
      if (s.len >>> 0 !== s.len) {
        throw new RangeError(`segment ${i}: len must be an integer in 0..2^32-1, got ${s.len}`);
      }
      if (s.write) {
        sawWrite = true;
        writable += s.len;
      } else if (sawWrite) {
        throw new InvalidArgumentError(
          `segment ${i}: device-readable segments must come before device-writable ones`,
        );
      }
    }

    const head = this.freeHead;
    let tail: number;
    if (indirect) {
      const ind32 = this.ind32;
      const ind16 = this.ind16;
      const first = head * this.indirectEntries;
      for (let i = 0; i < n; i++) {
        const s = segments[i]!;
        const d = first + i;
        const lo = s.gpa >>> 0;
        ind32[4 * d] = lo;
        ind32[4 * d + 1] = (s.gpa - lo) / TWO_POW_32;
        ind32[4 * d + 2] = s.len;
        const more = i + 1 < n;
        ind16[8 * d + 6] = (s.write ? VIRTQ_DESC_F_WRITE : 0) | (more ? VIRTQ_DESC_F_NEXT : 0);
        ind16[8 * d + 7] = more ? i + 1 : 0;
      }
      const tableGpa = this.indirectGpa + first * VIRTQ_DESC_SIZE;
      const lo = tableGpa >>> 0;
      this.desc32[4 * head] = lo;
      this.desc32[4 * head + 1] = (tableGpa - lo) / TWO_POW_32;
      this.desc32[4 * head + 2] = n * VIRTQ_DESC_SIZE;
      this.desc16[8 * head + 6] = VIRTQ_DESC_F_INDIRECT;
      this.desc16[8 * head + 7] = 0;
      tail = head;
      this.freeHead = this.nextFree[head]!;
      this.numFree -= 1;
      this.chainDescs[head] = 1;
    } else {
      const desc32 = this.desc32;
      const desc16 = this.desc16;
      const nextFree = this.nextFree;
      // The chain takes the first n free-list entries, so its links are the free-list links and
      // freeing it later is O(1): splice [head..tail] back in front of the free list.
      let d = head;
      tail = head;
      for (let i = 0; i < n; i++) {
        const s = segments[i]!;
        const lo = s.gpa >>> 0;
        desc32[4 * d] = lo;
        desc32[4 * d + 1] = (s.gpa - lo) / TWO_POW_32;
        desc32[4 * d + 2] = s.len;
        const more = i + 1 < n;
        const next = nextFree[d]!;
        desc16[8 * d + 6] = (s.write ? VIRTQ_DESC_F_WRITE : 0) | (more ? VIRTQ_DESC_F_NEXT : 0);
        desc16[8 * d + 7] = more ? next : 0;
        tail = d;
        d = next;
      }
      this.freeHead = d;
      this.numFree -= n;
      this.chainDescs[head] = n;
    }

    this.chainTail[head] = tail;
    this.tokens[head] = token;
    this.writableBytes[head] = writable;
    this.headState[head] = HEAD_ADDED;
    const slot = this.nextAvailIdx & this.mask;
    this.availShadow[slot] = head;
    // Plain store: the device may not read the slot before avail.idx covers it (see publish).
    this.avail16[2 + slot] = head;
    this.nextAvailIdx = (this.nextAvailIdx + 1) & 0xffff;
    this.numInFlight++;
    return true;
  }

  /**
   * Makes every added chain visible to the device by storing avail.idx.
   *
   * @throws QueueBrokenError if the queue is broken.
   */
  publish(): void {
    if (this.brokenError !== undefined) throw this.brokenError;
    let idx = this.publishedIdx;
    const end = this.nextAvailIdx;
    if (idx === end) return;
    while (idx !== end) {
      this.headState[this.availShadow[idx & this.mask]!] = HEAD_PUBLISHED;
      idx = (idx + 1) & 0xffff;
      this.numPublishedInFlight++;
      this.publishedSinceKick++;
    }
    this.publishedIdx = end;
    // store-store: the descriptors, indirect tables and ring slots were written with plain stores
    // above; the SC Atomics.store of avail.idx is ordered after them (release), so a device that
    // reads the new idx and then the slots sees complete chains.
    Atomics.store(this.avail16, 1, end);
  }

  /**
   * After publish(): must the driver kick (notify the device)? Records this decision point as the
   * `old` index of the next one, so call it once after every publish().
   */
  kickNeeded(): boolean {
    const newIdx = this.publishedIdx;
    const oldIdx = this.availAtLastKick;
    const published = this.publishedSinceKick;
    if (published === 0) return false;
    this.availAtLastKick = newIdx;
    this.publishedSinceKick = 0;
    // store-load: the avail.idx store in publish() must be globally visible before we read the
    // device's suppression state, or the device may go to sleep having seen neither our new idx
    // nor a kick. Both are SC atomics, which are never reordered with each other (x86: the store
    // is an xchg, a full barrier; arm64: stlr followed by ldar is ordered).
    if (this.eventIdx) {
      // More than 2^16 chains between decisions defeats the 16-bit comparison: kick to be safe.
      if (published >= 0x10000) return true;
      const availEvent = Atomics.load(this.used16, this.availEventIndex);
      return vringNeedEvent(availEvent, newIdx, oldIdx);
    }
    return (Atomics.load(this.used16, 0) & VIRTQ_USED_F_NO_NOTIFY) === 0;
  }

  /**
   * Would the device want a kick for the next chain published (EVENT_IDX: its avail_event is the
   * index we last published; otherwise VRING_USED_F_NO_NOTIFY is clear)? A device that polls its
   * rings says no, and is never kicked ahead (kickAhead).
   */
  wantsNextKick(): boolean {
    const idx = this.publishedIdx;
    if (this.eventIdx) {
      return vringNeedEvent(
        Atomics.load(this.used16, this.availEventIndex),
        (idx + 1) & 0xffff,
        idx,
      );
    }
    return (Atomics.load(this.used16, 0) & VIRTQ_USED_F_NO_NOTIFY) === 0;
  }

  /**
   * Pops used elements (all that are ready, or at most `max`), frees their chains and calls
   * onUsed(token, len) for each. The queue's state is updated before each callback, so the
   * callback may add new chains, or drain the ring itself. With EVENT_IDX this does not touch
   * used_event.
   *
   * @returns the number of elements this call popped (not those a nested drain popped).
   * @throws QueueBrokenError (sticky) if the device returned an id that is out of range or not
   *   the head of a published chain in flight, a len larger than the chain's writable bytes, or
   *   moved used.idx past the number of published chains in flight.
   */
  drain(onUsed: (token: number, len: number) => void, max?: number): number {
    if (this.brokenError !== undefined) throw this.brokenError;
    const usedIdx = Atomics.load(this.used16, 1);
    let pending = (usedIdx - this.lastUsed) & 0xffff;
    if (pending === 0) return 0;
    if (pending > this.numPublishedInFlight) {
      this.fail(
        `used.idx moved from ${this.lastUsed} to ${usedIdx} (${pending} elements) ` +
          `but only ${this.numPublishedInFlight} chains are in flight`,
      );
    }
    if (max !== undefined && max < pending) pending = max > 0 ? Math.floor(max) : 0;
    const used32 = this.used32;
    const end = (this.lastUsed + pending) & 0xffff;
    let taken = 0;
    for (;;) {
      // A callback may have drained this ring itself (the device went idle for its caller, and
      // the completion strategy re-armed with a drain): this pass stops where that one reached,
      // never reading a slot again or past the used index it saw.
      const left = (end - this.lastUsed) & 0xffff;
      if (left === 0 || left > pending) break;
      // ... or found the ring broken (the device fails, and nothing here is to be read again).
      if (this.brokenError !== undefined) throw this.brokenError;
      const slot = this.lastUsed & this.mask;
      // load-load: the elements are read after the Atomics.load of used.idx that covers them
      // (acquire). SC loads are not reordered with each other by V8 or the CPU.
      const id = Atomics.load(used32, 1 + 2 * slot);
      const len = Atomics.load(used32, 2 + 2 * slot);
      if (id >= this.size) {
        this.fail(
          `used element ${this.lastUsed}: id ${id} is out of range (queue size ${this.size})`,
        );
      }
      if (this.headState[id] !== HEAD_PUBLISHED) {
        this.fail(`used element ${this.lastUsed}: id ${id} is not the head of a chain in flight`);
      }
      if (len > this.writableBytes[id]!) {
        this.fail(
          `used element ${this.lastUsed}: len ${len} exceeds the ${this.writableBytes[id]} ` +
            `writable bytes of chain ${id}`,
        );
      }
      const token = this.tokens[id]!;
      this.headState[id] = HEAD_FREE;
      this.nextFree[this.chainTail[id]!] = this.freeHead;
      this.freeHead = id;
      this.numFree += this.chainDescs[id]!;
      this.numInFlight--;
      this.numPublishedInFlight--;
      this.lastUsed = (this.lastUsed + 1) & 0xffff;
      taken++;
      onUsed(token, len);
    }
    return taken;
  }

  /** True if the device has returned elements that drain() has not popped yet. */
  hasUsed(): boolean {
    return Atomics.load(this.used16, 1) !== this.lastUsed;
  }

  /** How many used elements the device has returned that drain() has not popped yet. */
  usedPending(): number {
    return (Atomics.load(this.used16, 1) - this.lastUsed) & 0xffff;
  }

  /**
   * Interrupt moderation: asks the device to interrupt only once `count` more chains are used
   * (EVENT_IDX: used_event = last consumed + count - 1), and re-checks the used ring. Without
   * EVENT_IDX, or with `count` <= 1, this is enableInterrupts(). The caller must keep `count` at
   * most the published chains in flight, or the interrupt may never come.
   *
   * @returns true if `count` or more used elements are already pending: drain instead of sleeping.
   */
  enableInterruptsAfter(count: number): boolean {
    if (!this.eventIdx || count <= 1) return this.enableInterrupts();
    Atomics.store(this.avail16, this.usedEventIndex, (this.lastUsed + count - 1) & 0xffff);
    // store-load, as in enableInterrupts: the new used_event before the re-read of used.idx.
    return this.usedPending() >= count;
  }

  /**
   * Asks the device for interrupts again and re-checks the used ring.
   *
   * @returns true if used elements are pending: the caller must drain instead of sleeping.
   */
  enableInterrupts(): boolean {
    if (this.eventIdx) {
      Atomics.store(this.avail16, this.usedEventIndex, this.lastUsed);
    } else if ((this.availFlags & VIRTQ_AVAIL_F_NO_INTERRUPT) !== 0) {
      this.availFlags &= ~VIRTQ_AVAIL_F_NO_INTERRUPT;
      Atomics.store(this.avail16, 0, this.availFlags);
    }
    // store-load: the request for interrupts must be visible before we read used.idx, or a
    // completion pushed in between is neither seen here nor signalled (lost wake-up, I/O hangs).
    // SC Atomics.store then Atomics.load gives the full fence (x86 xchg; arm64 stlr + ldar).
    return Atomics.load(this.used16, 1) !== this.lastUsed;
  }

  /**
   * Suppresses interrupts (a hint: the device may still send some). With EVENT_IDX used_event is
   * set just behind the consumed index, which the device will not reach for ~2^16 completions;
   * call it again now and then while polling for a long time.
   */
  disableInterrupts(): void {
    if (this.eventIdx) {
      // Ordering: none needed; a late store only costs a spurious interrupt.
      Atomics.store(this.avail16, this.usedEventIndex, (this.lastUsed - 1) & 0xffff);
    } else if ((this.availFlags & VIRTQ_AVAIL_F_NO_INTERRUPT) === 0) {
      this.availFlags |= VIRTQ_AVAIL_F_NO_INTERRUPT;
      Atomics.store(this.avail16, 0, this.availFlags);
    }
  }

  private fail(message: string): never {
    this.brokenError = new QueueBrokenError(this.index, message);
    throw this.brokenError;
  }
}
