/** What the block layer asks of a device driver (virtio-blk, later virtio-scsi). */
export type BlockRequestKind =
  | 'read'
  | 'write'
  | 'flush'
  | 'discard'
  | 'write-zeroes'
  | 'get-id'
  /** A raw device command (SCSI pass-through); see BlockRequest.command. */
  | 'command';

/** Limits a driver imposes on one request; the block layer splits to fit them. */
export interface BlockLimits {
  /** Logical block size in bytes: positions and lengths of requests are multiples of it. */
  readonly blockSize: number;
  /** Device size in bytes. */
  readonly capacity: number;
  readonly readOnly: boolean;
  /** Largest data segment (size_max); Infinity when the device sets no limit. */
  readonly maxSegmentBytes: number;
  /** Data segments per request (seg_max, bounded by the ring). */
  readonly maxSegments: number;
  /** Bytes of data one command may move (SCSI max_sectors / block limits); Infinity if none. */
  readonly maxTransferBytes: number;
  readonly canFlush: boolean;
  readonly canDiscard: boolean;
  readonly canWriteZeroes: boolean;
  /** Bytes per DISCARD request (max_discard_sectors), a multiple of blockSize. */
  readonly maxDiscardBytes: number;
  /** Bytes per WRITE_ZEROES request (max_write_zeroes_sectors), a multiple of blockSize. */
  readonly maxWriteZeroesBytes: number;
}

/**
 * One device request. The data area is a single contiguous range of shared memory (`dataGpa`,
 * `length`): the driver cuts it into segments at maxSegmentBytes. Objects are reused by the block
 * layer, so drivers must not keep references after calling `onComplete`.
 */
export class BlockRequest {
  kind: BlockRequestKind = 'read';
  /** Byte position on the device (block-aligned). */
  position = 0;
  /** Bytes of data (block-aligned), or of the range for discard / write-zeroes. */
  length = 0;
  /** Guest-physical address of the data area (read, write, get-id). */
  dataGpa = 0;
  /** Completion: error is null on success. Called synchronously from the drain routine. */
  onComplete: (request: BlockRequest, error: Error | null) => void = noop;
  /** For the block layer: the operation this request belongs to and its bounce buffer. */
  owner: unknown = undefined;
  /** Per-request detail for the owner (e.g. which edge block of a write). */
  context: unknown = undefined;
  bounceOffset = -1;
  /** Where this request's bytes sit in the caller's buffer. */
  userOffset = 0;
  /** For kind 'command': what to send, and where the driver leaves the outcome. */
  command: DeviceCommand | undefined = undefined;
}

/** A raw command for drivers that take them (virtio-scsi): the CDB and the data direction. */
export interface DeviceCommand {
  cdb: Uint8Array;
  /** The data area (dataGpa, length) is written by the device (true) or read by it (false). */
  dataIn: boolean;
  /** Another address than the device's own (SCSI target and LUN), for scans. */
  target: number | undefined;
  lun: number | undefined;
  /** Filled in by the driver on completion. */
  status: number;
  residual: number;
  sense: Uint8Array | undefined;
}

function noop(): void {}

/** A device driver the block layer can submit requests to. */
export interface BlockDriver {
  readonly limits: BlockLimits;
  /** Queues the request on a virtqueue; false if no descriptor or slot is free right now. */
  trySubmit(request: BlockRequest): boolean;
  /** Requests handed to the device and not yet completed. */
  readonly inFlight: number;
}
