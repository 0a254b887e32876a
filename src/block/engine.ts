import { InvalidArgumentError, OutOfMemoryError } from '../errors.js';
import type { RangeAllocator } from '../memory/allocator.js';
import type { DeviceStats } from '../devices/stats.js';
import { RangeLock, RangeLockEntry } from './range-lock.js';
import { BlockRequest, type BlockDriver, type BlockLimits } from './request.js';
import { RunQueue } from './run-queue.js';
import { SlotSet, type Slotted } from './slot-set.js';
import { toError } from '../util/to-error.js';

/** The shared memory the block layer copies through and allocates bounce buffers from. */
export interface IoMemory {
  readonly allocator: RangeAllocator;
  /** Guest-physical address of dataBytes[0]. */
  readonly dataGpa: number;
  readonly dataBytes: Uint8Array;
  /** Offset of `view` in dataBytes, or -1 if it lives elsewhere (needs bouncing). */
  dataOffsetOf(view: ArrayBufferView): number;
}

/** Answers the caller; one function per device, shared by all its operations (no closure per call). */
export type OperationCallback = (op: Operation, error: Error | null) => void;

/** CallerSlot.deadline of a call that has one the watchdog has not stamped yet. */
export const DEADLINE_UNSTAMPED = -1;

/** Where the API layer keeps what it needs to answer one caller (set on the operation itself). */
export interface CallerSlot {
  resolve: ((value: unknown) => void) | undefined;
  reject: ((error: Error) => void) | undefined;
  timer: NodeJS.Timeout | undefined;
  signal: AbortSignal | undefined;
  onAbort: (() => void) | undefined;
  /**
   * When the call times out (performance.now() ms), set by the API layer's watchdog on its first
   * run after the call; 0: no deadline; DEADLINE_UNSTAMPED: one, not yet stamped.
   */
  deadline: number;
  /** For blocking calls: the outcome, read after the wait. */
  error: Error | null;
}

/**
 * One caller-visible operation (a read, a write, a flush...) cut into device requests. Requests
 * complete through callbacks invoked synchronously from the drain routine, never through Promise
 * continuations, so that a blocking *Sync call can drive every step of it (read-modify-write
 * included) from inside its wait loop.
 */
export abstract class Operation implements Slotted {
  readonly engine: BlockEngine;
  name: string;
  /** The caller has been answered. */
  settled = false;
  /** First error; once set nothing more is submitted. */
  error: Error | null = null;
  /** Device requests of this operation in flight. */
  inFlight = 0;
  /** More requests remain to be submitted. */
  pending = true;
  lock: RangeLockEntry | undefined;
  /** In the engine's runnable list. */
  queued = false;
  /** Where it is in the engine's active set (-1: answered, or not started). */
  slot = -1;
  /**
   * For pooled operations: called once the operation is settled and nothing refers to it any
   * more (no request in flight, not queued, no lock), so it can be reused.
   */
  recycle: ((op: Operation) => void) | undefined = undefined;
  /** Handed to `recycle` and not yet reused. */
  recycled = false;
  /** Owned by the API layer. */
  readonly caller: CallerSlot = {
    resolve: undefined,
    reject: undefined,
    timer: undefined,
    signal: undefined,
    onAbort: undefined,
    deadline: 0,
    error: null,
  };
  #callback: OperationCallback;

  constructor(engine: BlockEngine, name: string, callback: OperationCallback) {
    this.engine = engine;
    this.name = name;
    this.#callback = callback;
  }

  /** Makes a recycled operation new again (pooled subclasses call it from their init). */
  protected reset(name: string, callback: OperationCallback): void {
    this.name = name;
    this.#callback = callback;
    this.settled = false;
    this.error = null;
    this.inFlight = 0;
    this.pending = true;
    this.lock = undefined;
    this.queued = false;
    this.recycled = false;
    const caller = this.caller;
    caller.resolve = undefined;
    caller.reject = undefined;
    caller.timer = undefined;
    caller.signal = undefined;
    caller.onAbort = undefined;
    caller.deadline = 0;
    caller.error = null;
  }

  /** The block range to lock before the first submission (with its entry filled in), if any. */
  lockEntry(): RangeLockEntry | undefined {
    return undefined;
  }

  /** One reusable lock entry per operation object; granting it queues the operation. */
  #entry: RangeLockEntry | undefined;

