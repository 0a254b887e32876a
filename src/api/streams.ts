import { setMaxListeners } from 'node:events';
import { Readable, Writable } from 'node:stream';
import { InvalidArgumentError, OutOfRangeError } from '../errors.js';
import type { BlockDevice } from './block-device.js';
import { toError } from '../util/to-error.js';

/** What the streams need from a device (a BlockDevice, or a stand-in in tests). */
export type StreamDevice = Pick<
  BlockDevice,
  'size' | 'blockSize' | 'readInto' | 'write' | 'flush' | 'allocBuffer' | 'freeBuffer'
>;

export interface ReadStreamOptions {
  /** First byte to read. Default 0. */
  start?: number;
  /** Last byte to read, inclusive (as in fs.createReadStream). Default: the last byte of the device. */
  end?: number;
  /** Bytes per chunk, and how much the stream buffers before it stops reading. Default 512 KiB. */
  highWaterMark?: number;
  /** Reads in flight at once (read-ahead). Default 4. */
  depth?: number;
  /** Destroys the stream (with an AbortError) when the signal fires. */
  signal?: AbortSignal;
}

export interface WriteStreamOptions {
  /** Device position of the first byte written. Default 0. */
  start?: number;
  /**
   * Bytes per device write (rounded down to whole blocks, at least one), and how much write()
   * buffers before it returns false. Default 512 KiB.
   */
  highWaterMark?: number;
  /** Writes in flight at once. Default 4. */
  depth?: number;
  /** Flush the device's write cache before 'finish'. Default true. */
  flush?: boolean;
  signal?: AbortSignal;
}

const DEFAULT_CHUNK = 512 * 1024;
const DEFAULT_DEPTH = 4;
/** One device request per chunk: the library caps a request at 1 GiB. */
const MAX_CHUNK = 1 << 30;

function checkInteger(name: string, value: unknown, min: number, max: number): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min || value > max) {
    throw new InvalidArgumentError(
      `${name} must be an integer in ${min}..${max}, got ${String(value)}`,
    );
  }
  return value;
}

/**
 * A Readable over [start, end] of the device. Up to `depth` reads run ahead of the consumer;
 * when the consumer stops pulling (backpressure), no new reads are issued until it resumes.
 */
export class BlockReadStream extends Readable {
  /** Bytes delivered to the consumer so far. */
  bytesRead = 0;
  readonly start: number;
  /** Inclusive, as given (or defaulted). */
  readonly end: number;
  readonly #dev: StreamDevice;
  readonly #chunk: number;
  readonly #depth: number;
  readonly #stop: number;
  readonly #abort = new AbortController();
  readonly #queue: { buffer: Buffer; done: boolean }[] = [];
  #next = 0;
  #wanted = false;
  #ended = false;

