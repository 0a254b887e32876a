import { Operation, type BlockEngine, type OperationCallback } from './engine.js';
import type { BlockRequest } from './request.js';
import type { RangeLockEntry } from './range-lock.js';
import { VIRTIO_BLK_ID_BYTES } from '../devices/blk/spec.js';

/**
 * Requests without data buffers: FLUSH (one request) and DISCARD (the range cut into requests of
 * at most maxDiscardBytes). The caller has already rounded a discard range inward to blocks.
 */
export class CommandOp extends Operation {
  readonly #kind: 'flush' | 'discard';
  // Positions initialized, not only declared: see RangeLockEntry.
  readonly #end: number = 0;
  readonly #maxBytes: number = 0;
  readonly #length: number = 0;
  readonly #start: number = 0;
  #cursor = 0;
  static #onDone(request: BlockRequest, error: Error | null): void {
    const op = request.owner as CommandOp;
    op.inFlight--;
    op.engine.putRequest(request);
    if (error !== null) op.fail(error);
    else op.maybeFinish();
  }

  constructor(
    engine: BlockEngine,
    kind: 'flush' | 'discard',
    position: number,
    length: number,
    callback: OperationCallback,
  ) {
    super(engine, kind, callback);
    this.#kind = kind;
    this.#start = position;
    this.#cursor = position;
    this.#length = length;
    this.#end = position + length;
    this.#maxBytes = kind === 'discard' ? engine.limits.maxDiscardBytes : 0;
    if (kind === 'discard' && length === 0) this.pending = false;
  }

  override lockEntry(): RangeLockEntry | undefined {
    if (this.#kind !== 'discard') return undefined;
    const entry = this.rangeEntry();
    entry.start = this.#start;
    entry.end = this.#end;
    entry.exclusive = false;
    return entry;
  }

  result(): unknown {
    return this.#length;
  }

  pump(): boolean {
    do {
      const request = this.engine.getRequest();
      request.kind = this.#kind;
      request.position = this.#cursor;
      request.length = Math.min(this.#end - this.#cursor, this.#maxBytes);
      request.dataGpa = 0;
      request.onComplete = CommandOp.#onDone;
      request.owner = this;
      if (!this.engine.driver.trySubmit(request)) {
        this.engine.putRequest(request);
        return false;
      }
      this.inFlight++;
      this.#cursor += request.length;
    } while (this.#cursor < this.#end);
    this.pending = false;
    return true;
  }
}

/** VIRTIO_BLK_T_GET_ID: the device's serial, up to 20 bytes, NUL-terminated if shorter. */
export class GetIdOp extends Operation {
  id = '';
  readonly #onDone = (request: BlockRequest, error: Error | null): void => {
    this.inFlight--;
    const bytes = this.engine.memory.dataBytes;
    if (error === null) {
      const raw = bytes.subarray(request.bounceOffset, request.bounceOffset + VIRTIO_BLK_ID_BYTES);
      const nul = raw.indexOf(0);
      this.id = Buffer.from(nul < 0 ? raw : raw.subarray(0, nul)).toString('latin1');
    }
    this.engine.freeBounce(request.bounceOffset);
    this.engine.putRequest(request);
    if (error !== null) this.fail(error);
    else this.maybeFinish();
  };

  constructor(engine: BlockEngine, callback: OperationCallback) {
    super(engine, 'get-id', callback);
  }

  result(): unknown {
    return this.id;
  }

  pump(): boolean {
    const bounce = this.engine.allocBounce(VIRTIO_BLK_ID_BYTES);
    if (bounce < 0) return false;
    // Zeroed first: a device may write fewer than 20 bytes without a terminator.
    this.engine.memory.dataBytes.fill(0, bounce, bounce + VIRTIO_BLK_ID_BYTES);
    const request = this.engine.getRequest();
    request.kind = 'get-id';
    request.position = 0;
    request.length = VIRTIO_BLK_ID_BYTES;
    request.dataGpa = this.engine.memory.dataGpa + bounce;
    request.bounceOffset = bounce;
    request.onComplete = this.#onDone;
    request.owner = this;
    if (!this.engine.driver.trySubmit(request)) {
      this.engine.freeBounce(bounce);
      this.engine.putRequest(request);
      return false;
    }
    this.inFlight++;
    this.pending = false;
    return true;
  }
}
