import { EventEmitter } from 'node:events';
import { native, UV_READABLE, WAIT_MASK_LAST_BIT } from '../native.js';
import {
  type ScsiSenseError,
  AbortError,
  DeviceClosedError,
  InvalidArgumentError,
  OutOfMemoryError,
  ProtocolError,
  ReadOnlyError,
  TimeoutError,
  QueueBrokenError,
  SystemError,
  UnsupportedError,
} from '../errors.js';
import {
  BlockEngine,
  DEADLINE_UNSTAMPED,
  type Operation,
  type OperationCallback,
} from '../block/engine.js';
import { ReadOp } from '../block/read-op.js';
import { WriteOp } from '../block/write-op.js';
import { CommandOp, GetIdOp } from '../block/command-ops.js';
import { PassThroughOp, type PassThroughResult } from '../block/passthrough-op.js';
import type { BlkDeviceInfo } from '../devices/blk/driver.js';
import type { ScsiDeviceInfo, ScsiEvent } from '../devices/scsi/driver.js';
import type { DeviceDriver, DeviceQueue } from '../devices/device.js';
import { VIRTIO_SCSI_MAX_LUN, VIRTIO_SCSI_MAX_TARGET } from '../devices/scsi/spec.js';
import { countPollingTurn, type DeviceStats } from '../devices/stats.js';
import {
  createCompletion,
  spinForUsed,
  type CompletionMode,
  type CompletionOptions,
} from '../completion/index.js';
import type { CompletionHost, CompletionStrategy } from '../completion/strategy.js';
import {
  checkBuffer,
  checkNewBufferLength,
  checkRange,
  checkSignal,
  checkTimeout,
} from './validate.js';
import { describeMessage } from '../protocol/messages.js';
import {
  createReadStream,
  createWriteStream,
  type BlockReadStream,
  type BlockWriteStream,
  type ReadStreamOptions,
  type WriteStreamOptions,
} from './streams.js';
import { toError } from '../util/to-error.js';

/** Per-call options. */
export interface IoOptions {
  /** Rejects with AbortError when the signal fires; the request's memory stays reserved until the device returns it. */
  signal?: AbortSignal;
  /** Milliseconds before the call rejects with TimeoutError (default: the device's requestTimeout). */
  timeout?: number;
}

export interface SyncIoOptions {
  timeout?: number;
}

/** A raw SCSI command (virtio-scsi devices only). */
export interface ScsiCommandOptions extends IoOptions {
  /** Bytes the command reads from the device (data-in). */
  dataIn?: number;
  /** Bytes the command sends to the device (data-out). */
  dataOut?: Uint8Array;
  /** Address another target / LUN than the one opened (scans). */
  target?: number;
  lun?: number;
}

export type ScsiCommandSyncOptions = Omit<ScsiCommandOptions, 'signal'>;

export type { PassThroughResult as ScsiCommandResult };

/** What `dev.info` describes: a virtio-blk or a virtio-scsi device (see `type`). */
export type DeviceInfo = BlkDeviceInfo | ScsiDeviceInfo;

export interface BlockDeviceEvents {
  /** The backend went away or broke the protocol; every later call fails. */
  error: [Error];
  /** The device is closed (by close() or because the backend went away). */
  close: [];
  /** virtio-scsi: an event from the device's event queue (transport reset, parameter change). */
  event: [ScsiEvent];
  /**
   * virtio-scsi: the target reported a deferred error (sense response code 0x71 / 0x73): a
   * command it had already acknowledged failed later (typically a cached write). The command
   * that carried the report is retried.
   */
  deferredError: [ScsiSenseError];
}

/** How the device was set up (beyond what the driver negotiated). */
export interface BlockDeviceSettings {
  requestTimeoutMs: number;
  completion: CompletionMode;
  completionOptions?: CompletionOptions | undefined;
  bounceChunkBytes: number;
}

const WATCHDOG_INTERVAL_MS = 250;
/** requestTimeout's default, and close()'s wait for in-flight I/O when requestTimeout is 0. */
export const DEFAULT_REQUEST_TIMEOUT_MS = 30_000;
/** Finished operations kept for reuse; more than the deepest queue anyone runs. */
const MAX_POOLED_OPERATIONS = 1024;

/**
 * An open virtio-blk device. Every I/O call takes byte positions and lengths (no alignment
 * needed), returns a Promise, and has a blocking *Sync twin for scripts.
 */
export class BlockDevice extends EventEmitter<BlockDeviceEvents> {
  /** Negotiated features and config space; `type` tells virtio-blk from virtio-scsi. */
  readonly info: DeviceInfo;
  readonly #driver: DeviceDriver;
  readonly #engine: BlockEngine;
  readonly #completion: CompletionStrategy;
  readonly #stats: DeviceStats;
  readonly #requestTimeoutMs: number;
  /** Buffers from allocBuffer not yet freed: data-region offset -> the length handed out. */
  readonly #userBuffers = new Map<number, number>();
  readonly #waitFds: number[];
  readonly #callFdCount: number;
  readonly #errFdCount: number;
  /** Something went on the ring since the last #kickNow (other kicks leave it as it is). */
  #kickScheduled = false;
  /** A submission that kicks in the call itself (quietKick) is running: no batch kick for it. */
  #kickingInCall = false;
  /**
   * This tick's burst has begun (its first request was kicked at once) and its end is coming:
   * its #batchKick queued, or the strategy's endBurst (#burstEndedByStrategy). The rest wait.
   */
  #burstOpen = false;
  /**
   * A callback of the completion strategy runs: it ends the burst itself (endBurst, after the
   * continuations), so the burst needs no process.nextTick.
   */
  #burstEndedByStrategy = false;
  /**
   * A kick failed where failing the device had to wait for the next tick (#kickDevice): a
   * blocking wait, in which no tick runs, fails it itself (#kickInWait).
   */
  #kickError: Error | undefined;
  #watchdog: NodeJS.Timeout | undefined;
  #state: 'open' | 'closing' | 'closed' | 'failed' = 'open';
  #failure: Error | undefined;
  #closePromise: Promise<void> | undefined;

