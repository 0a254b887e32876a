/**
 * What the API layer and the completion strategies need from a device driver (virtio-blk or
 * virtio-scsi), so that one BlockDevice, one engine and one drain routine serve both.
 */

import { native } from '../native.js';
import type { SocketEndpoint } from '../protocol/endpoint.js';
import type { GuestMemory } from '../memory/guest-memory.js';
import type { Segment, SplitVirtqueue } from '../virtqueue/split.js';
import type { BlockDriver, BlockRequest } from '../block/request.js';
import type { DeviceStats } from './stats.js';

/** One virtqueue as the drain routine sees it. */
export interface DeviceQueue {
  readonly vq: SplitVirtqueue;
  readonly kickFd: number;
  readonly callFd: number;
  /**
   * Requests in flight that completions are awaited for. Buffers the device keeps until it has
   * something to say (eventq) do not count: polling for them would never stop.
   */
  readonly inFlight: number;
  /**
   * True where chains go on the ring only through the block engine's submissions, which the
   * completion strategy hears of (quietKick, setBusy), or while the engine is busy anyway (a
   * retry after backoff, whose request keeps its slot and counts in `inFlight`; a blocking
   * call, which turns interrupts on itself): holding none, such a queue has nothing to signal,
   * and its interrupts may stay off while the device is idle. False for queues the driver fills
   * by itself (virtio-scsi's control and event queues).
   */
  readonly filledByEngineOnly: boolean;
  /** Completes what the device returned; returns how many used elements were consumed. */
  drain(): number;
  /** Notifies the device of what was published since the last kick, if it wants to know. */
  kick(): void;
  /** Fails every request in flight (the backend is gone). */
  abandonAll(error: Error): void;
  /** Does any request in flight use memory in [gpa, gpa + length)? */
  usesMemory(gpa: number, length: number): boolean;
}

export interface VhostFeatureInfo {
  offered: bigint;
  negotiated: bigint;
  names: string[];
  offeredNames: string[];
}

export interface VhostProtocolFeatureInfo {
  offered: bigint;
  negotiated: bigint;
  names: string[];
}

/** A device driver the BlockDevice API runs on. */
export interface DeviceDriver extends BlockDriver {
  readonly endpoint: SocketEndpoint;
  readonly memory: GuestMemory;
  readonly stats: DeviceStats;
  /** Every queue to drain (request queues and, for virtio-scsi, the control and event queues). */
  readonly queues: readonly DeviceQueue[];
  readonly errFds: readonly number[];
  /** Fds a blocking wait sleeps on: call eventfds (queue order), error eventfds, the socket. */
  waitFds(): number[];
  /** Whether the device may still access [gpa, gpa + length). */
  usesMemory(gpa: number, length: number): boolean;
  kick(): void;
  /** Stops the rings and releases everything; safe when the backend is gone. */
  shutdown(): Promise<void>;
  /** Releases fds and memory at once. Idempotent. */
  destroy(): void;
  /**
   * The caller stopped waiting for `owner`'s requests (timeout, abort): the driver may ask the
   * device to abort them (virtio-scsi task management). Their memory stays reserved until the
   * device returns them.
   */
  abandon?(owner: unknown): void;
  /**
   * Runs deferred work that is due (retries after backoff) and returns the milliseconds until
   * the next is due, or -1 if none is pending.
   */
  runDeferred?(now: number): number;
  /** Called with a function that runs deferred work: the driver's timers call it when due. */
  setDeferredHandler?(handler: () => void): void;
  /** The device's id when the driver learned it at open (virtio-scsi VPD pages); else undefined. */
  knownId?(): string;
  /** Called with a function that fails the device (the driver found it beyond recovery). */
  setFailureHandler?(handler: (error: Error) => void): void;
}

/**
 * Notifies the device through its kick eventfd if it wants to know of what was published since
 * the last decision (flags or EVENT_IDX). Returns whether it kicked.
 */
export function kickIfNeeded(vq: SplitVirtqueue, kickFd: number): boolean {
  if (!vq.kickNeeded()) return false;
  native.eventfdWrite(kickFd);
  return true;
}

/**
 * Kicks ahead of the next request: notifies a device that would want a kick for the next chain
 * (see SplitVirtqueue.wantsNextKick) before that chain is on the ring. A backend that sleeps
 * between kicks (qemu-storage-daemon) is then still awake when the request and its own kick come
 * a microsecond later; woken from sleep instead, it answers 3-8x later at depth 1 (BENCHMARKS.md,
 * "Kicking ahead"). The device finds nothing new on this kick; that is allowed (a notification is
 * a hint) and costs it one look at the ring. Returns whether it kicked. One that fails (the kick
 * eventfd unusable) is left to the next request's own kick, which fails the device: this one
 * runs inside a polling turn, where a throw would escape to Node's event loop.
 */
export function kickAhead(queue: DeviceQueue): boolean {
  if (queue.vq.broken || !queue.vq.wantsNextKick()) return false;
  try {
    native.eventfdWrite(queue.kickFd);
  } catch {
    return false;
  }
  return true;
}

/** Does a request in these slots use memory in [gpa, gpa + length)? */
export function slotsUseMemory(
  slots: readonly (BlockRequest | undefined)[],
  gpa: number,
  length: number,
): boolean {
  // Indexed: an iterator's results are objects wherever V8 runs this unoptimized (0.4 B a
  // request, measured with unaligned writes at depth 1, whose deferred frees call it).
  for (let i = 0; i < slots.length; i++) {
    const request = slots[i];
    if (request === undefined || request.dataGpa === 0) continue;
    if (request.dataGpa < gpa + length && gpa < request.dataGpa + request.length) return true;
  }
  return false;
}

/** Spreads requests over request queues round-robin, skipping queues that are full. */
export class RequestSpreader {
  readonly #queues: readonly { trySubmit(request: BlockRequest): boolean }[];
  #next = 0;

  constructor(queues: readonly { trySubmit(request: BlockRequest): boolean }[]) {
    this.#queues = queues;
  }

  trySubmit(request: BlockRequest): boolean {
    const queues = this.#queues;
    if (queues.length === 1) return queues[0]!.trySubmit(request);
    for (let i = 0; i < queues.length; i++) {
      const q = queues[(this.#next + i) % queues.length]!;
      if (q.trySubmit(request)) {
        this.#next = (this.#next + i + 1) % queues.length;
        return true;
      }
    }
    return false;
  }
}

/** Reusable Segment arrays, one per chain length, so that building a chain allocates nothing. */
export class SegmentArrays {
  readonly #byLength: Segment[][] = [];

  get(n: number): Segment[] {
    let segs = this.#byLength[n];
    if (segs === undefined) {
      segs = [];
      for (let i = 0; i < n; i++) segs.push({ gpa: 0, len: 0, write: false });
      this.#byLength[n] = segs;
    }
    return segs;
  }
}
