/**
 * Device side of a split virtqueue, for tests: pops chains from the avail ring, checks every rule
 * the driver must follow (recording violations instead of throwing, so a test can assert on them),
 * hands the chain to a handler and returns it through the used ring with the spec's notification
 * rules. Works in the driver's thread or in a worker over the same SharedArrayBuffer.
 */

import {
  type SplitRingLayout,
  VIRTQ_AVAIL_F_NO_INTERRUPT,
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
  VIRTQ_DESC_SIZE,
  VIRTQ_USED_F_NO_NOTIFY,
  vringNeedEvent,
} from '../../src/virtqueue/layout.js';
import type { RingMemory } from '../../src/virtqueue/split.js';

export interface FakeDeviceFeatures {
  eventIdx: boolean;
  indirect: boolean;
}

export interface FakeDeviceOptions {
  /** GPA -> byte offset in the buffer; throws if [gpa, gpa + len) is not in memory. */
  translate(gpa: number, len: number): number;
  /** Largest segment the device accepts (virtio-blk size_max). */
  sizeMax?: number;
  /** Most data segments per request (virtio-blk seg_max: all descriptors minus header and status). */
  segMax?: number;
  /** Most entries in one indirect table; default the queue size (chain length limit of the spec). */
  maxIndirectEntries?: number;
  /** With EVENT_IDX: after each process(), publish avail_event = the next avail index to consume. */
  keepAvailEventCurrent?: boolean;
  /** Called when the notification rules say the driver must be interrupted. */
  onInterrupt?: () => void;
}

/** One buffer of a parsed chain, located in the shared buffer. */
export interface ChainSegment {
  gpa: number;
  /** Byte offset in the buffer. */
  offset: number;
  len: number;
}

export interface ParsedChain {
  /** Head descriptor index (the used element id). */
  head: number;
  /** True if the head descriptor referred to an indirect table. */
  indirect: boolean;
  /** Flags of each descriptor walked: the ring descriptor(s), then the table entries. */
  flags: number[];
  readable: ChainSegment[];
  writable: ChainSegment[];
  /** Sum of writable lengths. */
  writableBytes: number;
  /** Rule violations in this chain (also appended to FakeSplitDevice.violations). */
  errors: string[];
}

export class FakeSplitDevice {
  /** Every rule violation seen, in order. */
  readonly violations: string[] = [];
  /** Interrupts the notification rules asked for. */
  interrupts = 0;
  /** Chains popped from the avail ring. */
  popped = 0;

  readonly size: number;
  private readonly mask: number;
  private readonly features: FakeDeviceFeatures;
  private readonly opts: FakeDeviceOptions;
  private readonly view: DataView;
  private readonly descBase: number;
  private readonly avail16: Uint16Array;
  private readonly used16: Uint16Array;
  private readonly used32: Uint32Array;
  private readonly usedEventIndex: number;
  private readonly availEventIndex: number;
  private lastAvail = 0;
  /** Next used index to fill (not yet published). */
  private nextUsed = 0;
  /** Last value stored into used.idx. */
  private publishedUsed = 0;

  constructor(
    layout: SplitRingLayout,
    memory: RingMemory,
    features: FakeDeviceFeatures,
    opts: FakeDeviceOptions,
  ) {
    const { buffer, offset } = memory;
    this.size = layout.size;
    this.mask = layout.size - 1;
    this.features = features;
    this.opts = opts;
    this.view = new DataView(buffer);
    this.descBase = offset + layout.descOffset;
    this.avail16 = new Uint16Array(buffer, offset + layout.availOffset, 3 + this.size);
    this.used16 = new Uint16Array(buffer, offset + layout.usedOffset, 3 + 4 * this.size);
    this.used32 = new Uint32Array(buffer, offset + layout.usedOffset, 1 + 2 * this.size);
    this.usedEventIndex = 2 + this.size;
    this.availEventIndex = 2 + 4 * this.size;
  }

  /** Chains the driver published that the device has not popped. */
  availablePending(): number {
    // load: acquire of avail.idx; the ring slots and descriptors are read after it.
    return (Atomics.load(this.avail16, 1) - this.lastAvail) & 0xffff;
  }

  /** The next avail index the device will consume. */
  get lastAvailIdx(): number {
    return this.lastAvail;
  }

  /** used.idx as published. */
  get usedIdx(): number {
    return this.publishedUsed;
  }

  /** avail.flags as the driver wrote them. */
  get availFlags(): number {
    return Atomics.load(this.avail16, 0);
  }