  constructor(dev: StreamDevice, options: ReadStreamOptions = {}) {
    options ??= {}; // null is no options, as for fs.create*Stream
    const chunk = checkInteger(
      'highWaterMark',
      options.highWaterMark ?? DEFAULT_CHUNK,
      1,
      MAX_CHUNK,
    );
    super({ highWaterMark: chunk, ...(options.signal ? { signal: options.signal } : {}) });
    this.#dev = dev;
    this.#chunk = chunk;
    this.#depth = checkInteger('depth', options.depth ?? DEFAULT_DEPTH, 1, 1024);
    // Each read in flight listens on the signal: more than 10 is no leak, no warning.
    setMaxListeners(Math.max(10, this.#depth + 1), this.#abort.signal);
    this.start = checkInteger('start', options.start ?? 0, 0, Number.MAX_SAFE_INTEGER);
    this.end = checkInteger('end', options.end ?? dev.size - 1, -1, Number.MAX_SAFE_INTEGER);
    // A defaulted end is not the caller's mistake: a start past the device is (_construct).
    if (this.end < this.start - 1 && options.end !== undefined) {
      throw new InvalidArgumentError(`end (${this.end}) is before start (${this.start})`);
    }
    this.#next = this.start;
    this.#stop = this.end + 1;
  }

  override _construct(callback: (error?: Error | null) => void): void {
    // Past the device is a stream error rather than a throw, like a read failing later would be.
    if (this.start > this.#dev.size) {
      callback(
        new OutOfRangeError(
          `read stream: start ${this.start} is past the end of the device (${this.#dev.size} bytes)`,
        ),
      );
      return;
    }
    if (this.#stop > this.#dev.size) {
      callback(
        new OutOfRangeError(
          `read stream: range ${this.start}..${this.end} is past the end of the device (${this.#dev.size} bytes)`,
        ),
      );
      return;
    }
    callback();
  }

  override _read(): void {
    this.#wanted = true;
    this.#pump();
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.#abort.abort();
    callback(error);
  }

  #pump(): void {
    // Deliver in order: a later chunk may complete before an earlier one.
    while (this.#wanted && this.#queue[0]?.done) {
      const { buffer } = this.#queue.shift()!;
      this.bytesRead += buffer.length;
      this.#wanted = this.push(buffer);
    }
    if (this.#queue.length === 0 && this.#next >= this.#stop) {
      if (!this.#ended) {
        this.#ended = true;
        this.push(null);
      }
      return;
    }
    if (!this.#wanted) return;
    while (this.#queue.length < this.#depth && this.#next < this.#stop) {
      const length = Math.min(this.#chunk, this.#stop - this.#next);
      const entry = { buffer: Buffer.allocUnsafe(length), done: false };
      this.#queue.push(entry);
      const position = this.#next;
      this.#next += length;
      this.#dev.readInto(entry.buffer, position, { signal: this.#abort.signal }).then(
        () => {
          entry.done = true;
          if (!this.destroyed) this.#pump();
        },
        (err: unknown) => {
          if (!this.destroyed) this.destroy(toError(err));
        },
      );
    }
  }
}

/**
 * A Writable that writes its bytes to the device sequentially from `start`. Chunks of any size
 * are gathered into buffers of `highWaterMark` bytes in shared memory (so the device write is
 * zero-copy), up to `depth` of them in flight. Every buffer ends on a block boundary (what does
 * not fit goes into the next one), so only the stream's unaligned start and end cost a
 * read-modify-write, not every buffer. 'finish' comes after every write completed and (unless
 * flush: false) the device flushed.
 */
export class BlockWriteStream extends Writable {
  /** Bytes the device has acknowledged. */
  bytesWritten = 0;
  readonly start: number;
  readonly #dev: StreamDevice;
  readonly #chunk: number;
  /** Size of each staging buffer: highWaterMark, or one block if that is more. */
  readonly #bufferSize: number;
  readonly #depth: number;
  readonly #flush: boolean;
  readonly #abort = new AbortController();
  readonly #pool: Buffer[] = [];
  readonly #inflight = new Set<Promise<void>>();
  #staging: { buffer: Buffer; used: number; capacity: number } | undefined;
  #position = 0;
  #failure: Error | undefined;
  #wake: (() => void) | undefined;

  constructor(dev: StreamDevice, options: WriteStreamOptions = {}) {
    options ??= {}; // null is no options, as for fs.create*Stream
    const chunk = checkInteger(
      'highWaterMark',
      options.highWaterMark ?? DEFAULT_CHUNK,
      1,
      MAX_CHUNK,
    );
    super({
      highWaterMark: chunk,
      decodeStrings: true,
      ...(options.signal ? { signal: options.signal } : {}),
    });
    this.#dev = dev;
    this.#chunk = chunk;
    this.#bufferSize = Math.max(chunk, dev.blockSize);
    this.#depth = checkInteger('depth', options.depth ?? DEFAULT_DEPTH, 1, 1024);
    // Each write in flight (then the flush) listens on the signal: more than 10 is no leak.
    setMaxListeners(Math.max(10, this.#depth + 1), this.#abort.signal);
    this.#flush = options.flush ?? true;
    this.start = checkInteger('start', options.start ?? 0, 0, Number.MAX_SAFE_INTEGER);
    this.#position = this.start;
  }

  override _construct(callback: (error?: Error | null) => void): void {
    if (this.start > this.#dev.size) {
      callback(
        new OutOfRangeError(
          `write stream: start ${this.start} is past the end of the device (${this.#dev.size} bytes)`,
        ),
      );
      return;
    }
    callback();
  }

  override _write(
    chunk: Buffer,
    _encoding: BufferEncoding,
    callback: (error?: Error | null) => void,
  ): void {
    this.#consume(chunk).then(() => callback(), callback);
  }

  override _final(callback: (error?: Error | null) => void): void {
    (async () => {
      if (this.#failure) throw this.#failure;
      if (this.#staging && this.#staging.used > 0) {
        // A partial last buffer is written with a read-modify-write, whose edge blocks need
        // bounce memory: give back the buffers no longer needed first (they may hold it all).
        while (this.#inflight.size > 0) await Promise.race(this.#inflight);
        if (this.#failure) throw this.#failure;
        this.#releasePool();
        this.#submit();
      }
      while (this.#inflight.size > 0) await Promise.race(this.#inflight);
      if (this.#failure) throw this.#failure;
      if (this.#flush) await this.#dev.flush({ signal: this.#abort.signal });
      this.#releasePool();
    })().then(() => callback(), callback);
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.#abort.abort();
    if (this.#staging) this.#pool.push(this.#staging.buffer);
    this.#staging = undefined;
    this.#releasePool();
    callback(error);
  }

  /** Copies the chunk into staging buffers, submitting each one as it fills. */
  async #consume(chunk: Buffer): Promise<void> {
    let offset = 0;
    while (offset < chunk.length) {
      if (this.#failure) throw this.#failure;
      if (!this.#staging) {
        // Waiting here is the backpressure: write() callbacks stall while `depth` writes run.
        while (this.#inflight.size >= this.#depth && !this.#failure) {
          await new Promise<void>((resolve) => (this.#wake = resolve));
        }
        if (this.#failure) throw this.#failure;
        const buffer = await this.#takeBuffer();
        if (this.destroyed) {
          // _destroy ran meanwhile (a write failed, or the application destroyed the stream)
          // and released what it knew of: this one is ours to free.
          this.#free(buffer);
          if (this.#failure) throw this.#failure;
          return;
        }
        this.#staging = { buffer, used: 0, capacity: this.#capacity() };
      }
      const staging = this.#staging;
      const n = Math.min(chunk.length - offset, staging.capacity - staging.used);
      chunk.copy(staging.buffer, staging.used, offset, offset + n);
      staging.used += n;
      offset += n;
      if (staging.used === staging.capacity) this.#submit();
    }
  }

  /**
   * Bytes for the next staging buffer: up to highWaterMark, ending on a block boundary, so that
   * the next buffer starts on one and the device never reads back a block the stream writes
   * whole. A highWaterMark under a block still fills up to the next boundary.
   */
  #capacity(): number {
    const bs = this.#dev.blockSize;
    const end = Math.floor((this.#position + this.#chunk) / bs) * bs;
    return end > this.#position ? end - this.#position : bs - (this.#position % bs);
  }

  async #takeBuffer(): Promise<Buffer> {
    for (;;) {
      const pooled = this.#pool.pop();
      if (pooled) return pooled;
      try {
        return this.#dev.allocBuffer(this.#bufferSize);
      } catch (err) {
        if ((err as { code?: unknown }).code !== 'VHOST_USER_ERR_NO_MEMORY') throw err;
      }
      // Shared memory is full. While our writes in flight hold some, wait for one's buffer: a
      // plain Buffer would need a bounce buffer, and once they are done and pooled nothing would
      // be left for it (OutOfMemoryError). Holding none, the memory is other users': bounce.
      if (this.#inflight.size === 0 || this.#failure) return Buffer.allocUnsafe(this.#bufferSize);
      await new Promise<void>((resolve) => (this.#wake = resolve));
    }
  }

  #submit(): void {
    const staging = this.#staging!;
    this.#staging = undefined;
    const position = this.#position;
    this.#position += staging.used;
    const data = staging.buffer.subarray(0, staging.used);
    const write: Promise<void> = this.#dev
      .write(data, position, { signal: this.#abort.signal })
      .then(
        (written) => {
          this.bytesWritten += written;
        },
        (err: unknown) => {
          const error = toError(err);
          if (!this.#failure) this.#failure = error;
          // Report at once, even if the producer is not writing right now.
          if (!this.destroyed) this.destroy(error);
        },
      )
      .finally(() => {
        this.#inflight.delete(write);
        if (this.destroyed) this.#free(staging.buffer);
        else this.#pool.push(staging.buffer);
        const wake = this.#wake;
        this.#wake = undefined;
        wake?.();
      });
    this.#inflight.add(write);
  }

  #releasePool(): void {
    for (const buffer of this.#pool.splice(0)) this.#free(buffer);
  }

  #free(buffer: Buffer): void {
    try {
      this.#dev.freeBuffer(buffer);
    } catch {
      // A plain Buffer from the fallback path: nothing to return.
    }
  }
}

/** fs.createReadStream for a device: bytes start..end (inclusive) as Buffer chunks. */
export function createReadStream(dev: StreamDevice, options?: ReadStreamOptions): BlockReadStream {
  return new BlockReadStream(dev, options);
}

/** fs.createWriteStream for a device: bytes written go to start, start + 1, ... */
export function createWriteStream(
  dev: StreamDevice,
  options?: WriteStreamOptions,
): BlockWriteStream {
  return new BlockWriteStream(dev, options);
}