  // The closure is made here, not in rangeEntry: a function that makes one has a context for
  // `this`, which V8 allocates at every call, whichever branch runs (~40 B a write, measured).
  #newEntry(): RangeLockEntry {
    this.#entry = new RangeLockEntry(0, 0, false, () => this.engine.enqueueGranted(this));
    return this.#entry;
  }
  /**
   * The operation's entry, for lockEntry() to fill in: its range is stored there, not passed
   * here, since a device position above 2^31 passed to a call V8 did not inline is a new heap
   * number (32 B per write, two of them, measured on a 64 GiB disk).
   */
  protected rangeEntry(): RangeLockEntry {
    return this.#entry ?? this.#newEntry();
  }

  /**
   * Whether the operation still reads or writes the caller's buffer where it lies in shared
   * memory, within [offset, offset + size) of the data region (freeBuffer waits for it).
   */
  usesSharedBytes(_offset: number, _size: number): boolean {
    return false;
  }

  /** Submits what resources allow. Returns false if it is blocked on descriptors or memory. */
  abstract pump(): boolean;

  /** The value the caller gets on success. */
  abstract result(): unknown;

  /** Stops submitting; the caller gets `error` once the requests in flight have come back. */
  fail(error: Error): void {
    if (this.error === null) this.error = error;
    this.pending = false;
    this.maybeFinish();
  }

  /** Answers the caller now (timeout, abort); requests in flight keep their memory until they return. */
  abort(error: Error): void {
    if (this.settled) return;
    if (this.lock !== undefined && !this.lock.granted) {
      // Still queued for its range: withdraw, nothing was submitted.
      const lock = this.lock;
      this.lock = undefined;
      this.engine.locks.release(lock);
    }
    this.fail(error);
    if (!this.settled) this.#settle(error);
    this.maybeFinish();
  }

  /** Call after every completion and after submission stops. */
  maybeFinish(): void {
    if (this.pending || this.inFlight > 0) return;
    if (this.lock !== undefined) {
      const lock = this.lock;
      this.lock = undefined;
      this.engine.locks.release(lock);
    }
    if (!this.settled) this.#settle(this.error);
    this.recycleIfIdle();
  }

  /** Hands a finished operation back to its pool once nothing can touch it any more. */
  recycleIfIdle(): void {
    if (
      this.recycle === undefined ||
      this.recycled ||
      !this.settled ||
      this.inFlight > 0 ||
      this.queued ||
      this.lock !== undefined
    ) {
      return;
    }
    this.recycled = true;
    this.dropReferences();
    this.recycle(this);
  }

  /** A pooled operation must not keep the caller's buffers alive while it waits for reuse. */
  protected dropReferences(): void {}

  #settle(error: Error | null): void {
    this.settled = true;
    this.engine.active.delete(this);
    this.#callback(this, error);
  }
}

/**
 * The caller's buffer lost its memory while the call was pending (it was detached: another
 * device's allocBuffer memory, released when that device closed, or a transferred ArrayBuffer).
 * Only this call fails; copying from or into it would throw inside the drain and fail the device.
 */
export function bufferGone(operation: string): InvalidArgumentError {
  return new InvalidArgumentError(
    `${operation}: the buffer was detached (its memory released) while the call was pending`,
  );
}

/** Largest data length of one device request when the device sets no size_max. */
export const MAX_REQUEST_BYTES = 1024 * 1024 * 1024;

export interface BlockEngineOptions {
  /** Largest bounce buffer one request uses; larger transfers are split and pipelined. */
  bounceChunkBytes: number;
}

/**
 * The device-independent I/O engine: runs operations against a BlockDriver, in FIFO order,
 * waiting (not failing) when descriptors or bounce memory run out.
 */
