/**
 * One virtio-scsi request queue: BlockRequests become virtio_scsi_cmd_req chains (request
 * header RO, data-out RO, response WO, data-in WO), and responses become success, a retry after
 * backoff, or a typed error. Each slot keeps its request across retries, so a retried command
 * keeps its memory and its place in the caller's operation.
 */

import {
  QueueBrokenError,
  ScsiSenseError,
  ScsiStatusError,
  ShortTransferError,
  UnsupportedError,
  VirtioScsiResponseError,
} from '../../errors.js';
import type { SplitVirtqueue, Segment } from '../../virtqueue/split.js';
import type { BlockRequest } from '../../block/request.js';
import { kickIfNeeded, SegmentArrays, slotsUseMemory, type DeviceQueue } from '../device.js';
import type { DeviceStats } from '../stats.js';
import {
  BLOCKS_AT,
  buildReadWrite,
  buildSynchronizeCache,
  buildUnmap,
  buildWriteSame16,
  LBA_AT,
  lbaRange,
  ScsiStatus,
  scsiStatusName,
} from './cdb.js';
import { encodeUnmapParameters } from './data.js';
import { decodeSense, isCompletedSense, isRetryableSense, SenseKey } from './sense.js';
import {
  encodeVirtioLun,
  VIRTIO_SCSI_S_SIMPLE,
  VirtioScsiCmdReqHeader,
  VirtioScsiCmdRespHeader,
  VirtioScsiResponse,
  virtioScsiResponseName,
} from './spec.js';

/** How a queue addresses its LUN and which commands the LUN takes. */
export interface ScsiQueueSettings {
  cdbSize: number;
  senseSize: number;
  target: number;
  lun: number;
  blockSize: number;
  /** READ(16)/WRITE(16): the LUN answered READ CAPACITY(16). */
  use16: boolean;
  /** Discard with UNMAP (else WRITE SAME(16) with the UNMAP bit). */
  discardWithUnmap: boolean;
  /** Write-zeroes may deallocate (WRITE SAME with UNMAP) because deallocated blocks read zero. */
  zeroesByUnmap: boolean;
  /** A block of zeroes in shared memory, the data-out of WRITE SAME. */
  zeroBlockGpa: number;
  /**
   * MODE SENSE said the write cache was off (WCE 0) at open: a SYNCHRONIZE CACHE the LUN does
   * not implement (such a LUN need not) has nothing to flush, and counts as done.
   */
  writeThrough: boolean;
}

/** ILLEGAL REQUEST's ASC for an operation code the LUN does not implement. */
const ASC_INVALID_COMMAND = 0x20;

/** Backoff for retried commands: 1, 2, 4... ms, at most this many attempts (about 0.25 s). */
export const MAX_SCSI_RETRIES = 8;
/** NOT READY, becoming ready, lasts seconds: that many attempts at most 250 ms apart (~8 s). */
export const MAX_NOT_READY_RETRIES = 40;
const MAX_BACKOFF_MS = 250;
/** Preset in the response byte: no device writes it, so an unwritten response is detectable. */
const RESPONSE_NOT_WRITTEN = 0xff;
const PARAM_BYTES = 32;

/** Slot layout in the control region: request, response, UNMAP parameter list. */
export function scsiSlotLayout(
  cdbSize: number,
  senseSize: number,
): {
  respOffset: number;
  paramOffset: number;
  stride: number;
} {
  const reqBytes = VirtioScsiCmdReqHeader.size + cdbSize;
  const respOffset = align(reqBytes, 8);
  const paramOffset = align(respOffset + VirtioScsiCmdRespHeader.size + senseSize, 8);
  return { respOffset, paramOffset, stride: align(paramOffset + PARAM_BYTES, 64) };
}

export interface ScsiQueueHost {
  readonly stats: DeviceStats;
  /** A retry became due at `due` (ms since epoch): arm a timer for it. */
  retryScheduled(due: number): void;
  /** Ask the device to abort a command in flight (virtio-scsi task management). */
  abortTask(target: number, lun: number, tag: bigint): void;
  /** The target reported a deferred error: an earlier, acknowledged command failed. */
  deferredError(error: ScsiSenseError): void;
}

