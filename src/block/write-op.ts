import { copyBytes } from '../memory/copy-bytes.js';
import { bufferGone, Operation, type BlockEngine, type OperationCallback } from './engine.js';
import type { BlockRequest, BlockRequestKind } from './request.js';
import type { RangeLockEntry } from './range-lock.js';

/** A stretch of the block-aligned device range and how its bytes are produced. */
interface Piece {
  position: number;
  length: number;
  /** 'edge': a merged edge block already in `bounce`; 'data': from the source; 'zeroes': WRITE_ZEROES. */
  kind: 'edge' | 'data' | 'zeroes';
  bounce: number;
}

/**
 * Writes bytes (or zeroes) at any byte position. Whole blocks are written directly; partial
 * edge blocks are read, merged and written back (read-modify-write) under an exclusive lock on
 * the operation's block range, so concurrent overlapping writes cannot lose each other's bytes.
 * Objects are reusable (init) so that a pooled write allocates nothing.
 */
export class WriteOp extends Operation {
  /** Bytes to write, or null for zeroes. */
  #data: Uint8Array | null = null;
  /** Use the device's WRITE_ZEROES for whole blocks of zeroes instead of writing zero buffers. */
  #deviceZeroes = false;
  #position = 0;
  #length = 0;
  #start = 0;
  #end = 0;
  #unaligned = false;
  /**
   * Edge blocks being read before the write phase (the head and tail pieces below), and the
   * pieces to write: the first #edgeCount / #pieceCount elements of arrays that never shrink. An
   * array emptied by `length = 0` gives up its backing store, and the next push allocates one
   * (152 B a write, measured).
   */
  readonly #edges: Piece[] = [];
  #edgeCount = 0;
  #edgesToSubmit = 0;
  #edgesToRead = 0;
  readonly #pieces: Piece[] = [];
  #pieceCount = 0;
  #piece = 0;
  #pieceCursor = 0;
  readonly #head: Piece = { position: 0, length: 0, kind: 'edge', bounce: -1 };
  readonly #tail: Piece = { position: 0, length: 0, kind: 'edge', bounce: -1 };
  readonly #middle: Piece = { position: 0, length: 0, kind: 'data', bounce: -1 };
  /** Offset of the source in the data region when it lies there, else -1. */
  #sharedOffset = -1;
  /** GPA of the source when it lives in shared memory, else -1. */
  #directGpa = -1;
  /** Shared completion handlers: the operation is the request's owner. */
  static #onEdgeRead(request: BlockRequest, error: Error | null): void {
    (request.owner as WriteOp).#edgeRead(request, error);
  }

  static #onWritten(request: BlockRequest, error: Error | null): void {
    (request.owner as WriteOp).#written(request, error);
  }

  constructor(
    engine: BlockEngine,
    name: string,
    data: Uint8Array | null,
    deviceZeroes: boolean,
    position: number,
    length: number,
    callback: OperationCallback,
  ) {
    super(engine, name, callback);
    this.#setUp(data, deviceZeroes, position, length);
  }

  /** Reuses a recycled WriteOp for a new write. */
  init(
    name: string,
    data: Uint8Array | null,
    deviceZeroes: boolean,
    position: number,
    length: number,
    callback: OperationCallback,
  ): this {
    this.reset(name, callback);
    this.#setUp(data, deviceZeroes, position, length);
    return this;
  }

  protected override dropReferences(): void {
    this.#data = null;
  }

  #setUp(data: Uint8Array | null, deviceZeroes: boolean, position: number, length: number): void {
    const engine = this.engine;
    const bs = engine.limits.blockSize;
    this.#data = data;
    this.#deviceZeroes = deviceZeroes;
    this.#position = position;
    this.#length = length;
    this.#start = Math.floor(position / bs) * bs;
    this.#end = Math.ceil((position + length) / bs) * bs;
    this.#unaligned = position % bs !== 0 || length % bs !== 0;
    const offset = data === null ? -1 : engine.memory.dataOffsetOf(data);
    this.#sharedOffset = offset;
    this.#directGpa = offset >= 0 ? engine.memory.dataGpa + offset : -1;
    this.#edgeCount = 0;
    this.#pieceCount = 0;
    this.#edgesToSubmit = 0;
    this.#edgesToRead = 0;
    this.#piece = 0;
    this.#pieceCursor = 0;
    if (length === 0) {
      this.pending = false;
      return;
    }
    if (this.#unaligned) {
      const head = this.#start;
      const tail = this.#end - bs;
      if (position !== head || position + length < head + bs) {
        this.#edges[this.#edgeCount++] = this.#edgeBlock(this.#head, false);
      }
      if ((position + length) % bs !== 0 && tail !== head) {
        this.#edges[this.#edgeCount++] = this.#edgeBlock(this.#tail, true);
      }
      this.#edgesToSubmit = this.#edgeCount;
      this.#edgesToRead = this.#edgeCount;
    }
    if (this.#edgeCount === 0) this.#planPieces();
  }

  /** The range's first (or last) block as an edge piece, its position computed here (see #request). */
  #edgeBlock(piece: Piece, last: boolean): Piece {
    const bs = this.engine.limits.blockSize;
    piece.position = last ? this.#end - bs : this.#start;
    piece.length = bs;
    piece.kind = 'edge';
    piece.bounce = -1;
    return piece;
  }

  override lockEntry(): RangeLockEntry {
    const entry = this.rangeEntry();
    entry.start = this.#start;
    entry.end = this.#end;
    entry.exclusive = this.#unaligned;
    return entry;
  }

  override usesSharedBytes(offset: number, size: number): boolean {
    const own = this.#sharedOffset;
    return own >= 0 && own < offset + size && offset < own + this.#length;
  }

  result(): unknown {
    return this.#length;
  }

  override fail(error: Error): void {
    if (this.error === null) this.error = error;
    this.#releaseEdgesIfDone();
    super.fail(error);
  }

  pump(): boolean {
    if (this.#edgesToSubmit > 0) return this.#submitEdgeReads();
    if (this.#edgesToRead > 0) return true; // waiting for the edge reads; resumed after them
    return this.#submitPieces();
  }

  #submitEdgeReads(): boolean {
    const engine = this.engine;
    while (this.#edgesToSubmit > 0) {
      const piece = this.#edges[this.#edgeCount - this.#edgesToSubmit]!;
      if (piece.bounce < 0) {
        piece.bounce = engine.allocBounce(piece.length);
        if (piece.bounce < 0) return false;
      }
      const request = this.#request(
        'read',
        piece,
        0,
        piece.length,
        piece.bounce,
        WriteOp.#onEdgeRead,
      );
      request.context = piece;
      if (!engine.driver.trySubmit(request)) {
        engine.putRequest(request);
        return false;
      }
      this.inFlight++;
      this.#edgesToSubmit--;
    }
    return true;
  }

  #edgeRead(request: BlockRequest, error: Error | null): void {
    this.inFlight--;
    this.engine.putRequest(request);
    this.#edgesToRead--;
    if (error === null && this.#edgesToRead === 0 && this.#sourceGone()) {
      error = bufferGone(this.name);
    }
    if (error !== null) {
      this.fail(error);
    } else if (this.#edgesToRead === 0 && this.error === null) {
      this.engine.stats.readModifyWrites++;
      for (let i = 0; i < this.#edgeCount; i++) this.#merge(this.#edges[i]!);
      this.#planPieces();
      this.engine.resume(this);
    }
    this.#releaseEdgesIfDone();
    this.maybeFinish();
  }

  /** Copies the caller's bytes (or zeroes) that fall inside an edge block into its bounce buffer. */
  #merge(piece: Piece): void {
    const from = Math.max(piece.position, this.#position);
    const to = Math.min(piece.position + piece.length, this.#position + this.#length);
    const bytes = this.engine.memory.dataBytes;
    const at = piece.bounce + (from - piece.position);
    const data = this.#data;
    if (data === null) {
      bytes.fill(0, at, at + (to - from));
    } else {
      copyBytes(data, from - this.#position, bytes, at, to - from);
      this.engine.stats.bytesBounced += to - from;
    }
  }

  #planPieces(): void {
    const bs = this.engine.limits.blockSize;
    const pieces = this.#pieces;
    let count = 0;
    let middleStart = this.#start;
    let middleEnd = this.#end;
    for (let i = 0; i < this.#edgeCount; i++) {
      const e = this.#edges[i]!;
      pieces[count++] = e;
      if (e.position === this.#start) middleStart += bs;
      else middleEnd -= bs;
    }
    if (middleEnd > middleStart) {
      const middle = this.#middle;
      middle.position = middleStart;
      middle.length = middleEnd - middleStart;
      middle.kind = this.#data === null && this.#deviceZeroes ? 'zeroes' : 'data';
      middle.bounce = -1;
      pieces[count++] = middle;
    }
    this.#pieceCount = count;
    this.#piece = 0;
    this.#pieceCursor = 0;
  }

  #submitPieces(): boolean {
    const engine = this.engine;
    while (this.#piece < this.#pieceCount) {
      const piece = this.#pieces[this.#piece]!;
      const cursor = this.#pieceCursor;
      const left = piece.length - cursor;
      let request: BlockRequest;
      if (piece.kind === 'edge') {
        request = this.#request('write', piece, cursor, left, piece.bounce, WriteOp.#onWritten);
        request.context = piece;
      } else if (piece.kind === 'zeroes') {
        const len = Math.min(left, engine.limits.maxWriteZeroesBytes);
        request = this.#request('write-zeroes', piece, cursor, len, -1, WriteOp.#onWritten);
      } else {
        request = this.#dataRequest(piece, cursor, left);
        if (request.length === 0) {
          engine.putRequest(request);
          return false;
        }
      }
      if (!engine.driver.trySubmit(request)) {
        if (piece.kind === 'data' && request.bounceOffset >= 0)
          engine.freeBounce(request.bounceOffset);
        engine.putRequest(request);
        return false;
      }
      this.inFlight++;
      this.#pieceCursor += request.length;
      if (this.#pieceCursor === piece.length) {
        this.#piece++;
        this.#pieceCursor = 0;
      }
    }
    this.pending = false;
    return true;
  }

  /** A write of source bytes at the piece's cursor: zero-copy when the source is shared memory. */
  #dataRequest(piece: Piece, cursor: number, left: number): BlockRequest {
    const engine = this.engine;
    const data = this.#data;
    // Where in the caller's bytes: small, where the device position may not be (see #request).
    const from = piece.position + cursor - this.#position;
    if (data !== null && this.#directGpa >= 0) {
      const len = Math.min(left, engine.maxRequestBytes);
      const request = this.#request('write', piece, cursor, len, -1, WriteOp.#onWritten);
      request.dataGpa = this.#directGpa + from;
      return request;
    }
    // Thrown before a bounce buffer is taken: the engine fails this operation only.
    if (this.#sourceGone()) throw bufferGone(this.name);
    const bounce = engine.allocBounce(Math.min(left, engine.bounceChunkBytes));
    const len = bounce < 0 ? 0 : engine.bounceSize;
    const request = this.#request('write', piece, cursor, len, bounce, WriteOp.#onWritten);
    if (bounce < 0) return request;
    if (data === null) {
      engine.dataBuffer.fill(0, bounce, bounce + len);
    } else {
      copyBytes(data, from, engine.dataBuffer, bounce, len);
      engine.stats.bytesBounced += len;
    }
    return request;
  }

  /** The caller's bytes are no longer readable (their ArrayBuffer was detached). */
  #sourceGone(): boolean {
    return this.#data !== null && this.#data.length !== this.#length;
  }

  /**
   * A request at `cursor` bytes into `piece`. Device positions and GPAs are computed where they
   * are stored, never passed: above 2^31 (a GPA always, a position on a disk over 2 GiB) a number
   * passed to a call V8 did not inline is a new heap number (16 B per write, as CI caught).
   */
  #request(
    kind: BlockRequestKind,
    piece: Piece,
    cursor: number,
    length: number,
    bounce: number,
    onComplete: (request: BlockRequest, error: Error | null) => void,
  ): BlockRequest {
    const request = this.engine.getRequest();
    request.kind = kind;
    request.position = piece.position + cursor;
    request.length = length;
    request.dataGpa = bounce >= 0 ? this.engine.memory.dataGpa + bounce : 0;
    request.bounceOffset = bounce;
    request.onComplete = onComplete;
    request.owner = this;
    return request;
  }

  #written(request: BlockRequest, error: Error | null): void {
    this.inFlight--;
    const engine = this.engine;
    if (request.context !== undefined) {
      // An edge block: its buffer is owned by the piece, freed once.
      const piece = request.context as Piece;
      engine.freeBounce(piece.bounce);
      piece.bounce = -1;
    } else if (request.bounceOffset >= 0) {
      engine.freeBounce(request.bounceOffset);
    }
    engine.putRequest(request);
    if (error !== null) this.fail(error);
    this.#releaseEdgesIfDone();
    this.maybeFinish();
  }

  /** After a failure, edge buffers that will never be written are returned once nothing is in flight. */
  #releaseEdgesIfDone(): void {
    if (this.error === null || this.inFlight > 0) return;
    for (let i = 0; i < this.#edgeCount; i++) {
      const e = this.#edges[i]!;
      if (e.bounce >= 0) {
        this.engine.freeBounce(e.bounce);
        e.bounce = -1;
      }
    }
  }
}
