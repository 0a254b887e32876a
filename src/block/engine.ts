import { OutOfMemoryError } from '../errors.js';
import type { RangeAllocator } from '../memory/allocator.js';
import type { DeviceStats } from '../devices/stats.js';
import { RangeLock, type RangeLockEntry } from './range-lock.js';
import { BlockRequest, type BlockDriver, type BlockLimits } from './request.js';

/** The shared memory the block layer copies through and allocates bounce buffers from. */
export interface IoMemory {
  readonly allocator: RangeAllocator;
  /** Guest-physical address of dataBytes[0]. */
  readonly dataGpa: number;
  readonly dataBytes: Uint8Array;
  /** Offset of `view` in dataBytes, or -1 if it lives elsewhere (needs bouncing). */
  dataOffsetOf(view: ArrayBufferView): number;
}

export type OperationCallback = (error: Error | null, value: number) => void;

/**
 * One caller-visible operation (a read, a write, a flush...) cut into device requests. Requests
 * complete through callbacks invoked synchronously from the drain routine, never through Promise
 * continuations, so that a blocking *Sync call can drive every step of it (read-modify-write
 * included) from inside its wait loop.
 */
export abstract class Operation {
  readonly engine: BlockEngine;
  readonly name: string;
  /** The caller has been answered. */
  settled = false;
  /** First error; once set nothing more is submitted. */
  error: Error | null = null;
  /** Device requests of this operation in flight. */
  inFlight = 0;
  /** More requests remain to be submitted. */
  pending = true;
  lock: RangeLockEntry | undefined;
  readonly #callback: OperationCallback;

  constructor(engine: BlockEngine, name: string, callback: OperationCallback) {
    this.engine = engine;
    this.name = name;
    this.#callback = callback;
  }

  /** The block range to lock before the first submission, if any. */
  lockRange(): { start: number; end: number; exclusive: boolean } | undefined {
    return undefined;
  }

  /** Submits what resources allow. Returns false if it is blocked on descriptors or memory. */
  abstract pump(): boolean;

  /** The value the caller gets on success. */
  protected abstract result(): number;

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
  }

  #settle(error: Error | null): void {
    this.settled = true;
    this.engine.active.delete(this);
    this.#callback(error, error === null ? this.result() : 0);
  }
}

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
  readonly limits: BlockLimits;
  readonly locks = new RangeLock();
  readonly bounceChunkBytes: number;
  /** Largest data length of one request: seg_max segments of size_max bytes. */
  readonly maxRequestBytes: number;
  #runnable: Operation[] = [];
  /** Every operation not yet answered. */
  readonly active = new Set<Operation>();
  readonly #requestPool: BlockRequest[] = [];
  readonly #onSubmitted: () => void;
  #bounceInUse = 0;
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
    this.#onSubmitted = onSubmitted;
    const bs = this.limits.blockSize;
    const perRequest = this.limits.maxSegments * this.limits.maxSegmentBytes;
    this.maxRequestBytes = Number.isFinite(perRequest)
      ? Math.max(bs, Math.floor(perRequest / bs) * bs)
      : Number.MAX_SAFE_INTEGER - (Number.MAX_SAFE_INTEGER % bs);
    this.bounceChunkBytes = Math.max(
      bs,
      Math.floor(Math.min(options.bounceChunkBytes, this.maxRequestBytes) / bs) * bs,
    );
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
    const range = op.lockRange();
    if (range !== undefined) {
      op.lock = this.locks.acquire(range.start, range.end, range.exclusive, () =>
        this.#enqueue(op),
      );
      if (!op.lock.granted) return;
    }
    this.#enqueue(op);
  }

  /** Re-queues an operation that has more to submit (its next phase became ready). */
  resume(op: Operation): void {
    this.#enqueue(op);
  }

  #enqueue(op: Operation): void {
    this.#runnable.push(op);
    if (this.#runnable.length === 1) this.pump();
  }

  /** Lets waiting operations submit; called after every drain. */
  pump(): void {
    if (this.#deadError !== null) return;
    const before = this.stats.requests;
    const runnable = this.#runnable;
    while (runnable.length > 0) {
      const op = runnable[0]!;
      if (op.pending && op.error === null && !op.pump()) {
        this.stats.queuedForResources++;
        if (this.driver.inFlight === 0 && this.#bounceInUse === 0) {
          // Nothing will ever free memory for it: the application holds it in allocBuffer.
          op.fail(new OutOfMemoryError(this.limits.blockSize, this.memory.allocator.largestFree));
          runnable.shift();
          continue;
        }
        break;
      }
      runnable.shift();
      // Settles operations with nothing to submit (zero length) or already failed.
      op.maybeFinish();
    }
    if (this.stats.requests !== before) this.#onSubmitted();
  }

  /** Answers every operation not yet answered with `error` (the device is gone or closing). */
  failAll(error: Error): void {
    this.#deadError = error;
    this.#runnable = [];
    for (const op of [...this.active]) op.abort(error);
  }

  getRequest(): BlockRequest {
    return this.#requestPool.pop() ?? new BlockRequest();
  }

  putRequest(request: BlockRequest): void {
    request.owner = undefined;
    request.bounceOffset = -1;
    this.#requestPool.push(request);
  }

  /** A bounce buffer of `bytes` in the data region, or -1 if none is free now. */
  allocBounce(bytes: number): number {
    const offset = this.memory.allocator.alloc(bytes);
    if (offset >= 0) this.#bounceInUse++;
    return offset;
  }

  freeBounce(offset: number): void {
    this.memory.allocator.free(offset);
    this.#bounceInUse--;
  }
}