  /** @internal Use openBlockDevice(). */
  constructor(driver: DeviceDriver & { info: DeviceInfo }, settings: BlockDeviceSettings) {
    super();
    this.#driver = driver;
    this.#stats = driver.stats;
    this.info = driver.info;
    this.#requestTimeoutMs = settings.requestTimeoutMs;
    this.#engine = new BlockEngine(
      driver,
      driver.memory,
      driver.stats,
      () => this.#scheduleKick(),
      {
        bounceChunkBytes: settings.bounceChunkBytes,
      },
    );
    const host: CompletionHost = {
      queues: driver.queues,
      drain: (queue) => this.#drain(queue),
      countCall: () => {
        this.#stats.calls++;
      },
      countKickAhead: () => {
        this.#stats.kicks++;
        this.#stats.kicksAhead++;
      },
      countKickAheadTrial: (harmless) => {
        this.#stats.kickAheadTrials++;
        if (!harmless) this.#stats.kickAheadTrialsAgainst++;
      },
      countPollingTurn: (turnNs, heldNs) => countPollingTurn(this.#stats, turnNs, heldNs),
      kickPending: () => this.#kickRest(),
      beginBurst: () => {
        this.#burstEndedByStrategy = true;
      },
      endBurst: () => {
        this.#burstEndedByStrategy = false;
        this.#burstOpen = false;
        this.#kickRest();
      },
    };
    // Decided after the continuations of the calls a drain answered (freeBuffer after an await).
    this.#engine.deferMemoryCheck = (check) => setImmediate(this.#runMemoryCheck, check);
    this.#completion = createCompletion(settings.completion, host, settings.completionOptions);
    this.#waitFds = driver.waitFds();
    this.#callFdCount = driver.queues.length;
    this.#errFdCount = driver.errFds.length;
    driver.endpoint.onDisconnect = (error) => this.#fail(error);
    // Backend-initiated requests travel on a separate channel (BACKEND_REQ, not negotiated):
    // anything arriving on this socket unasked breaks the protocol.
    driver.endpoint.onUnsolicited = (message) => {
      for (const fd of message.fds) native.close(fd);
      this.#fail(
        new ProtocolError(`unsolicited message from backend (${describeMessage(message)})`),
      );
    };
    for (const fd of driver.errFds) this.#watchErrFd(fd);
    driver.setDeferredHandler?.(() => this.#runDeferred());
    driver.setFailureHandler?.((error) => this.#fail(error));
    // A worker thread that ends with the device open (falls off its end, calls process.exit(),
    // throws, or is ended by worker.terminate()) leaves nothing behind: fds belong to the process,
    // but the addon closes those its thread still owns as the thread's environment is torn down
    // (native/fds.cc), and the buffers' finalizers unmap the memory. No release from JavaScript at
    // the worker's 'exit' event: it would tell the backend nothing more, and terminate() runs none.
  }

  /** Device size in bytes. */
  get size(): number {
    return this.#engine.limits.capacity;
  }

  /** Logical block size in bytes (I/O of whole aligned blocks avoids read-modify-write). */
  get blockSize(): number {
    return this.#engine.limits.blockSize;
  }

  get readOnly(): boolean {
    return this.#engine.limits.readOnly;
  }

  /** @internal Reports a deferred SCSI error (outside the drain routine). */
  emitDeferredError(error: ScsiSenseError): void {
    process.nextTick(() => this.emit('deferredError', error));
  }

  /** @internal Reports an event from the device's event queue (outside the drain routine). */
  emitDeviceEvent(event: ScsiEvent): void {
    process.nextTick(() => this.emit('event', event));
  }

  /** @internal Gives the bounce buffers kept for reuse back to the allocator. */
  releaseCachedMemory(): void {
    this.#engine.releaseCachedMemory();
  }

  /** @internal The driver learned its limits after open (virtio-scsi identifies the LUN). */
  refreshLimits(): void {
    this.#engine.refreshLimits();
  }

  /** A copy of the counters. */
  get stats(): DeviceStats {
    return { ...this.#stats };
  }

  /** Whether the device can still take I/O. */
  get closed(): boolean {
    return this.#state !== 'open';
  }

  // ---- asynchronous API ----

  /** Reads `length` bytes at `position` into a new Buffer. */
  read(position: number, length: number, options?: IoOptions): Promise<Buffer> {
    let dest: Buffer;
    try {
      checkRange('read', position, length, this.#engine.limits);
      this.#checkOpen();
      checkNewBufferLength('read', length);
      dest = Buffer.allocUnsafe(length);
    } catch (err) {
      return Promise.reject(err);
    }
    const op = this.#readOp(dest, position, length);
    op.returnsBuffer = true;
    return this.#start(op, options) as Promise<Buffer>;
  }

  /** Reads buffer.length bytes at `position` into `buffer`; resolves to the bytes read. */
  readInto(buffer: Uint8Array, position: number, options?: IoOptions): Promise<number> {
    try {
      checkBuffer('readInto', buffer);
      checkRange('readInto', position, buffer.length, this.#engine.limits);
      this.#checkOpen();
    } catch (err) {
      return Promise.reject(err);
    }
    const op = this.#readOp(buffer, position, buffer.length);
    return this.#start(op, options) as Promise<number>;
  }

  /** Writes all of `buffer` at `position`; resolves to the bytes written. */
  write(buffer: Uint8Array, position: number, options?: IoOptions): Promise<number> {
    try {
      this.#checkWrite('write', buffer, position);
    } catch (err) {
      return Promise.reject(err);
    }
    const pooled = this.#writePool.pop();
    const op =
      pooled !== undefined
        ? pooled.init('write', buffer, false, position, buffer.length, this.#settleAsync)
        : this.#pooled(
            new WriteOp(
              this.#engine,
              'write',
              buffer,
              false,
              position,
              buffer.length,
              this.#settleAsync,
            ),
            this.#recycleWrite,
          );
    return this.#start(op, options) as Promise<number>;
  }

  /**
   * Makes completed writes durable (VIRTIO_BLK_T_FLUSH, SYNCHRONIZE CACHE); a no-op on
   * write-through devices.
   */
  async flush(options?: IoOptions): Promise<void> {
    this.#checkOpen();
    if (!this.#engine.limits.canFlush) return;
    await this.#start(new CommandOp(this.#engine, 'flush', 0, 0, this.#settleAsync), options);
  }

  /**
   * Tells the device the range's data is no longer needed. Only whole blocks inside the range
   * are discarded (the range is rounded inward), so no byte outside it is ever touched.
   * Resolves to the bytes actually discarded.
   */
  discard(position: number, length: number, options?: IoOptions): Promise<number> {
    try {
      const range = this.#discardRange(position, length);
      const op = new CommandOp(
        this.#engine,
        'discard',
        range.start,
        range.length,
        this.#settleAsync,
      );
      return this.#start(op, options) as Promise<number>;
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /** Writes zeroes over [position, position + length): VIRTIO_BLK_T_WRITE_ZEROES where possible. */
  writeZeroes(position: number, length: number, options?: IoOptions): Promise<number> {
    try {
      this.#checkWriteRange('writeZeroes', position, length);
    } catch (err) {
      return Promise.reject(err);
    }
    const op = new WriteOp(
      this.#engine,
      'writeZeroes',
      null,
      this.#engine.limits.canWriteZeroes,
      position,
      length,
      this.#settleAsync,
    );
    return this.#start(op, options) as Promise<number>;
  }

  /**
   * The device's serial: VIRTIO_BLK_T_GET_ID, or for virtio-scsi the unit serial number (VPD
   * 0x80) or else the logical unit's designator (VPD 0x83), read when the device was opened.
   */
  getId(options?: IoOptions): Promise<string> {
    try {
      this.#checkOpen();
    } catch (err) {
      return Promise.reject(err);
    }
    const known = this.#driver.knownId?.();
    if (known !== undefined) return Promise.resolve(known);
    return this.#start(new GetIdOp(this.#engine, this.#settleAsync), options) as Promise<string>;
  }

  /**
   * Sends a raw SCSI command (virtio-scsi only) and resolves to its status, data and residual.
   * CHECK CONDITION rejects with ScsiSenseError (after the retries UNIT ATTENTION gets), other
   * non-GOOD statuses with ScsiStatusError, transport failures with VirtioScsiResponseError.
   */
  scsiCommand(cdb: Uint8Array, options: ScsiCommandOptions = {}): Promise<PassThroughResult> {
    options ??= {}; // null is no options
    let op: PassThroughOp;
    try {
      op = this.#passThrough(cdb, options, this.#settleAsync);
    } catch (err) {
      return Promise.reject(err);
    }
    return this.#start(op, options) as Promise<PassThroughResult>;
  }

  /** The blocking twin of scsiCommand. */
  scsiCommandSync(cdb: Uint8Array, options: ScsiCommandSyncOptions = {}): PassThroughResult {
    options ??= {}; // null is no options
    const op = this.#passThrough(cdb, options, this.#settleSync);
    return this.#runSync(op, options) as PassThroughResult;
  }

  #passThrough(
    cdb: Uint8Array,
    options: ScsiCommandSyncOptions,
    settle: OperationCallback,
  ): PassThroughOp {
    this.#checkOpen();
    if (this.info.type !== 'virtio-scsi') {
      throw new UnsupportedError('scsiCommand', 'only virtio-scsi devices take SCSI commands');
    }
    if (!(cdb instanceof Uint8Array) || cdb.length === 0 || cdb.length > this.info.cdbSize) {
      throw new InvalidArgumentError(
        `scsiCommand: cdb must be a Uint8Array of 1..${this.info.cdbSize} bytes`,
      );
    }
    const dataIn = options.dataIn ?? 0;
    if (!Number.isSafeInteger(dataIn) || dataIn < 0) {
      throw new InvalidArgumentError(`scsiCommand: dataIn must be a byte count, got ${dataIn}`);
    }
    if (options.dataOut !== undefined) checkBuffer('scsiCommand', options.dataOut);
    if (dataIn > 0 && options.dataOut !== undefined && options.dataOut.length > 0) {
      throw new InvalidArgumentError('scsiCommand: a command moves data in one direction only');
    }
    for (const [key, max] of [
      ['target', VIRTIO_SCSI_MAX_TARGET],
      ['lun', VIRTIO_SCSI_MAX_LUN],
    ] as const) {
      const v = options[key];
      if (v !== undefined && (!Number.isInteger(v) || v < 0 || v > max)) {
        throw new InvalidArgumentError(`scsiCommand: ${key} must be an integer in 0..${max}`);
      }
    }
    return new PassThroughOp(this.#engine, cdb, dataIn, options.dataOut, settle, {
      target: options.target,
      lun: options.lun,
    });
  }

  // ---- streams ----

  /** A Readable over [start, end] (end inclusive, like fs.createReadStream), reads pipelined. */
  createReadStream(options?: ReadStreamOptions): BlockReadStream {
    return createReadStream(this, options);
  }

  /** A Writable that writes sequentially from `start`, with backpressure; flushes on finish. */
  createWriteStream(options?: WriteStreamOptions): BlockWriteStream {
    return createWriteStream(this, options);
  }

  // ---- shared memory ----

  /**
   * A Buffer in the memory shared with the backend: I/O on it (or on a subarray of it) is
   * zero-copy. It becomes empty (length 0) when the device closes.
   * @throws OutOfMemoryError if no free piece of shared memory is large enough.
   */
  allocBuffer(size: number): Buffer {
    this.#checkOpen();
    if (!Number.isSafeInteger(size) || size <= 0) {
      throw new InvalidArgumentError(`allocBuffer: size must be a positive integer, got ${size}`);
    }
    const allocator = this.#driver.memory.allocator;
    let offset = allocator.alloc(size);
    if (offset < 0 && this.#engine.releaseCachedMemory()) offset = allocator.alloc(size);
    if (offset < 0) throw new OutOfMemoryError(size, allocator.largestFree);
    this.#userBuffers.set(offset, size);
    return Buffer.from(this.#driver.memory.data.buffer, offset, size);
  }

  /**
   * Returns a Buffer from allocBuffer (that Buffer, or a view of the same bytes: not a part of
   * it); do not use it afterwards. If a call still pending uses it, or a request that timed out
   * or was aborted still has the device accessing this memory, the memory is only reused once
   * the call is done and the device gives the request back (until then, a late read may still
   * write into the Buffer).
   */
  freeBuffer(buffer: Buffer | Uint8Array): void {
    checkBuffer('freeBuffer', buffer);
    if (this.#state === 'closed' || this.#state === 'failed') return; // memory already released
    const memory = this.#driver.memory;
    const offset = memory.dataOffsetOf(buffer);
    // The length too: an empty view at a buffer's end starts where the next buffer does.
    if (offset < 0 || this.#userBuffers.get(offset) !== buffer.byteLength) {
      throw new InvalidArgumentError(
        'freeBuffer: not a buffer returned by allocBuffer (a part of one, or already freed)',
      );
    }
    this.#userBuffers.delete(offset);
    this.#deferredFrees.push(offset);
    this.#releaseDeferredFrees();
  }

  /** Frees the returned buffers that no request in flight uses any more. */
  #releaseDeferredFrees(): void {
    // In place, with no closure: this runs after every settle while a free waits (for good, if
    // the device never returns a request it was given up on), so it must allocate nothing.
    const memory = this.#driver.memory;
    const frees = this.#deferredFrees;
    let kept = 0;
    for (let i = 0; i < frees.length; i++) {
      const offset = frees[i]!;
      const size = memory.allocator.sizeOf(offset)!;
      // The device may still access it, or a call not yet answered may still copy from or into
      // it, or submit from it.
      if (
        this.#driver.usesMemory(memory.dataGpa + offset, size) ||
        this.#engine.usesSharedBytes(offset, size)
      ) {
        frees[kept++] = offset;
      } else {
        memory.allocator.free(offset);
      }
    }
    frees.length = kept;
  }

  readonly #deferredFrees: number[] = [];

  // ---- blocking API ----

  /**
   * Reads buffer.length bytes at `position`, blocking the thread until done. Completions of
   * asynchronous requests in flight are processed meanwhile (their callbacks run later).
   */
  readSync(buffer: Uint8Array, position: number, options?: SyncIoOptions): number {
    checkBuffer('readSync', buffer);
    checkRange('readSync', position, buffer.length, this.#engine.limits);
    this.#checkOpen();
    const op = new ReadOp(this.#engine, buffer, position, buffer.length, this.#settleSync);
    return this.#runSync(op, options) as number;
  }

  /** Writes all of `buffer` at `position`, blocking until the device has it. */
  writeSync(buffer: Uint8Array, position: number, options?: SyncIoOptions): number {
    this.#checkWrite('writeSync', buffer, position);
    const op = new WriteOp(
      this.#engine,
      'writeSync',
      buffer,
      false,
      position,
      buffer.length,
      this.#settleSync,
    );
    return this.#runSync(op, options) as number;
  }

  flushSync(options?: SyncIoOptions): void {
    this.#checkOpen();
    if (!this.#engine.limits.canFlush) return;
    this.#runSync(new CommandOp(this.#engine, 'flush', 0, 0, this.#settleSync), options);
  }

  discardSync(position: number, length: number, options?: SyncIoOptions): number {
    const range = this.#discardRange(position, length);
    const op = new CommandOp(this.#engine, 'discard', range.start, range.length, this.#settleSync);
    return this.#runSync(op, options) as number;
  }

  writeZeroesSync(position: number, length: number, options?: SyncIoOptions): number {
    this.#checkWriteRange('writeZeroesSync', position, length);
    const op = new WriteOp(
      this.#engine,
      'writeZeroesSync',
      null,
      this.#engine.limits.canWriteZeroes,
      position,
      length,
      this.#settleSync,
    );
    return this.#runSync(op, options) as number;
  }

  getIdSync(options?: SyncIoOptions): string {
    this.#checkOpen();
    const known = this.#driver.knownId?.();
    if (known !== undefined) return known;
    return this.#runSync(new GetIdOp(this.#engine, this.#settleSync), options) as string;
  }

  // ---- lifecycle ----

  /**
   * Lets the calls still awaited finish (up to `timeout` ms, default the request timeout, or 30 s
   * if that is 0; then they are failed with DeviceClosedError), stops the rings, and releases
   * every fd and mapping. A request whose call a timeout or an abort answered is not waited for:
   * the backend may still carry it out (a write may land) after close resolves.
   * Buffers from allocBuffer become empty. Idempotent.
   */
  close(options?: { timeout?: number }): Promise<void> {
    if (this.#closePromise) return this.#closePromise;
    let timeout: number;
    try {
      timeout =
        checkTimeout('close: timeout', options?.timeout) ??
        (this.#requestTimeoutMs || DEFAULT_REQUEST_TIMEOUT_MS);
    } catch (err) {
      return Promise.reject(err);
    }
    if (this.#state === 'failed' || this.#state === 'closed') {
      this.#closePromise = Promise.resolve();
      return this.#closePromise;
    }
    this.#state = 'closing';
    this.#closePromise = (async () => {
      if (this.#engine.active.size > 0) {
        await new Promise<void>((resolve) => {
          const timer = setTimeout(() => {
            this.#engine.failAll(new DeviceClosedError('device closed with I/O in flight'));
            resolve();
          }, timeout);
          this.#onIdle = () => {
            clearTimeout(timer);
            resolve();
          };
        });
        this.#onIdle = undefined;
      }
      if (this.#state === 'closing') {
        // Closed from here: the backend hanging up as the rings stop (GET_VRING_BASE) is no
        // failure of the device (shutdown copes with it), and 'close' is emitted once.
        this.#state = 'closed';
        this.#teardown();
        await this.#driver.shutdown();
        this.emit('close');
      }
    })();
    return this.#closePromise;
  }

  #onIdle: (() => void) | undefined;

  // ---- internals ----

  #checkOpen(): void {
    if (this.#state === 'open') return;
    if (this.#state === 'failed' && this.#failure) throw this.#failure;
    throw new DeviceClosedError();
  }

  #checkWrite(operation: string, buffer: unknown, position: unknown): void {
    checkBuffer(operation, buffer);
    this.#checkWriteRange(operation, position, (buffer as Uint8Array).length);
  }

  #checkWriteRange(operation: string, position: unknown, length: unknown): void {
    checkRange(operation, position, length, this.#engine.limits);
    this.#checkOpen();
    if (this.readOnly) throw new ReadOnlyError(operation);
  }

  #discardRange(position: number, length: number): { start: number; length: number } {
    this.#checkWriteRange('discard', position, length);
    if (!this.#engine.limits.canDiscard) {
      throw new UnsupportedError('discard', 'the device does not offer VIRTIO_BLK_F_DISCARD');
    }
    const bs = this.blockSize;
    const start = Math.ceil(position / bs) * bs;
    const end = Math.floor((position + length) / bs) * bs;
    return { start, length: Math.max(0, end - start) };
  }

  // ---- pooled operations: the asynchronous read and write paths allocate no objects ----

  readonly #readPool: ReadOp[] = [];
  readonly #writePool: WriteOp[] = [];
  readonly #recycleRead = (op: Operation): void => {
    if (this.#readPool.length < MAX_POOLED_OPERATIONS) this.#readPool.push(op as ReadOp);
  };
  readonly #recycleWrite = (op: Operation): void => {
    if (this.#writePool.length < MAX_POOLED_OPERATIONS) this.#writePool.push(op as WriteOp);
  };

  #readOp(dest: Uint8Array, position: number, length: number): ReadOp {
    const pooled = this.#readPool.pop();
    if (pooled !== undefined) return pooled.init(dest, position, length, this.#settleAsync);
    return this.#pooled(
      new ReadOp(this.#engine, dest, position, length, this.#settleAsync),
      this.#recycleRead,
    );
  }

  #pooled<T extends Operation>(op: T, recycle: (op: Operation) => void): T {
    this.#stats.operationsAllocated++;
    op.recycle = recycle;
    return op;
  }

  /** Answers an asynchronous caller; one function for all operations of this device. */
  readonly #settleAsync: OperationCallback = (op, error) => {
    const caller = op.caller;
    if (caller.timer !== undefined) clearTimeout(caller.timer);
    if (caller.onAbort !== undefined) caller.signal?.removeEventListener('abort', caller.onAbort);
    this.#afterSettle();
    if (error !== null) caller.reject!(error);
    else caller.resolve!(op.result());
  };

  /** Records the outcome of a blocking call; #runSync reads it after the wait. */
  readonly #settleSync: OperationCallback = (op, error) => {
    op.caller.error = error;
  };

  #start(op: Operation, options: IoOptions | undefined): Promise<unknown> {
    const signal = options?.signal;
    let timeout: number | undefined;
    try {
      timeout = checkTimeout('timeout', options?.timeout);
      checkSignal(signal);
    } catch (err) {
      return Promise.reject(err);
    }
    if (signal?.aborted) return Promise.reject(new AbortError(op.name, signal.reason));
    const promise = new Promise<unknown>(captureResolvers);
    const caller = op.caller;
    caller.resolve = capturedResolve;
    caller.reject = capturedReject;
    // The closures live in helpers: a closure made here would give #start a context of its
    // own, which V8 sometimes allocates at every call (56 B), whichever branch runs.
    if (signal !== undefined) this.#abandonOnAbort(op, signal);
    if (timeout !== undefined) {
      this.#abandonAfter(op, timeout);
    } else if (this.#requestTimeoutMs > 0) {
      // No clock read and no map entry per call: the watchdog's next run stamps the deadline.
      caller.deadline = DEADLINE_UNSTAMPED;
      if (this.#watchdog === undefined) this.#startWatchdog();
    }
    const kickNow = this.#beginSubmit();
    try {
      this.#engine.start(op);
    } finally {
      // Even if start threw: what went on the ring is kicked and waited for.
      this.#endSubmit(kickNow);
    }
    // Settled in the call (zero length, or failed at once): nothing to wait for, nothing to
    // keep the process alive for.
    if (op.settled && !this.#awaitedWork) this.#completion.setBusy(false);
    return promise;
  }

  #abandonOnAbort(op: Operation, signal: AbortSignal): void {
    const caller = op.caller;
    caller.signal = signal;
    caller.onAbort = () => this.#abandon(op, new AbortError(op.name, signal.reason));
    signal.addEventListener('abort', caller.onAbort, { once: true });
  }

  #abandonAfter(op: Operation, ms: number): void {
    op.caller.timer = setTimeout(() => this.#abandon(op, new TimeoutError(op.name, ms)), ms);
  }

  /**
   * The engine's out-of-memory decision, a loop turn after nothing was left in flight: the
   * operations may submit now (memory was freed), from idle, so as #start does.
   */
  readonly #runMemoryCheck = (check: () => void): void => {
    if (this.#state === 'failed' || this.#state === 'closed') return;
    const kickNow = this.#beginSubmit();
    try {
      check();
    } finally {
      this.#endSubmit(kickNow);
      this.#afterSettle();
    }
  };

  /**
   * Before a call puts requests on the rings: whether its lone request (the first since the
   * device went idle) is kicked in the call rather than with the batch; #endSubmit after.
   */
  #beginSubmit(): boolean {
    const kickNow = this.#completion.quietKick?.() === true;
    this.#kickingInCall = kickNow;
    return kickNow;
  }

  /** After a call put requests on the rings: kicks what #beginSubmit held, and there is work. */
  #endSubmit(kickNow: boolean): void {
    this.#kickingInCall = false;
    if (kickNow) this.#kickRest();
    this.#completion.setBusy(true);
  }

  #runSync(op: Operation, options: SyncIoOptions | undefined): unknown {
    const timeout = checkTimeout('timeout', options?.timeout) ?? this.#requestTimeoutMs;
    this.#engine.blockingWaits++;
    try {
      this.#engine.start(op);
      this.#waitFor(op, timeout);
    } finally {
      this.#engine.blockingWaits--;
    }
    this.#afterSettle();
    if (op.caller.error !== null) throw op.caller.error;
    return op.result();
  }

  /**
   * The blocking wait: kick, drain, and sleep in poll(2) on the call eventfds, the error
   * eventfds and the socket, until `op` is answered. Every drain runs completion callbacks,
   * so multi-step operations (read-modify-write) advance here, and so do async requests.
   */
  #waitFor(op: Operation, timeoutMs: number): void {
    const deadline = timeoutMs > 0 ? Date.now() + timeoutMs : Infinity;
    const driver = this.#driver;
    const fds = this.#waitFds;
    this.#completion.beforeBlockingWait?.();
    let drained = 0;
    try {
      while (!op.settled) {
        let pending = false;
        for (const queue of driver.queues) {
          drained += this.#drain(queue);
          if (!queue.vq.broken && queue.vq.enableInterrupts()) pending = true;
        }
        // Completions may have let more requests submit: kick before sleeping on them.
        this.#kickInWait();
        if (op.settled) break;
        if (pending) continue;
        const left = deadline === Infinity ? -1 : Math.max(0, deadline - Date.now());
        if (left === 0) {
          this.#abandon(op, new TimeoutError(op.name, timeoutMs));
          continue;
        }
        // Timers do not run during a blocking wait: run due retries here, and wake for the next.
        const deferredMs = driver.runDeferred?.(Date.now()) ?? -1;
        if (deferredMs === 0) continue;
        // What it put on the ring, before sleeping until the next is due.
        this.#kickInWait();
        if (op.settled) continue;
        const sleepMs = deferredMs < 0 ? left : left < 0 ? deferredMs : Math.min(left, deferredMs);
        // Polling strategies spin a while first: cheaper than waking from poll(2).
        const spinNs = this.#completion.blockingSpinNs?.() ?? 0;
        if (
          spinNs > 0 &&
          spinForUsed(
            driver.queues,
            sleepMs < 0 ? spinNs : Math.min(spinNs, sleepMs * 1e6),
            this.#completion.spinYield?.(),
          )
        ) {
          continue;
        }
        const ready = native.waitReadable(fds, sleepMs);
        if (ready === 0) continue;
        // Past the mask's last bit (many queues), that bit stands for every later fd: each is
        // read without blocking, so one that is not ready costs a failed read.
        for (let i = 0; i < this.#callFdCount; i++) {
          if (isReady(ready, i) && native.eventfdRead(fds[i]!) > 0) this.#stats.calls++;
        }
        for (let i = 0; i < this.#errFdCount; i++) {
          const index = this.#callFdCount + i;
          if (isReady(ready, index)) this.#onErrFd(fds[index]!);
        }
        if (isReady(ready, fds.length - 1)) driver.endpoint.readAvailable();
      }
    } finally {
      this.#completion.afterBlockingWait?.(drained);
    }
  }

  /** The single drain routine every completion strategy and blocking wait goes through. */
  #drain(queue: DeviceQueue): number {
    if (this.#state === 'failed' || this.#state === 'closed') return 0;
    let drained: number;
    try {
      drained = queue.drain();
    } catch (err) {
      this.#fail(toError(err));
      return 0;
    }
    if (this.#deferredFrees.length > 0) this.#releaseDeferredFrees();
    this.#engine.pump();
    // A drain may put chains on the ring itself (virtio-scsi retries that waited for
    // descriptors), not through the engine's submissions, which schedule their kick.
    if (!this.#kickScheduled && queue.vq.awaitingKick) this.#scheduleKick();
    this.#afterSettle();
    return drained;
  }

  /**
   * Requests in flight or waiting that a caller still awaits. Not those a timeout or an abort
   * answered, which the device may keep for good: they are drained with the next requests, and
   * neither keep a strategy polling nor the process alive, nor hold close() up.
   */
  get #awaitedWork(): boolean {
    return this.#engine.active.size > 0 && this.#engine.busy;
  }

  #afterSettle(): void {
    // A buffer freed while this call used it (a call answered outside a drain: a timeout).
    if (this.#deferredFrees.length > 0) this.#releaseDeferredFrees();
    this.#completion.setBusy(this.#awaitedWork);
    if (this.#engine.active.size === 0) this.#onIdle?.();
  }

  /**
   * Requests went on the ring. A burst (what this tick and its microtasks submit) costs up to two
   * kicks per queue: its first request's, at once (every queue given requests since the last
   * kick is kicked then; a queue first given one later in the burst waits for its end), so that
   * the device starts on it while the rest are made (a
   * device still at work when the next ones go on the ring takes them without a kick), and one
   * for the rest at its end (process.nextTick, or the end of the strategy's callback that
   * settled what made it: endBurst); three from idle, where the first request is
   * kicked in its call (quietKick) and the second opens the burst. A run of looks (poll.ts) kicks
   * the rest of each burst its continuations make when they return (kickPending), so that run's
   * later bursts are kicked then, not at once. With the whole burst kicked at its end, the device
   * sat idle while it was made: at depth 32 on qemu-storage-daemon's null-co, 'event' made 45%
   * and 'adaptive' 86% (medians) of the IOPS they make so (BENCHMARKS.md). Each kick obeys the
   * device's notification suppression (kickIfNeeded).
   */
  #scheduleKick(): void {
    this.#kickScheduled = true;
    // In a call that kicks at its end (#start) a nextTick would be work and garbage for nothing;
    // in an open burst, the burst's #batchKick is queued already.
    if (this.#kickingInCall || this.#burstOpen) return;
    this.#burstOpen = true;
    if (!this.#burstEndedByStrategy) process.nextTick(this.#batchKick);
    this.#kickNow();
  }

  readonly #batchKick = (): void => {
    this.#burstOpen = false;
    this.#kickRest();
  };

  /** Kicks what went on the ring since the last kick, if anything did. */
  #kickRest(): void {
    if (this.#kickScheduled) this.#kickNow();
  }

  #kickNow(): void {
    this.#kickScheduled = false;
    this.#kickDevice();
  }

  /**
   * Notifies the device of what went on its rings. Kicks run inside submissions, the engine's
   * pump and drains (a burst's first request), and from timers: one that fails (the kick eventfd
   * unusable) fails the device, as a drain that finds a broken ring does, rather than throwing
   * out of whichever call got there; at the next tick, not inside a drain still reading the
   * rings that failing unmaps.
   */
  #kickDevice(): void {
    const known = this.#kickError !== undefined;
    const error = this.#tryKick();
    if (error !== undefined && !known) process.nextTick(() => this.#fail(error));
  }

  /**
   * A blocking wait's kick: one that fails fails the device at once, which settles the awaited
   * request; so does one that failed earlier in the wait or in the call that began it (a kick
   * inside a drain or a submission), whose deferred failure waits for a tick that does not run
   * during the wait. The ring counts a chain kicked once the kick is tried, so nothing would try
   * again: the wait would sleep to its timeout, or for good without one.
   */
  #kickInWait(): void {
    this.#kickScheduled = false;
    this.#tryKick();
    if (this.#kickError !== undefined) this.#fail(this.#kickError);
  }

  /** Kicks the device if it is still in use; a failure is kept (the first) and returned. */
  #tryKick(): Error | undefined {
    if (this.#state !== 'open' && this.#state !== 'closing') return undefined;
    try {
      this.#driver.kick();
      return undefined;
    } catch (err) {
      return (this.#kickError ??= kickFailed(err));
    }
  }

  /**
   * Every interval: stamps the deadline of calls made since the last run (now + the request
   * timeout, so never early) and fails those whose deadline has passed. A call thus fails up to
   * two intervals after its timeout, later only if the event loop was blocked right after it.
   */
  #startWatchdog(): void {
    if (this.#watchdog !== undefined) return;
    this.#watchdog = setInterval(() => {
      const now = performance.now();
      let waiting = 0;
      for (const op of this.#engine.active.snapshot()) {
        // Answered earlier in this pass (a snapshot, unlike a Set, still holds it).
        if (op.settled) continue;
        const caller = op.caller;
        if (caller.deadline === 0) continue;
        if (caller.deadline === DEADLINE_UNSTAMPED) {
          caller.deadline = now + this.#requestTimeoutMs;
          waiting++;
        } else if (caller.deadline <= now) {
          this.#abandon(op, new TimeoutError(op.name, this.#requestTimeoutMs));
        } else {
          waiting++;
        }
      }
      if (waiting === 0) {
        clearInterval(this.#watchdog);
        this.#watchdog = undefined;
      }
    }, WATCHDOG_INTERVAL_MS);
    this.#watchdog.unref();
  }

  /** Answers the caller now and lets the driver ask the device to abort what is in flight. */
  #abandon(op: Operation, error: Error): void {
    if (op.settled) return;
    op.abort(error);
    if (this.#state === 'failed' || this.#state === 'closed') return;
    if (op.inFlight > 0) {
      this.#driver.abandon?.(op);
      this.#kickDevice();
    }
    this.#afterSettle();
  }

  /** A retry's backoff has passed (driver timer): resubmit and kick. */
  #runDeferred(): void {
    if (this.#state === 'failed' || this.#state === 'closed') return;
    this.#driver.runDeferred?.(Date.now());
    this.#kickDevice();
  }

  #errPolls: ReturnType<typeof native.pollStart>[] = [];

  #watchErrFd(fd: number): void {
    const poll = native.pollStart(fd, UV_READABLE, () => this.#onErrFd(fd));
    native.pollRef(poll, false);
    this.#errPolls.push(poll);
  }

  #onErrFd(fd: number): void {
    // A blocking wait that woke for several of them: the first failed the device and closed
    // every fd, so the next read would be of a closed fd (EBADF) or of another file's.
    if (this.#state === 'failed' || this.#state === 'closed') return;
    if (native.eventfdRead(fd) > 0) {
      const queue = this.#driver.errFds.indexOf(fd);
      this.#fail(
        new QueueBrokenError(queue, 'backend signalled an error on the SET_VRING_ERR eventfd'),
      );
    }
  }

  /** The backend is gone or broke the rules: fail everything, release everything, once. */
  #fail(error: Error): void {
    if (this.#state === 'failed' || this.#state === 'closed') return;
    this.#state = 'failed';
    this.#failure = error;
    for (const queue of this.#driver.queues) queue.abandonAll(error);
    this.#engine.failAll(error);
    this.#teardown();
    this.#driver.destroy();
    this.#onIdle?.();
    // An 'error' event with no listener would throw and crash the process; callers with no
    // listener learn of the failure from their next call instead.
    if (this.listenerCount('error') > 0) this.emit('error', error);
    this.emit('close');
  }

  #teardown(): void {
    this.#completion.stop();
    for (const poll of this.#errPolls) native.pollStop(poll);
    this.#errPolls = [];
    if (this.#watchdog !== undefined) clearInterval(this.#watchdog);
    this.#watchdog = undefined;
    this.#userBuffers.clear();
  }
}

/*
 * A Promise executor shared by every call, so that creating the caller's Promise allocates no
 * closure of our own: the executor runs synchronously and leaves the resolvers here.
 */
let capturedResolve: ((value: unknown) => void) | undefined;
let capturedReject: ((error: Error) => void) | undefined;
function captureResolvers(resolve: (value: unknown) => void, reject: (error: Error) => void): void {
  capturedResolve = resolve;
  capturedReject = reject;
}

/** Whether waitReadable's mask says fds[index] may be readable. */
function isReady(mask: number, index: number): boolean {
  return (mask & (1 << Math.min(index, WAIT_MASK_LAST_BIT))) !== 0;
}

/** A kick (a write to the device's kick eventfd) failed: the device cannot be told of requests. */
function kickFailed(cause: unknown): SystemError {
  return new SystemError('cannot notify the device (write to its kick eventfd)', cause);
}