  /** used_event as the driver wrote it (EVENT_IDX). */
  get usedEvent(): number {
    return Atomics.load(this.avail16, this.usedEventIndex);
  }

  /** Pops and parses the next available chain, or returns undefined if there is none. */
  popAvailable(): ParsedChain | undefined {
    if (this.availablePending() === 0) return undefined;
    // Plain read after the Atomics.load of avail.idx in availablePending (load-load).
    const head = this.avail16[2 + (this.lastAvail & this.mask)]!;
    this.lastAvail = (this.lastAvail + 1) & 0xffff;
    this.popped++;
    return this.parse(head);
  }

  /** Writes a used element without publishing it; ids and lengths are not checked (tests lie). */
  pushUsed(id: number, len: number): void {
    const slot = this.nextUsed & this.mask;
    this.used32[1 + 2 * slot] = id;
    this.used32[2 + 2 * slot] = len;
    this.nextUsed = (this.nextUsed + 1) & 0xffff;
  }

  /**
   * Stores used.idx (release: after the elements) and applies the interrupt rules.
   * @returns true if the driver was interrupted.
   */
  publishUsed(): boolean {
    const oldUsed = this.publishedUsed;
    const newUsed = this.nextUsed;
    if (oldUsed === newUsed) return false;
    this.publishedUsed = newUsed;
    // store-store: elements (plain stores) before used.idx (SC store).
    Atomics.store(this.used16, 1, newUsed);
    // store-load: SC store then SC load, so the driver's suppression state is read after our
    // used.idx is visible (the driver does the mirror image in enableInterrupts).
    const interrupt = this.features.eventIdx
      ? vringNeedEvent(Atomics.load(this.avail16, this.usedEventIndex), newUsed, oldUsed)
      : (Atomics.load(this.avail16, 0) & VIRTQ_AVAIL_F_NO_INTERRUPT) === 0;
    if (interrupt) {
      this.interrupts++;
      this.opts.onInterrupt?.();
    }
    return interrupt;
  }

  /** Forces used.idx to any value (negative tests). */
  setUsedIdxRaw(idx: number): void {
    this.nextUsed = idx & 0xffff;
    this.publishedUsed = this.nextUsed;
    Atomics.store(this.used16, 1, this.nextUsed);
  }

  /**
   * Pops every available chain (or at most `max`), calls handler for the valid ones (a chain with
   * violations is returned with len 0), publishes the used elements once and maybe interrupts.
   * @returns the number of chains processed.
   */
  process(handler: (chain: ParsedChain) => number, max = Infinity): number {
    let count = 0;
    while (count < max) {
      const chain = this.popAvailable();
      if (chain === undefined) break;
      const len = chain.errors.length === 0 ? handler(chain) : 0;
      this.pushUsed(chain.head, len);
      count++;
    }
    if (count > 0) this.publishUsed();
    if (this.features.eventIdx && this.opts.keepAvailEventCurrent === true) {
      this.setAvailEvent(this.lastAvail);
    }
    return count;
  }

  /** Sets or clears VIRTQ_USED_F_NO_NOTIFY. */
  setNoNotify(on: boolean): void {
    const flags = Atomics.load(this.used16, 0);
    Atomics.store(
      this.used16,
      0,
      on ? flags | VIRTQ_USED_F_NO_NOTIFY : flags & ~VIRTQ_USED_F_NO_NOTIFY,
    );
  }

  /** Publishes avail_event (EVENT_IDX): kick me once avail.idx passes `idx`. */
  setAvailEvent(idx: number): void {
    Atomics.store(this.used16, this.availEventIndex, idx & 0xffff);
  }

  /**
   * Re-enables kicks before the device sleeps, then re-checks the avail ring.
   * @returns true if chains are pending: process them instead of sleeping.
   */
  enableNotifications(): boolean {
    if (this.features.eventIdx) this.setAvailEvent(this.lastAvail);
    else this.setNoNotify(false);
    // store-load: SC store above, SC load of avail.idx below (full fence), so a chain the driver
    // published without kicking (it saw kicks suppressed) is seen here.
    return this.availablePending() !== 0;
  }

  /** Suppresses kicks while the device is polling (EVENT_IDX: leave avail_event behind). */
  disableNotifications(): void {
    if (!this.features.eventIdx) this.setNoNotify(true);
  }

  private violation(errors: string[], head: number, message: string): void {
    const text = `chain ${head}: ${message}`;
    errors.push(text);
    this.violations.push(text);
  }

  private translate(gpa: number, len: number): number | undefined {
    try {
      return this.opts.translate(gpa, len);
    } catch {
      return undefined;
    }
  }