export class BlockEngine {
  readonly driver: BlockDriver;
  readonly memory: IoMemory;
  readonly stats: DeviceStats;
  limits: BlockLimits;
  /** The data region as a Buffer, for copies that allocate no views (Buffer#copy). */
  readonly dataBuffer: Buffer;
  readonly locks = new RangeLock();
  bounceChunkBytes = 0;
  /** Largest data length of one request: seg_max segments of size_max bytes, within the transfer limit. */
  maxRequestBytes = 0;
  readonly #bounceChunkOption: number;
  readonly #runnable = new RunQueue<Operation>();
  /** Every operation not yet answered. */
  readonly active = new SlotSet<Operation>();
  readonly #requestPool: BlockRequest[] = [];
  readonly #onSubmitted: () => void;
  #pumping = false;
  /**
   * Runs the out-of-memory decision later (the API layer: once the event loop turn's
   * continuations have run); undefined: at once.
   */
  deferMemoryCheck: ((check: () => void) => void) | undefined = undefined;
  /** Blocking calls waiting: nothing else runs meanwhile to free memory, so decide at once. */
  blockingWaits = 0;
  #memoryCheckScheduled = false;
  #memoryCheckDue = false;
  readonly #memoryCheck = (): void => {
    this.#memoryCheckScheduled = false;
    this.#memoryCheckDue = true;
    try {
      this.pump();
    } finally {
      this.#memoryCheckDue = false;
    }
  };
  /** Set once the device is gone: new operations fail at once. */
  #deadError: Error | null = null;

  constructor(
    driver: BlockDriver,
    memory: IoMemory,
    stats: DeviceStats,
    onSubmitted: () => void,
    options: BlockEngineOptions,
  ) {
    this.driver = driver;
    this.memory = memory;
    this.stats = stats;
    this.limits = driver.limits;
    const bytes = memory.dataBytes;
    this.dataBuffer = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.#onSubmitted = onSubmitted;
    this.#bounceChunkOption = options.bounceChunkBytes;
    this.refreshLimits();
  }

  /** Re-reads the driver's limits (a virtio-scsi driver learns them after the rings are up). */
  refreshLimits(): void {
    this.limits = this.driver.limits;
    const bs = this.limits.blockSize;
    // Without size_max a request could grow to the whole buffer; keep each one below what
    // descriptor lengths (u32) and backends' request limits (QEMU: about 2 GiB) can take.
    const perRequest = Math.min(
      this.limits.maxSegments * this.limits.maxSegmentBytes,
      this.limits.maxTransferBytes,
      MAX_REQUEST_BYTES,
    );
    this.maxRequestBytes = Math.max(bs, Math.floor(perRequest / bs) * bs);
    // A bounce chunk must leave room for others: at most a quarter of the shared memory.
    const chunk = Math.min(
      this.#bounceChunkOption,
      this.maxRequestBytes,
      this.memory.allocator.size / 4,
    );
    this.bounceChunkBytes = Math.max(bs, Math.floor(chunk / bs) * bs);
  }

  /** Operations waiting to submit (blocked on a lock, descriptors or memory). */
  get waiting(): number {
    return this.#runnable.length + this.locks.waitingCount;
  }

  get busy(): boolean {
    return this.driver.inFlight > 0 || this.waiting > 0;
  }

  start(op: Operation): void {
    this.active.add(op);
    if (this.#deadError !== null) {
      op.abort(this.#deadError);
      return;
    }
    const entry = op.lockEntry();
    if (entry !== undefined) {
      op.lock = this.locks.acquireEntry(entry);
      if (!op.lock.granted) return;
    }
    this.#enqueue(op);
  }

  /**
   * Re-queues an operation whose next phase became ready (a write after its edge reads). It goes
   * first: it already holds bounce memory, and making it wait behind operations that need more
   * memory could leave every buffer held with nothing in flight to free one.
   */
  resume(op: Operation): void {
    op.queued = true;
    this.#runnable.unshift(op);
    if (!this.#pumping) this.pump();
  }

  /** @internal An operation's range lock was granted: it may run. */
  enqueueGranted(op: Operation): void {
    this.#enqueue(op);
  }

  #enqueue(op: Operation): void {
    op.queued = true;
    this.#runnable.push(op);
    if (this.#runnable.length === 1 && !this.#pumping) this.pump();
  }

  /**
   * Lets waiting operations submit, in FIFO order; called after every drain. An operation that
   * cannot get descriptors or memory stops the line while requests are in flight (their
   * completions free resources and call pump again). With nothing in flight, operations behind
   * it may still proceed without new memory (edge writes hold theirs); if none can, the first
   * one fails with OutOfMemoryError rather than waiting forever: after `deferMemoryCheck`'s
   * delay, if one is set and no blocking call waits, since the application may free a buffer in
   * the continuation of the call that just returned the last request in flight.
   */
  pump(): void {
    if (this.#deadError !== null || this.#pumping) return;
    this.#pumping = true;
    try {
      for (;;) {
        const before = this.stats.requests;
        const blocked = this.#pumpOnce();
        if (this.stats.requests !== before) this.#onSubmitted();
        // Failed meanwhile (a drain found the device broken): failAll emptied the queue.
        if (this.#deadError !== null) break;
        if (blocked === undefined || this.driver.inFlight > 0) break;
        if (this.stats.requests !== before) continue;
        // Nothing in flight and nothing could submit: memory is held by the application.
        if (!this.#memoryCheckDue && this.blockingWaits === 0 && this.deferMemoryCheck) {
          if (!this.#memoryCheckScheduled) {
            this.#memoryCheckScheduled = true;
            this.deferMemoryCheck(this.#memoryCheck);
          }
          break;
        }
        this.#runnable.removeAt(this.#runnable.indexOf(blocked));
        blocked.queued = false;
        // A bounce buffer too small for a command went back to the cache: the error's count of
        // free memory includes it.
        this.#dropBounceCache();
        blocked.fail(
          new OutOfMemoryError(this.lastFailedBounce, this.memory.allocator.largestFree),
        );
      }
    } finally {
      this.#pumping = false;
    }
  }

  /** One pass over the runnable list; returns the first operation left blocked, if any. */
  #pumpOnce(): Operation | undefined {
    const runnable = this.#runnable;
    let firstBlocked: Operation | undefined;
    for (let i = 0; i < runnable.length;) {
      const op = runnable.at(i);
      let done = true;
      if (op.pending && op.error === null) {
        try {
          done = op.pump();
        } catch (err) {
          op.fail(toError(err));
        }
      }
      if (done) {
        // Still at i, unless something it called re-queued another in front (resume) or
        // emptied the queue (failAll).
        const at = i < runnable.length && runnable.at(i) === op ? i : runnable.indexOf(op);
        if (at >= 0) runnable.removeAt(at);
        op.queued = false;
        // Settles operations with nothing to submit (zero length) or already failed.
        op.maybeFinish();
        continue;
      }
      this.stats.queuedForResources++;
      firstBlocked ??= op;
      if (this.driver.inFlight > 0) break;
      i++;
    }
    return firstBlocked;
  }

  /**
   * Whether an operation not yet answered still uses [offset, offset + size) of the data region
   * as its caller's buffer. One answered (a timeout, an abort) touches it no more: only its
   * requests in flight may, which the driver knows.
   */
  usesSharedBytes(offset: number, size: number): boolean {
    // By index: checked after every settle while a free waits, so it must allocate nothing.
    const active = this.active;
    for (let i = 0; i < active.size; i++) {
      if (active.at(i)!.usesSharedBytes(offset, size)) return true;
    }
    return false;
  }

  /** Answers every operation not yet answered with `error` (the device is gone or closing). */
  failAll(error: Error): void {
    this.#deadError = error;
    for (const op of this.#runnable.clear()) op.queued = false;
    for (const op of this.active.snapshot()) op.abort(error);
  }

  getRequest(): BlockRequest {
    return this.#requestPool.pop() ?? new BlockRequest();
  }

  putRequest(request: BlockRequest): void {
    request.owner = undefined;
    request.context = undefined;
    request.bounceOffset = -1;
    request.command = undefined;
    this.#requestPool.push(request);
  }

  /**
   * A bounce buffer of up to `bytes` (at least one block) in the data region; its size is left
   * in `bounceSize`. Smaller than asked when memory is short and nothing is in flight to free
   * more. Returns -1 if none can be had now.
   */
  allocBounce(bytes: number): number {
    const allocator = this.memory.allocator;
    const cached = this.#bounceCache.get(allocator.roundUp(bytes));
    if (cached !== undefined && cached.length > 0) {
      this.bounceSize = bytes;
      return cached.pop()!;
    }
    let want = bytes;
    for (;;) {
      const offset = allocator.alloc(want);
      if (offset >= 0) {
        this.bounceSize = want;
        return offset;
      }
      // Memory parked in the cache is free memory: give it back before shrinking or failing.
      if (this.#dropBounceCache()) continue;
      const bs = this.limits.blockSize;
      if (this.driver.inFlight > 0 || want <= bs) {
        this.lastFailedBounce = want;
        return -1;
      }
      want = Math.max(bs, Math.floor(Math.min(want / 2, allocator.largestFree) / bs) * bs);
    }
  }

  /** Size of the last buffer allocBounce returned. */
  bounceSize = 0;
  /** Size of the last allocation that failed, for the OutOfMemoryError. */
  lastFailedBounce = 0;

  /**
   * Freed bounce buffers by allocated size, reused before the allocator is asked: the common
   * case (the same few sizes over and over) then skips the free-list walk and the coalescing.
   */
  readonly #bounceCache = new Map<number, number[]>();

  freeBounce(offset: number): void {
    const allocator = this.memory.allocator;
    const size = allocator.sizeOf(offset);
    if (size !== undefined && size <= BOUNCE_CACHE_MAX_BYTES) {
      let list = this.#bounceCache.get(size);
      if (list === undefined) this.#bounceCache.set(size, (list = []));
      if (list.length < BOUNCE_CACHE_PER_SIZE) {
        list.push(offset);
        return;
      }
    }
    allocator.free(offset);
  }

  /** Gives cached bounce buffers back to the allocator (the application needs the memory). */
  releaseCachedMemory(): boolean {
    return this.#dropBounceCache();
  }

  /** Returns every cached bounce buffer to the allocator; true if there were any. */
  #dropBounceCache(): boolean {
    let dropped = false;
    for (const list of this.#bounceCache.values()) {
      for (const offset of list) this.memory.allocator.free(offset);
      if (list.length > 0) dropped = true;
      list.length = 0;
    }
    return dropped;
  }
}

/** Bounce buffers up to this size are kept for reuse, at most this many of each size. */
const BOUNCE_CACHE_MAX_BYTES = 1024 * 1024;
const BOUNCE_CACHE_PER_SIZE = 64;
