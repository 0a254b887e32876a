/**
 * The device side of one split virtqueue (virtio spec "Split Virtqueues"): takes chains off the
 * avail ring with every driver rule checked, returns them through the used ring, and applies the
 * notification rules in both directions. Knows nothing about virtio-blk.
 *
 * Memory ordering mirrors src/virtqueue/split.ts from the other side: avail.idx is read with
 * Atomics.load before the entries and descriptors it covers (load-load), used elements are stored
 * before used.idx (store-store), and re-enabling kicks is an Atomics.store followed by an
 * Atomics.load of avail.idx (store-load), so a chain published in between is never missed.
 */

import {
  VIRTQ_AVAIL_F_NO_INTERRUPT,
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
  VIRTQ_DESC_SIZE,
  VIRTQ_USED_F_NO_NOTIFY,
  availRingBytes,
  usedRingBytes,
  vringNeedEvent,
} from '../virtqueue/layout.js';
import type { BackendMemory, Located } from './guest-memory.js';

/** One buffer of a chain, as a Buffer over the mapping. */
export interface IoSegment {
  buf: Buffer;
  /** Offset in its page-aligned mapping: has the same alignment as the real address (O_DIRECT). */
  addr: number;
}

export interface DeviceChain {
  /** Head descriptor index: the used element id. */
  head: number;
  readable: IoSegment[];
  writable: IoSegment[];
  readableBytes: number;
  writableBytes: number;
  /** Descriptors holding buffers (indirect table pointers not counted). */
  descriptors: number;
  /** The chain's last byte, where the status goes (located even when the chain is bad). */
  status: Buffer;
  /** Why this request must fail with IOERR (its status byte is usable); undefined if valid. */
  problem: string | undefined;
  /** The problem is a broken limit (size_max, seg_max): counts as `rejected`. */
  overLimit: boolean;
}

export interface DeviceQueueFeatures {
  eventIdx: boolean;
  indirect: boolean;
}

export interface DeviceQueueLimits {
  /** Largest descriptor length; 0 = none. */
  sizeMax: number;
  /** Most data descriptors per request (all but the header and status). */
  segMax: number;
}

export interface RingAddresses {
  size: number;
  /** Frontend userspace addresses from SET_VRING_ADDR. */
  descUva: number;
  availUva: number;
  usedUva: number;
}

interface RawDescriptor {
  addr: number;
  len: number;
  flags: number;
}

const TWO_32 = 0x1_0000_0000;

export class DeviceQueue {
  readonly index: number;
  readonly size: number;
  readonly #mask: number;
  readonly #memory: BackendMemory;
  readonly #features: DeviceQueueFeatures;
  readonly #limits: DeviceQueueLimits;
  readonly #desc: Located;
  readonly #avail16: Uint16Array;
  readonly #used16: Uint16Array;
  readonly #used32: Uint32Array;
  readonly #usedEventIndex: number;
  readonly #availEventIndex: number;
  /** Next avail entry to consume (free-running u16). */
  #lastAvail = 0;
  /** Our copy of used.idx: the device is its only writer. */
  #usedIdx = 0;
  /** used.idx at the last interrupt decision (the spec's old index for vring_need_event). */
  #signalledUsed = 0;
  #usedFlags = 0;
  /** 1 for each head taken off the ring and not yet returned. */
  readonly #inFlight: Uint8Array;
  #broken: string | undefined;