  private parse(head: number): ParsedChain {
    const chain: ParsedChain = {
      head,
      indirect: false,
      flags: [],
      readable: [],
      writable: [],
      writableBytes: 0,
      errors: [],
    };
    const { errors } = chain;
    if (head >= this.size) {
      this.violation(errors, head, `head index ${head} out of range (size ${this.size})`);
      return chain;
    }
    const view = this.view;
    let tableBase = this.descBase;
    let tableLen = this.size;
    let inIndirect = false;
    let idx = head;
    let walked = 0;
    let sawWrite = false;
    for (;;) {
      if (idx >= tableLen) {
        this.violation(errors, head, `descriptor index ${idx} out of range (table of ${tableLen})`);
        break;
      }
      if (++walked > tableLen) {
        this.violation(errors, head, `loop or chain longer than ${tableLen} descriptors`);
        break;
      }
      const at = tableBase + idx * VIRTQ_DESC_SIZE;
      const gpa = view.getUint32(at, true) + view.getUint32(at + 4, true) * 4294967296;
      const len = view.getUint32(at + 8, true);
      const flags = view.getUint16(at + 12, true);
      const next = view.getUint16(at + 14, true);
      chain.flags.push(flags);

      if ((flags & VIRTQ_DESC_F_INDIRECT) !== 0) {
        if (inIndirect) {
          this.violation(errors, head, 'INDIRECT descriptor inside an indirect table');
          break;
        }
        if (!this.features.indirect) {
          this.violation(errors, head, 'INDIRECT used but not negotiated');
        }
        if ((flags & VIRTQ_DESC_F_NEXT) !== 0) {
          this.violation(errors, head, 'INDIRECT combined with NEXT');
        }
        if (len === 0 || len % VIRTQ_DESC_SIZE !== 0) {
          this.violation(errors, head, `indirect table length ${len} is not a multiple of 16`);
          break;
        }
        const entries = len / VIRTQ_DESC_SIZE;
        const limit = this.opts.maxIndirectEntries ?? this.size;
        if (entries > limit) {
          this.violation(errors, head, `indirect table of ${entries} entries (limit ${limit})`);
          break;
        }
        const off = this.translate(gpa, len);
        if (off === undefined) {
          this.violation(
            errors,
            head,
            `indirect table at GPA 0x${gpa.toString(16)} outside memory`,
          );
          break;
        }
        chain.indirect = true;
        inIndirect = true;
        tableBase = off;
        tableLen = entries;
        idx = 0;
        walked = 0;
        continue;
      }

      const off = this.translate(gpa, len);
      if (off === undefined) {
        this.violation(errors, head, `segment at GPA 0x${gpa.toString(16)}+${len} outside memory`);
      } else {
        if (this.opts.sizeMax !== undefined && len > this.opts.sizeMax) {
          this.violation(
            errors,
            head,
            `segment of ${len} bytes exceeds size_max ${this.opts.sizeMax}`,
          );
        }
        const seg = { gpa, offset: off, len };
        if ((flags & VIRTQ_DESC_F_WRITE) !== 0) {
          sawWrite = true;
          chain.writable.push(seg);
          chain.writableBytes += len;
        } else if (sawWrite) {
          this.violation(errors, head, 'device-readable descriptor after a device-writable one');
        } else {
          chain.readable.push(seg);
        }
      }
      if ((flags & VIRTQ_DESC_F_NEXT) === 0) break;
      idx = next;
    }
    const dataSegments = chain.readable.length + chain.writable.length - 2;
    if (this.opts.segMax !== undefined && dataSegments > this.opts.segMax) {
      this.violation(
        errors,
        head,
        `${dataSegments} data segments exceed seg_max ${this.opts.segMax}`,
      );
    }
    return chain;
  }
}

/** Test data both sides can derive from a request token. */
export function patternByte(token: number, k: number): number {
  return (Math.imul(token, 131) + k * 7 + (k >>> 8)) & 0xff;
}

/** 8-bit digest of bytes (FNV-1a folded), used as a status byte to prove the device read the data. */
export function digestUpdate(hash: number, bytes: Uint8Array): number {
  let h = hash;
  for (let i = 0; i < bytes.length; i++) h = Math.imul(h ^ bytes[i]!, 16777619) >>> 0;
  return h;
}

export const DIGEST_INIT = 0x811c9dc5;

export function digestFinish(hash: number): number {
  return (hash ^ (hash >>> 8) ^ (hash >>> 16) ^ (hash >>> 24)) & 0xff;
}
