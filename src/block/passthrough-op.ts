import { InvalidArgumentError } from '../errors.js';
import { copyBytes } from '../memory/copy-bytes.js';
import { bufferGone, Operation, type BlockEngine, type OperationCallback } from './engine.js';
import type { BlockRequest, DeviceCommand } from './request.js';

/** What a raw command returns. */
export interface PassThroughResult {
  /** The device's status (SCSI: GOOD, or CONDITION MET). */
  status: number;
  /** Data-in bytes the device wrote (the requested length minus the residual). */
  data: Buffer;
  /** Bytes of the data area the device did not transfer (its residual, or what len leaves out). */
  residual: number;
  /** Sense data the device returned with a successful status, if any. */
  sense: Buffer | undefined;
}

/**
 * One raw device command (SCSI pass-through): its data goes through a bounce buffer of exactly
 * its size, because a command cannot be split the way reads and writes can.
 */
export class PassThroughOp extends Operation {
  readonly #command: DeviceCommand;
  readonly #dataOut: Uint8Array | undefined;
  readonly #length: number;
  /** Offset of dataOut in the data region when it lies there, else -1 (freeBuffer waits). */
  readonly #sharedOffset: number;
  #result: PassThroughResult | undefined;
  readonly #onDone = (request: BlockRequest, error: Error | null): void => {
    this.inFlight--;
    if (error === null) {
      const command = request.command!;
      const moved = command.dataIn ? Math.max(0, request.length - command.residual) : 0;
      const data = Buffer.alloc(moved);
      if (moved > 0) {
        copyBytes(this.engine.dataBuffer, request.bounceOffset, data, 0, moved);
      }
      this.#result = {
        status: command.status,
        data,
        residual: command.residual,
        sense: command.sense === undefined ? undefined : Buffer.from(command.sense),
      };
    }
    if (request.bounceOffset >= 0) this.engine.freeBounce(request.bounceOffset);
    this.engine.putRequest(request);
    if (error !== null) this.fail(error);
    else this.maybeFinish();
  };

  constructor(
    engine: BlockEngine,
    cdb: Uint8Array,
    dataIn: number,
    dataOut: Uint8Array | undefined,
    callback: OperationCallback,
    address: { target: number | undefined; lun: number | undefined },
  ) {
    super(engine, 'scsiCommand', callback);
    const length = dataOut !== undefined && dataOut.length > 0 ? dataOut.length : dataIn;
    if (length > engine.maxRequestBytes) {
      throw new InvalidArgumentError(
        `scsiCommand: ${length} data bytes exceed the device's ${engine.maxRequestBytes} per command`,
      );
    }
    this.#length = length;
    this.#dataOut = dataOut !== undefined && dataOut.length > 0 ? dataOut : undefined;
    this.#sharedOffset =
      this.#dataOut === undefined ? -1 : engine.memory.dataOffsetOf(this.#dataOut);
    this.#command = {
      cdb: Uint8Array.from(cdb),
      dataIn: this.#dataOut === undefined,
      target: address.target,
      lun: address.lun,
      status: 0,
      residual: 0,
      sense: undefined,
    };
  }

  result(): unknown {
    return this.#result;
  }

  /** dataOut is read when the command is submitted, which may wait for memory or descriptors. */
  override usesSharedBytes(offset: number, size: number): boolean {
    const own = this.#sharedOffset;
    return this.pending && own >= 0 && own < offset + size && offset < own + this.#length;
  }

  pump(): boolean {
    // Detached while waiting (its memory released): sending would carry stale bounce bytes.
    if (this.#dataOut !== undefined && this.#dataOut.length !== this.#length) {
      throw bufferGone(this.name);
    }
    let bounce = -1;
    if (this.#length > 0) {
      bounce = this.engine.allocBounce(this.#length);
      if (bounce < 0) return false;
      if (this.engine.bounceSize < this.#length) {
        // Memory is short: a command's data cannot be cut, so wait for a buffer of full size.
        this.engine.freeBounce(bounce);
        this.engine.lastFailedBounce = this.#length;
        return false;
      }
      if (this.#dataOut !== undefined) this.engine.dataBuffer.set(this.#dataOut, bounce);
      else this.engine.dataBuffer.fill(0, bounce, bounce + this.#length);
    }
    const request = this.engine.getRequest();
    request.kind = 'command';
    request.position = 0;
    request.length = this.#length;
    request.dataGpa = bounce < 0 ? 0 : this.engine.memory.dataGpa + bounce;
    request.bounceOffset = bounce;
    request.command = this.#command;
    request.onComplete = this.#onDone;
    request.owner = this;
    if (!this.engine.driver.trySubmit(request)) {
      if (bounce >= 0) this.engine.freeBounce(bounce);
      this.engine.putRequest(request);
      return false;
    }
    this.inFlight++;
    this.pending = false;
    return true;
  }
}