  /**
   * @throws Error (message for the session's nack) if a ring area is not inside one region or is
   *   misaligned within its mapping.
   */
  constructor(
    index: number,
    rings: RingAddresses,
    base: number,
    memory: BackendMemory,
    features: DeviceQueueFeatures,
    limits: DeviceQueueLimits,
  ) {
    const { size } = rings;
    this.index = index;
    this.size = size;
    this.#mask = size - 1;
    this.#memory = memory;
    this.#features = features;
    this.#limits = limits;
    this.#desc = locateRing(memory, rings.descUva, size * VIRTQ_DESC_SIZE, 16, 'descriptor table');
    const avail = locateRing(memory, rings.availUva, availRingBytes(size), 2, 'available ring');
    const used = locateRing(memory, rings.usedUva, usedRingBytes(size), 4, 'used ring');
    this.#avail16 = new Uint16Array(avail.region.buffer, avail.offset, 3 + size);
    this.#used16 = new Uint16Array(used.region.buffer, used.offset, 3 + 4 * size);
    this.#used32 = new Uint32Array(used.region.buffer, used.offset, 1 + 2 * size);
    this.#usedEventIndex = 2 + size;
    this.#availEventIndex = 2 + 4 * size;
    this.#lastAvail = base & 0xffff;
    // The used index lives in the frontend's memory: a reconnecting frontend may keep its ring.
    this.#usedIdx = Atomics.load(this.#used16, 1);
    this.#signalledUsed = this.#usedIdx;
    this.#inFlight = new Uint8Array(size);
    Atomics.store(this.#used16, 0, 0);
  }

  /** Why the queue stopped, if the driver broke it beyond recovery. */
  get broken(): string | undefined {
    return this.#broken;
  }

  /** The next avail index to process: what GET_VRING_BASE reports. */
  get lastAvail(): number {
    return this.#lastAvail;
  }

  get inFlightCount(): number {
    let n = 0;
    for (const x of this.#inFlight) n += x;
    return n;
  }

  /** True if the driver published chains we have not taken. */
  hasAvail(): boolean {
    return this.#broken === undefined && Atomics.load(this.#avail16, 1) !== this.#lastAvail;
  }

  /**
   * Takes the next chain, or undefined if none is ready or the queue is broken (see `broken`).
   * Never throws on anything the driver wrote.
   */
  pop(): DeviceChain | undefined {
    if (this.#broken !== undefined) return undefined;
    const availIdx = Atomics.load(this.#avail16, 1);
    const pending = (availIdx - this.#lastAvail) & 0xffff;
    if (pending === 0) return undefined;
    if (pending > this.size) {
      return this.#fail(`avail.idx ${availIdx} is ${pending} entries ahead of ${this.#lastAvail}`);
    }
    const head = Atomics.load(this.#avail16, 2 + (this.#lastAvail & this.#mask));
    this.#lastAvail = (this.#lastAvail + 1) & 0xffff;
    if (head >= this.size) return this.#fail(`avail entry holds head ${head} >= ${this.size}`);
    if (this.#inFlight[head] !== 0) return this.#fail(`head ${head} is already in flight`);
    const descs = this.#walk(head);
    if (typeof descs === 'string') return this.#fail(`chain ${head}: ${descs}`);
    const chain = this.#check(head, descs.list);
    if (chain === undefined) return undefined;
    if (descs.problem !== undefined && chain.problem === undefined) chain.problem = descs.problem;
    this.#inFlight[head] = 1;
    return chain;
  }

  /** Puts one element on the used ring and publishes it (no interrupt: see `needsInterrupt`). */
  pushUsed(id: number, len: number): void {
    if (id < this.size) this.#inFlight[id] = 0;
    const slot = this.#usedIdx & this.#mask;
    const used32 = this.#used32;
    Atomics.store(used32, 1 + 2 * slot, id);
    Atomics.store(used32, 2 + 2 * slot, len);
    this.#usedIdx = (this.#usedIdx + 1) & 0xffff;
    // store-store: the element is visible before the index that covers it.
    Atomics.store(this.#used16, 1, this.#usedIdx);
  }

  /** After pushUsed: should the driver be interrupted now? Records the decision point. */
  needsInterrupt(): boolean {
    const oldIdx = this.#signalledUsed;
    const newIdx = this.#usedIdx;
    if (oldIdx === newIdx) return false;
    this.#signalledUsed = newIdx;
    // store-load: used.idx (SC store above) is visible before we read the driver's wish.
    if (this.#features.eventIdx) {
      return vringNeedEvent(Atomics.load(this.#avail16, this.#usedEventIndex), newIdx, oldIdx);
    }
    return (Atomics.load(this.#avail16, 0) & VIRTQ_AVAIL_F_NO_INTERRUPT) === 0;
  }

  /**
   * Asks for kicks again, then re-checks the avail ring. Returns true if chains are pending: the
   * caller must keep processing instead of sleeping on the kick eventfd.
   */
  enableKicks(): boolean {
    if (this.#features.eventIdx) {
      Atomics.store(this.#used16, this.#availEventIndex, this.#lastAvail);
    }
    if ((this.#usedFlags & VIRTQ_USED_F_NO_NOTIFY) !== 0) {
      this.#usedFlags &= ~VIRTQ_USED_F_NO_NOTIFY;
      Atomics.store(this.#used16, 0, this.#usedFlags);
    }
    return this.hasAvail();
  }

  /**
   * Polling mode: tells the driver not to kick. VIRTQ_USED_F_NO_NOTIFY is set in any case (a
   * driver without EVENT_IDX obeys it; one with EVENT_IDX ignores it). With EVENT_IDX, avail_event
   * must stay out of the window the driver's kick decision covers: from the avail index at its
   * previous decision (up to `size` behind what we consumed, when we took chains it published but
   * had not decided about yet) to its new avail index (up to `size` ahead, plus what we consume
   * before the next refresh, at most a batch). 0x7fff ahead is outside both for every ring of up to
   * 16384 entries; with 32768 entries no position is, and 0x7fff is still never reached from
   * behind (0x8000 would be). Refreshed after every batch.
   */
  suppressKicks(): void {
    if (this.#features.eventIdx) {
      Atomics.store(this.#used16, this.#availEventIndex, (this.#lastAvail + 0x7fff) & 0xffff);
    }
    if ((this.#usedFlags & VIRTQ_USED_F_NO_NOTIFY) === 0) {
      this.#usedFlags |= VIRTQ_USED_F_NO_NOTIFY;
      Atomics.store(this.#used16, 0, this.#usedFlags);
    }
  }

  /**
   * For fault injection: an id that is neither in flight here nor waiting in the avail ring, the
   * highest such: a driver may publish more requests before it reads the used element (one
   * kicked alone is served before the rest are on the ring), and free lists hand out low ids
   * first, so a low one could be a request in flight by then, which no driver can tell apart.
   */
  idNotInFlight(): number {
    const busy = Uint8Array.from(this.#inFlight);
    const availIdx = Atomics.load(this.#avail16, 1);
    for (let i = this.#lastAvail; i !== availIdx; i = (i + 1) & 0xffff) {
      const head = Atomics.load(this.#avail16, 2 + (i & this.#mask));
      if (head < this.size) busy[head] = 1;
      if (((availIdx - i) & 0xffff) > this.size) break;
    }
    const free = busy.lastIndexOf(0);
    return free === -1 ? this.size : free;
  }

  /** Follows the chain from `head` through at most one indirect table. A string is fatal. */
  #walk(head: number): { list: RawDescriptor[]; problem: string | undefined } | string {
    const list: RawDescriptor[] = [];
    let problem: string | undefined;
    let table = this.#desc;
    let tableSize = this.size;
    let indirect = false;
    let index = head;
    let walked = 0;
    for (;;) {
      if (++walked > tableSize) return `more than ${tableSize} descriptors (a loop?)`;
      const at = table.offset + index * VIRTQ_DESC_SIZE;
      const view = table.region.view;
      const addr = view.getUint32(at, true) + view.getUint32(at + 4, true) * TWO_32;
      const len = view.getUint32(at + 8, true);
      const flags = view.getUint16(at + 12, true);
      const next = view.getUint16(at + 14, true);
      if ((flags & VIRTQ_DESC_F_INDIRECT) !== 0 && !indirect) {
        if (!this.#features.indirect) problem ??= 'INDIRECT without VIRTIO_RING_F_INDIRECT_DESC';
        if ((flags & VIRTQ_DESC_F_NEXT) !== 0) problem ??= 'INDIRECT combined with NEXT';
        if ((flags & VIRTQ_DESC_F_WRITE) !== 0) problem ??= 'INDIRECT combined with WRITE';
        if (len === 0 || len % VIRTQ_DESC_SIZE !== 0) {
          return `indirect table of ${len} bytes is not a whole number of descriptors`;
        }
        if (len / VIRTQ_DESC_SIZE > this.size) {
          return `indirect table of ${len / VIRTQ_DESC_SIZE} entries exceeds the queue size`;
        }
        const located = this.#memory.translateGpa(addr, len);
        if (located === undefined || located.offset % 2 !== 0) {
          return `indirect table at 0x${addr.toString(16)}+${len} is not in guest memory`;
        }
        table = located;
        tableSize = len / VIRTQ_DESC_SIZE;
        indirect = true;
        index = 0;
        walked = 0;
        continue;
      }
      if ((flags & VIRTQ_DESC_F_INDIRECT) !== 0) problem ??= 'nested indirect table';
      list.push({ addr, len, flags });
      if ((flags & VIRTQ_DESC_F_NEXT) === 0) return { list, problem };
      if (next >= tableSize) return `next ${next} is out of range (${tableSize} descriptors)`;
      index = next;
    }
  }

  /** Locates every buffer and checks the rules that still leave the status byte usable. */
  #check(head: number, list: RawDescriptor[]): DeviceChain | undefined {
    const last = list[list.length - 1]!;
    const statusAt =
      (last.flags & VIRTQ_DESC_F_WRITE) !== 0 && last.len > 0
        ? this.#memory.translateGpa(last.addr + last.len - 1, 1)
        : undefined;
    if (statusAt === undefined) {
      return this.#fail(`chain ${head}: no writable status byte at its end`);
    }
    const chain: DeviceChain = {
      head,
      readable: [],
      writable: [],
      readableBytes: 0,
      writableBytes: 0,
      descriptors: list.length,
      status: Buffer.from(statusAt.region.buffer, statusAt.offset, 1),
      problem: undefined,
      overLimit: false,
    };
    const { sizeMax, segMax } = this.#limits;
    if (list.length - 2 > segMax) {
      chain.problem = `${list.length - 2} data descriptors exceed seg_max ${segMax}`;
      chain.overLimit = true;
    }
    let sawWritable = false;
    for (const d of list) {
      const write = (d.flags & VIRTQ_DESC_F_WRITE) !== 0;
      if (write) sawWritable = true;
      else if (sawWritable) chain.problem ??= 'readable descriptor after a writable one';
      if (sizeMax > 0 && d.len > sizeMax) {
        chain.problem ??= `descriptor of ${d.len} bytes exceeds size_max ${sizeMax}`;
        chain.overLimit = true;
      }
      if (d.len === 0) continue;
      const at = this.#memory.translateGpa(d.addr, d.len);
      if (at !== undefined) {
        this.#addSegment(chain, write, at, d.len);
        continue;
      }
      // A buffer may run on into the next region, as a driver knows nothing of regions.
      const pieces = this.#memory.translateGpaPieces(d.addr, d.len);
      if (pieces === undefined) {
        chain.problem ??= `buffer 0x${d.addr.toString(16)}+${d.len} is not in guest memory`;
        continue;
      }
      for (const piece of pieces) this.#addSegment(chain, write, piece, piece.length);
    }
    return chain;
  }

  #addSegment(chain: DeviceChain, write: boolean, at: Located, len: number): void {
    const segment = { buf: Buffer.from(at.region.buffer, at.offset, len), addr: at.offset };
    if (write) {
      chain.writable.push(segment);
      chain.writableBytes += len;
    } else {
      chain.readable.push(segment);
      chain.readableBytes += len;
    }
  }

  #fail(reason: string): undefined {
    this.#broken ??= reason;
    return undefined;
  }
}

function locateRing(
  memory: BackendMemory,
  uva: number,
  bytes: number,
  align: number,
  what: string,
): Located {
  const at = memory.translateUva(uva, bytes);
  if (at === undefined) throw new Error(`${what} at 0x${uva.toString(16)} is not in guest memory`);
  if (at.offset % align !== 0) throw new Error(`${what} is not ${align}-aligned in its mapping`);
  return at;
}