export class ScsiRequestQueue implements DeviceQueue {
  readonly vq: SplitVirtqueue;
  readonly kickFd: number;
  readonly callFd: number;
  readonly filledByEngineOnly = true;
  settings: ScsiQueueSettings;
  readonly #host: ScsiQueueHost;
  readonly #view: DataView;
  readonly #bytes: Uint8Array;
  readonly #areaOffset: number;
  readonly #areaGpa: number;
  readonly #layout: ReturnType<typeof scsiSlotLayout>;
  readonly #slots: (BlockRequest | undefined)[];
  readonly #attempts: Uint8Array;
  readonly #cancelled: Uint8Array;
  readonly #generation: Uint32Array;
  readonly #freeSlots: Int32Array;
  #freeSlotCount = 0;
  /** Slots waiting for their backoff to pass, with the time they become due. */
  #retries: { slot: number; due: number }[] = [];
  readonly #segArrays = new SegmentArrays();
  /** The request's blocks, for the CDB builders (filled in place: see LbaRange). */
  readonly #range = lbaRange();
  readonly #completeOne = (slot: number, len: number): void => this.#complete(slot, len);

  constructor(
    ring: { vq: SplitVirtqueue; kickFd: number; callFd: number },
    area: { buffer: SharedArrayBuffer; offset: number; gpa: number },
    settings: ScsiQueueSettings,
    host: ScsiQueueHost,
  ) {
    this.vq = ring.vq;
    this.kickFd = ring.kickFd;
    this.callFd = ring.callFd;
    this.settings = settings;
    this.#host = host;
    this.#view = new DataView(area.buffer);
    this.#bytes = new Uint8Array(area.buffer);
    this.#areaOffset = area.offset;
    this.#areaGpa = area.gpa;
    this.#layout = scsiSlotLayout(settings.cdbSize, settings.senseSize);
    const size = this.vq.size;
    this.#slots = new Array<BlockRequest | undefined>(size).fill(undefined);
    this.#attempts = new Uint8Array(size);
    this.#cancelled = new Uint8Array(size);
    this.#generation = new Uint32Array(size);
    this.#freeSlots = new Int32Array(size);
    for (let i = 0; i < size; i++) this.#freeSlots[i] = size - 1 - i;
    this.#freeSlotCount = size;
  }

  /** Bytes of control memory the slots of a queue of `size` need. */
  static areaBytes(size: number, cdbSize: number, senseSize: number): number {
    return size * scsiSlotLayout(cdbSize, senseSize).stride;
  }

  get inFlight(): number {
    return this.vq.size - this.#freeSlotCount;
  }

