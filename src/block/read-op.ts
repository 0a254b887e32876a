import { copyBytes } from '../memory/copy-bytes.js';
import { bufferGone, Operation, type BlockEngine, type OperationCallback } from './engine.js';
import type { BlockRequest } from './request.js';

/**
 * Reads [position, position + length) into `dest`. The device range is widened to whole blocks;
 * data goes straight into `dest` when it lives in shared memory and the range is aligned,
 * otherwise through bounce buffers, copied out as each request completes.
 */
const EMPTY = new Uint8Array(0);

export class ReadOp extends Operation {
  #dest!: Uint8Array;
  #position = 0;
  #length = 0;
  #end = 0;
  #cursor = 0;
  /** Offset of dest in the data region when it lies there, else -1. */
  #sharedOffset = -1;
  /** GPA of dest when it can be read into directly, else -1. */
  #directGpa = -1;
  /** Resolve with the destination Buffer instead of the byte count (dev.read). */
  returnsBuffer = false;

  constructor(
    engine: BlockEngine,
    dest: Uint8Array,
    position: number,
    length: number,
    callback: OperationCallback,
  ) {
    super(engine, 'read', callback);
    this.#setUp(dest, position, length);
  }

  /** Reuses a recycled ReadOp for a new read (pooled operations allocate nothing per call). */
  init(dest: Uint8Array, position: number, length: number, callback: OperationCallback): this {
    this.reset('read', callback);
    this.returnsBuffer = false;
    this.#setUp(dest, position, length);
    return this;
  }

  protected override dropReferences(): void {
    this.#dest = EMPTY;
  }

  #setUp(dest: Uint8Array, position: number, length: number): void {
    const engine = this.engine;
    const bs = engine.limits.blockSize;
    this.#dest = dest;
    this.#position = position;
    this.#length = length;
    this.#cursor = Math.floor(position / bs) * bs;
    this.#end = Math.ceil((position + length) / bs) * bs;
    const offset = engine.memory.dataOffsetOf(dest);
    this.#sharedOffset = offset;
    this.#directGpa =
      offset >= 0 && position % bs === 0 && length % bs === 0 ? engine.memory.dataGpa + offset : -1;
    if (length === 0) this.pending = false;
  }

  override usesSharedBytes(offset: number, size: number): boolean {
    const own = this.#sharedOffset;
    return own >= 0 && own < offset + size && offset < own + this.#length;
  }

  result(): unknown {
    return this.returnsBuffer ? this.#dest : this.#length;
  }

  /** Shared by every request of every ReadOp: the operation is the request's owner. */
  static #onRequestDone(request: BlockRequest, error: Error | null): void {
    (request.owner as ReadOp).#requestDone(request, error);
  }

  pump(): boolean {
    const engine = this.engine;
    while (this.#cursor < this.#end) {
      const direct = this.#directGpa >= 0;
      let len = Math.min(
        this.#end - this.#cursor,
        direct ? engine.maxRequestBytes : engine.bounceChunkBytes,
      );
      const request = engine.getRequest();
      if (!direct) {
        const bounce = engine.allocBounce(len);
        if (bounce < 0) {
          engine.putRequest(request);
          return false;
        }
        len = engine.bounceSize;
        request.bounceOffset = bounce;
        request.dataGpa = engine.memory.dataGpa + bounce;
      } else {
        request.dataGpa = this.#directGpa + (this.#cursor - this.#position);
      }
      request.kind = 'read';
      request.position = this.#cursor;
      request.length = len;
      request.onComplete = ReadOp.#onRequestDone;
      request.owner = this;
      if (!engine.driver.trySubmit(request)) {
        if (request.bounceOffset >= 0) engine.freeBounce(request.bounceOffset);
        engine.putRequest(request);
        return false;
      }
      this.inFlight++;
      this.#cursor += len;
    }
    this.pending = false;
    return true;
  }

  #requestDone(request: BlockRequest, error: Error | null): void {
    this.inFlight--;
    const engine = this.engine;
    if (request.bounceOffset >= 0) {
      // Copy out only while the caller still waits: after an abort, dest may be reused.
      if (error === null && this.error === null && !this.settled) {
        if (this.#dest.length !== this.#length) {
          error = bufferGone(this.name);
        } else {
          this.#copyOut(request);
        }
      }
      engine.freeBounce(request.bounceOffset);
    }
    engine.putRequest(request);
    if (error !== null) this.fail(error);
    else this.maybeFinish();
  }

  /** Copies a completed bounce buffer's bytes that fall in the caller's range into dest. */
  #copyOut(request: BlockRequest): void {
    const engine = this.engine;
    const from = Math.max(request.position, this.#position);
    const to = Math.min(request.position + request.length, this.#position + this.#length);
    const src = request.bounceOffset + (from - request.position);
    copyBytes(engine.memory.dataBytes, src, this.#dest, from - this.#position, to - from);
    engine.stats.bytesBounced += to - from;
  }
}