  trySubmit(request: BlockRequest): boolean {
    if (this.vq.broken) throw new QueueBrokenError(this.vq.index, 'queue is broken');
    if (request.kind === 'get-id') {
      throw new UnsupportedError('get-id', 'virtio-scsi identifies LUNs with INQUIRY');
    }
    if (this.#freeSlotCount === 0 || !this.vq.canAdd(3)) return false;
    const slot = this.#freeSlots[--this.#freeSlotCount]!;
    this.#attempts[slot] = 0;
    this.#cancelled[slot] = 0;
    this.#generation[slot] = (this.#generation[slot]! + 1) >>> 0;
    this.#slots[slot] = request;
    let added = false;
    try {
      added = this.#addChain(slot, request);
    } finally {
      // A request the ring refused (or a CDB field that cannot hold it) gives its slot back.
      if (!added) {
        this.#slots[slot] = undefined;
        this.#freeSlotCount++;
      }
    }
    if (!added) return false;
    this.#host.stats.requests++;
    return true;
  }

  kick(): void {
    if (kickIfNeeded(this.vq, this.kickFd)) this.#host.stats.kicks++;
  }

  drain(): number {
    const n = this.vq.drain(this.#completeOne);
    // Descriptors came back: retries that waited for them may go now.
    if (n > 0 && this.#retries.length > 0) this.runDue(Date.now());
    return n;
  }

  /** Resubmits the retries whose backoff has passed; returns ms until the next, or -1. */
  runDue(now: number): number {
    let next = -1;
    const waiting: { slot: number; due: number }[] = [];
    for (const retry of this.#retries) {
      if (retry.due <= now && this.#addChain(retry.slot, this.#slots[retry.slot]!)) continue;
      waiting.push(retry);
      const wait = Math.max(0, retry.due - now);
      if (next < 0 || wait < next) next = wait;
    }
    this.#retries = waiting;
    return next;
  }

  usesMemory(gpa: number, length: number): boolean {
    return slotsUseMemory(this.#slots, gpa, length);
  }

  /**
   * The caller gave up on `owner` (timeout, abort): commands still waiting for a retry end now;
   * those the device holds get an ABORT TASK, and their slots stay taken until they return.
   */
  abandon(owner: unknown): void {
    for (let slot = 0; slot < this.#slots.length; slot++) {
      const request = this.#slots[slot];
      if (request === undefined || request.owner !== owner || this.#cancelled[slot]) continue;
      this.#cancelled[slot] = 1;
      const waiting = this.#retries.findIndex((r) => r.slot === slot);
      if (waiting >= 0) {
        this.#retries.splice(waiting, 1);
        this.#finish(
          slot,
          new VirtioScsiResponseError(
            request.kind,
            VirtioScsiResponse.VIRTIO_SCSI_S_ABORTED,
            'VIRTIO_SCSI_S_ABORTED',
          ),
        );
        continue;
      }
      this.#host.abortTask(
        request.command?.target ?? this.settings.target,
        request.command?.lun ?? this.settings.lun,
        this.#tag(slot),
      );
    }
  }

  /** Whether the command tagged `tag` (see #tag) is still in this queue's slot. */
  holds(tag: bigint): boolean {
    const low = Number(tag & 0xffff_ffffn);
    if (low >>> 16 !== this.vq.index) return false;
    const slot = low & 0xffff;
    return this.#slots[slot] !== undefined && this.#generation[slot] === Number(tag >> 32n);
  }

  abandonAll(error: Error): void {
    this.#retries = [];
    for (let slot = 0; slot < this.#slots.length; slot++) {
      if (this.#slots[slot] !== undefined) this.#finish(slot, error);
    }
  }

  /** The tag of the command in `slot`: queue and slot, and a generation against reuse. */
  #tag(slot: number): bigint {
    return (BigInt(this.#generation[slot]!) << 32n) | BigInt(this.#tagLow(slot));
  }

  #tagLow(slot: number): number {
    return ((this.vq.index << 16) | slot) >>> 0;
  }

  /** Writes the request header, CDB and chain for `slot` and publishes it. */
  #addChain(slot: number, request: BlockRequest): boolean {
    const s = this.settings;
    const layout = this.#layout;
    const base = this.#areaOffset + slot * layout.stride;
    const gpa = this.#areaGpa + slot * layout.stride;
    const bytes = this.#bytes;
    encodeVirtioLun(
      bytes,
      base,
      request.command?.target ?? s.target,
      request.command?.lun ?? s.lun,
    );
    // Written through the struct's field table without building a value object or a BigInt:
    // this runs for every request.
    const view = this.#view;
    view.setUint32(base + REQ.id.offset, this.#tagLow(slot), true);
    view.setUint32(base + REQ.id.offset + 4, this.#generation[slot]!, true);
    bytes[base + REQ.taskAttr.offset] = VIRTIO_SCSI_S_SIMPLE;
    bytes[base + REQ.prio.offset] = 0;
    bytes[base + REQ.crn.offset] = 0;
    const cdbAt = base + VirtioScsiCmdReqHeader.size;
    bytes.fill(0, cdbAt, cdbAt + s.cdbSize);
    // The response byte is preset so a response the device never wrote is caught.
    bytes.fill(
      0,
      base + layout.respOffset,
      base + layout.respOffset + VirtioScsiCmdRespHeader.size,
    );
    bytes[base + layout.respOffset + RESP.response.offset] = RESPONSE_NOT_WRITTEN;

    let dataGpa = 0;
    let dataLen = 0;
    let dataIn = false;
    const range = this.#range;
    range[LBA_AT] = request.position / s.blockSize;
    range[BLOCKS_AT] = request.length / s.blockSize;
    switch (request.kind) {
      case 'read':
      case 'write':
        buildReadWrite(bytes, cdbAt, request.kind === 'write', range, s.use16);
        dataGpa = request.dataGpa;
        dataLen = request.length;
        dataIn = request.kind === 'read';
        break;
      case 'flush':
        buildSynchronizeCache(bytes, cdbAt);
        break;
      case 'discard':
        if (s.discardWithUnmap) {
          const paramAt = base + layout.paramOffset;
          dataLen = encodeUnmapParameters(bytes, paramAt, range);
          dataGpa = gpa + layout.paramOffset;
          buildUnmap(bytes, cdbAt, dataLen);
        } else {
          buildWriteSame16(bytes, cdbAt, range, true);
          dataGpa = s.zeroBlockGpa;
          dataLen = s.blockSize;
        }
        break;
      case 'write-zeroes':
        buildWriteSame16(bytes, cdbAt, range, s.zeroesByUnmap);
        dataGpa = s.zeroBlockGpa;
        dataLen = s.blockSize;
        break;
      case 'command': {
        const command = request.command!;
        bytes.set(command.cdb, cdbAt);
        dataGpa = request.dataGpa;
        dataLen = request.length;
        dataIn = command.dataIn;
        break;
      }
      case 'get-id':
        break;
    }

    // Device-readable first (request, data-out), then device-writable (response, data-in).
    // Each GPA is stored here, not passed: a GPA is above 2^31, and one passed to a call V8
    // did not inline would be a new heap number per request.
    const chain = this.#segArrays.get(dataLen > 0 ? 3 : 2);
    let n = 0;
    segment(chain[n++]!, VirtioScsiCmdReqHeader.size + s.cdbSize, false).gpa = gpa;
    if (dataLen > 0 && !dataIn) segment(chain[n++]!, dataLen, false).gpa = dataGpa;
    const respLen = VirtioScsiCmdRespHeader.size + s.senseSize;
    segment(chain[n++]!, respLen, true).gpa = gpa + layout.respOffset;
    if (dataLen > 0 && dataIn) segment(chain[n++]!, dataLen, true).gpa = dataGpa;
    // The slot number is the token: drain hands it back with the used element.
    if (!this.vq.add(chain, slot)) return false;
    this.vq.publish();
    return true;
  }

  #complete(slot: number, len: number): void {
    const request = this.#slots[slot];
    if (request === undefined) {
      throw new QueueBrokenError(this.vq.index, `used element for idle slot ${slot}`);
    }
    this.#host.stats.completions++;
    const outcome = this.#outcome(slot, request, len);
    if (outcome === 'retry') return;
    this.#finish(slot, outcome);
  }

  #finish(slot: number, error: Error | null): void {
    const request = this.#slots[slot]!;
    this.#slots[slot] = undefined;
    this.#freeSlots[this.#freeSlotCount++] = slot;
    request.onComplete(request, error);
  }

  /** Decides what a response means: success (null), an error, or a retry already scheduled. */
  #outcome(slot: number, request: BlockRequest, len: number): Error | null | 'retry' {
    const layout = this.#layout;
    const respAt = this.#areaOffset + slot * layout.stride + layout.respOffset;
    const view = this.#view;
    const senseLength = view.getUint32(respAt + RESP.senseLen.offset, true);
    const resid = view.getUint32(respAt + RESP.resid.offset, true);
    const status = view.getUint8(respAt + RESP.status.offset);
    const response = view.getUint8(respAt + RESP.response.offset);
    const name = request.kind === 'command' ? 'scsiCommand' : request.kind;
    const position =
      request.kind === 'read' ||
      request.kind === 'write' ||
      request.kind === 'discard' ||
      request.kind === 'write-zeroes'
        ? request.position
        : undefined;
    if (response === RESPONSE_NOT_WRITTEN) {
      return new QueueBrokenError(this.vq.index, `device returned a ${name} without a response`);
    }
    const cancelled = this.#cancelled[slot] === 1;
    if (response !== VirtioScsiResponse.VIRTIO_SCSI_S_OK) {
      const transient =
        response === VirtioScsiResponse.VIRTIO_SCSI_S_BUSY ||
        response === VirtioScsiResponse.VIRTIO_SCSI_S_TRANSPORT_FAILURE ||
        // A reset someone else asked for ended the command; it did not fail.
        (response === VirtioScsiResponse.VIRTIO_SCSI_S_RESET && !cancelled);
      if (transient && !cancelled && this.#retry(slot, true, MAX_SCSI_RETRIES)) return 'retry';
      return new VirtioScsiResponseError(name, response, virtioScsiResponseName(response));
    }
    const senseLen = Math.min(senseLength, this.settings.senseSize);
    const senseAt = respAt + VirtioScsiCmdRespHeader.size;
    switch (status) {
      case ScsiStatus.GOOD:
      case ScsiStatus.CONDITION_MET:
        return this.#completed(request, status, resid, senseAt, senseLen, len);
      case ScsiStatus.CHECK_CONDITION: {
        const sense = decodeSense(this.#bytes.subarray(senseAt, senseAt + senseLen));
        if (sense === undefined) {
          return new ScsiStatusError(name, status, scsiStatusName(status));
        }
        // The command did its work and the target only has something to say about it.
        if (isCompletedSense(sense)) {
          return this.#completed(request, status, resid, senseAt, senseLen, len);
        }
        if (sense.deferred) {
          // An earlier command failed after it was acknowledged; this one was not run.
          this.#host.deferredError(new ScsiSenseError(name, sense));
          if (!cancelled && this.#retry(slot, false, MAX_SCSI_RETRIES)) return 'retry';
          return new ScsiSenseError(name, sense, position);
        }
        if (
          request.kind === 'flush' &&
          this.settings.writeThrough &&
          sense.senseKey === SenseKey.ILLEGAL_REQUEST &&
          sense.asc === ASC_INVALID_COMMAND
        ) {
          return null;
        }
        if (!cancelled && isRetryableSense(sense)) {
          // A unit attention reports a past event (a reset): the command itself can go at once.
          const unitAttention = sense.senseKey === SenseKey.UNIT_ATTENTION;
          const attempts =
            sense.senseKey === SenseKey.NOT_READY ? MAX_NOT_READY_RETRIES : MAX_SCSI_RETRIES;
          if (this.#retry(slot, !unitAttention, attempts)) return 'retry';
        }
        return new ScsiSenseError(name, sense, position);
      }
      case ScsiStatus.BUSY:
      case ScsiStatus.TASK_SET_FULL:
        if (!cancelled && this.#retry(slot, true, MAX_SCSI_RETRIES)) return 'retry';
        return new ScsiStatusError(name, status, scsiStatusName(status));
      default:
        return new ScsiStatusError(name, status, scsiStatusName(status));
    }
  }

  /** A command that did its work: a short read or write is an error, a raw command reports it. */
  #completed(
    request: BlockRequest,
    status: number,
    resid: number,
    senseAt: number,
    senseLen: number,
    len: number,
  ): Error | null {
    const command = request.command;
    if (command !== undefined) {
      command.status = status;
      let residual = Math.min(resid, request.length);
      // Data-in counts only as far as len says it was written, with the read path's leniency
      // (below): what the device never wrote is the bounce buffer's zeroes, not the LUN's data.
      if (command.dataIn && len !== 0 && len < request.length - residual) {
        residual = request.length - len;
      }
      command.residual = residual;
      command.sense = senseLen > 0 ? this.#bytes.slice(senseAt, senseAt + senseLen) : undefined;
      return null;
    }
    if (resid !== 0 && (request.kind === 'read' || request.kind === 'write')) {
      // A residual beyond the transfer is the device miscounting: nothing was moved.
      return new ShortTransferError(request.kind, request.length, Math.min(resid, request.length));
    }
    // The data of a read counts only as far as len says the device wrote it (the rest is stale
    // memory), leniently as for virtio-blk: len may count the data alone, and 0 is "not reported"
    // (Linux's vhost-scsi).
    if (request.kind === 'read' && len !== 0 && len < request.length) {
      return new ShortTransferError('read', request.length, request.length - len);
    }
    return null;
  }

  /** Schedules `slot` again after a backoff; false once `maxAttempts` are used up. */
  #retry(slot: number, backoff: boolean, maxAttempts: number): boolean {
    const attempt = this.#attempts[slot]!;
    if (attempt >= maxAttempts) return false;
    this.#attempts[slot] = attempt + 1;
    this.#host.stats.retries++;
    const due = Date.now() + (backoff ? Math.min(2 ** attempt, MAX_BACKOFF_MS) : 0);
    this.#retries.push({ slot, due });
    this.#host.retryScheduled(due);
    return true;
  }
}

/** Field offsets of the request and response headers, from their one struct table each. */
const REQ = VirtioScsiCmdReqHeader.fields;
const RESP = VirtioScsiCmdRespHeader.fields;

/** Sets a segment's length and direction; the caller stores its GPA (see #addChain). */
function segment(seg: Segment, len: number, write: boolean): Segment {
  seg.len = len;
  seg.write = write;
  return seg;
}

function align(n: number, a: number): number {
  return Math.ceil(n / a) * a;
}
