/**
 * Every failure this library reports is one of the classes below. Match on `code` (stable,
 * `VHOST_USER_ERR_*`), not on the message. Lower-level causes are kept in `cause`.
 */

export type VhostUserErrorCode =
  | 'VHOST_USER_ERR_INVALID_ARGUMENT'
  | 'VHOST_USER_ERR_OUT_OF_RANGE'
  | 'VHOST_USER_ERR_CONNECT'
  | 'VHOST_USER_ERR_PROTOCOL'
  | 'VHOST_USER_ERR_NACK'
  | 'VHOST_USER_ERR_TIMEOUT'
  | 'VHOST_USER_ERR_DISCONNECTED'
  | 'VHOST_USER_ERR_CLOSED'
  | 'VHOST_USER_ERR_READ_ONLY'
  | 'VHOST_USER_ERR_IO'
  | 'VHOST_USER_ERR_UNSUPPORTED'
  | 'VHOST_USER_ERR_QUEUE_BROKEN'
  | 'VHOST_USER_ERR_ABORTED'
  | 'VHOST_USER_ERR_NO_MEMORY'
  | 'VHOST_USER_ERR_SYSTEM'
  | 'VHOST_USER_ERR_SCSI_SENSE'
  | 'VHOST_USER_ERR_SCSI_STATUS'
  | 'VHOST_USER_ERR_SCSI_RESPONSE'
  | 'VHOST_USER_ERR_SHORT_TRANSFER';

const kVhostUserError = Symbol.for('vhost-user.error');

/** Base class: every error thrown by this library has a `code` of the form VHOST_USER_ERR_*. */
export class VhostUserError extends Error {
  readonly code: VhostUserErrorCode;
  constructor(code: VhostUserErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
  /** Works across duplicate installs of the package, like undici's errors. */
  static override [Symbol.hasInstance](value: unknown): boolean {
    if (this !== VhostUserError) return Function.prototype[Symbol.hasInstance].call(this, value);
    return typeof value === 'object' && value !== null && kVhostUserError in value;
  }
  get [kVhostUserError](): true {
    return true;
  }
}

/** An option or argument has the wrong type or an impossible value. */
export class InvalidArgumentError extends VhostUserError {
  constructor(message: string) {
    super('VHOST_USER_ERR_INVALID_ARGUMENT', message);
  }
}

/** position / length negative, fractional, or past the end of the device. Also a RangeError. */
export class OutOfRangeError extends RangeError {
  readonly code = 'VHOST_USER_ERR_OUT_OF_RANGE' as const;
  constructor(message: string) {
    super(message);
    this.name = 'OutOfRangeError';
  }
}

/** Could not connect to the backend's socket (missing path, refused, not a socket). */
export class ConnectError extends VhostUserError {
  readonly socketPath: string;
  readonly errno: string | undefined;
  constructor(socketPath: string, cause: unknown) {
    const errno = systemErrorCode(cause);
    super(
      'VHOST_USER_ERR_CONNECT',
      `cannot connect to vhost-user backend at ${socketPath}: ${errorText(cause)}`,
      { cause },
    );
    this.socketPath = socketPath;
    this.errno = errno;
  }
}

/** The backend sent something the vhost-user protocol does not allow here. */
export class ProtocolError extends VhostUserError {
  /** The vhost-user request this happened on, e.g. 'VHOST_USER_GET_CONFIG'. */
  readonly request: string | undefined;
  constructor(message: string, request?: string) {
    super('VHOST_USER_ERR_PROTOCOL', request ? `${request}: ${message}` : message);
    this.request = request;
  }
}

/** The backend answered a NEED_REPLY request with a non-zero ack. */
export class BackendRejectedError extends VhostUserError {
  readonly request: string;
  readonly value: bigint;
  constructor(request: string, value: bigint) {
    super('VHOST_USER_ERR_NACK', `${request}: backend replied with failure (${value})`);
    this.request = request;
    this.value = value;
  }
}

/** A handshake step or an I/O request did not finish in time. */
export class TimeoutError extends VhostUserError {
  readonly operation: string;
  readonly timeoutMs: number;
  constructor(operation: string, timeoutMs: number) {
    super('VHOST_USER_ERR_TIMEOUT', `${operation} timed out after ${timeoutMs} ms`);
    this.operation = operation;
    this.timeoutMs = timeoutMs;
  }
}

/** The backend closed the connection or died. */
export class DisconnectedError extends VhostUserError {
  constructor(message = 'vhost-user backend disconnected', options?: { cause?: unknown }) {
    super('VHOST_USER_ERR_DISCONNECTED', message, options);
  }
}

/** The device was closed by the application. */
export class DeviceClosedError extends VhostUserError {
  constructor(message = 'device is closed') {
    super('VHOST_USER_ERR_CLOSED', message);
  }
}

/** A write, discard or write-zeroes on a read-only device. */
export class ReadOnlyError extends VhostUserError {
  constructor(operation: string) {
    super('VHOST_USER_ERR_READ_ONLY', `${operation}: device is read-only`);
  }
}

/** The device completed a request with VIRTIO_BLK_S_IOERR. */
export class DeviceIoError extends VhostUserError {
  /** virtio status byte as the device wrote it. */
  readonly status: number;
  readonly operation: string;
  readonly position: number | undefined;
  constructor(operation: string, status: number, position?: number) {
    super(
      'VHOST_USER_ERR_IO',
      `${operation}${position === undefined ? '' : ` at ${position}`}: device reported I/O error (status ${status})`,
    );
    this.status = status;
    this.operation = operation;
    this.position = position;
  }
}

/** The device does not support the operation (VIRTIO_BLK_S_UNSUPP, or feature not offered). */
export class UnsupportedError extends VhostUserError {
  readonly operation: string;
  readonly status: number | undefined;
  constructor(operation: string, reason: string, status?: number) {
    super('VHOST_USER_ERR_UNSUPPORTED', `${operation}: ${reason}`);
    this.operation = operation;
    this.status = status;
  }
}

/** The device broke the virtqueue rules (bad used id or length, status never written). */
export class QueueBrokenError extends VhostUserError {
  readonly queue: number;
  constructor(queue: number, message: string) {
    super('VHOST_USER_ERR_QUEUE_BROKEN', `virtqueue ${queue}: ${message}`);
    this.queue = queue;
  }
}

/** The caller's AbortSignal fired. */
export class AbortError extends VhostUserError {
  constructor(operation: string, reason?: unknown) {
    super('VHOST_USER_ERR_ABORTED', `${operation} was aborted`, { cause: reason });
    this.name = 'AbortError';
  }
}

/** Shared memory is exhausted (allocBuffer larger than what is free). */
export class OutOfMemoryError extends VhostUserError {
  readonly requested: number;
  constructor(requested: number, available: number) {
    super(
      'VHOST_USER_ERR_NO_MEMORY',
      `cannot allocate ${requested} bytes of shared memory (${available} bytes free in one piece)`,
    );
    this.requested = requested;
  }
}

/** A system call failed (mmap, memfd_create, eventfd...). `errno` is the name, e.g. 'ENOMEM'. */
export class SystemError extends VhostUserError {
  readonly errno: string | undefined;
  readonly syscall: string | undefined;
  constructor(message: string, cause: unknown) {
    super('VHOST_USER_ERR_SYSTEM', `${message}: ${errorText(cause)}`, { cause });
    this.errno = systemErrorCode(cause);
    this.syscall = syscallOf(cause);
  }
}

/** What a SCSI target said about a failed command (decoded sense data). */
export interface ScsiSenseInfo {
  /** Sense key (SPC-4 table 48), e.g. 5 = ILLEGAL REQUEST. */
  readonly senseKey: number;
  readonly senseKeyName: string;
  /** Additional sense code and qualifier. */
  readonly asc: number;
  readonly ascq: number;
  /** A readable text for the ASC/ASCQ pair. */
  readonly description: string;
  /** The INFORMATION field (usually the failing LBA), when the target set it. */
  readonly information: number | undefined;
  /**
   * A deferred error (response code 0x71 / 0x73): it belongs to an earlier command the target
   * had already acknowledged, not to the one it came back with.
   */
  readonly deferred: boolean;
  /** The sense bytes as the target sent them. */
  readonly raw: Buffer;
}

/** A SCSI command ended in CHECK CONDITION: the sense key, ASC and ASCQ say why. */
export class ScsiSenseError extends VhostUserError implements ScsiSenseInfo {
  readonly operation: string;
  readonly position: number | undefined;
  readonly senseKey: number;
  readonly senseKeyName: string;
  readonly asc: number;
  readonly ascq: number;
  readonly description: string;
  readonly information: number | undefined;
  readonly deferred: boolean;
  readonly raw: Buffer;
  constructor(operation: string, sense: ScsiSenseInfo, position?: number) {
    const code = `${sense.asc.toString(16).padStart(2, '0')}/${sense.ascq.toString(16).padStart(2, '0')}`;
    super(
      'VHOST_USER_ERR_SCSI_SENSE',
      sense.deferred
        ? `deferred error reported during ${operation}: ${sense.senseKeyName}: ${sense.description} (ASC/ASCQ ${code}); an earlier acknowledged command failed`
        : `${operation}${position === undefined ? '' : ` at ${position}`}: ${sense.senseKeyName}: ${sense.description} (ASC/ASCQ ${code})`,
    );
    this.operation = operation;
    this.position = position;
    this.senseKey = sense.senseKey;
    this.senseKeyName = sense.senseKeyName;
    this.asc = sense.asc;
    this.ascq = sense.ascq;
    this.description = sense.description;
    this.information = sense.information;
    this.deferred = sense.deferred;
    this.raw = sense.raw;
  }
}

/** A SCSI command ended with a status other than GOOD or CHECK CONDITION (BUSY, TASK SET FULL, RESERVATION CONFLICT...), after retries. */
export class ScsiStatusError extends VhostUserError {
  readonly operation: string;
  readonly status: number;
  readonly statusName: string;
  constructor(operation: string, status: number, statusName: string) {
    super('VHOST_USER_ERR_SCSI_STATUS', `${operation}: SCSI status ${statusName}`);
    this.operation = operation;
    this.status = status;
    this.statusName = statusName;
  }
}

/** The virtio-scsi device answered with a response code other than VIRTIO_SCSI_S_OK. */
export class VirtioScsiResponseError extends VhostUserError {
  readonly operation: string;
  readonly response: number;
  readonly responseName: string;
  constructor(operation: string, response: number, responseName: string) {
    super('VHOST_USER_ERR_SCSI_RESPONSE', `${operation}: virtio-scsi response ${responseName}`);
    this.operation = operation;
    this.response = response;
    this.responseName = responseName;
  }
}

/** The device moved fewer bytes than the command asked for (a non-zero residual). */
export class ShortTransferError extends VhostUserError {
  readonly operation: string;
  readonly expected: number;
  readonly residual: number;
  constructor(operation: string, expected: number, residual: number) {
    super(
      'VHOST_USER_ERR_SHORT_TRANSFER',
      `${operation}: device transferred ${expected - residual} of ${expected} bytes`,
    );
    this.operation = operation;
    this.expected = expected;
    this.residual = residual;
  }
}

function errorText(cause: unknown): string {
  return cause instanceof Error ? cause.message : String(cause);
}

/** The errno name the native addon attaches to its errors as `code`. */
export function systemErrorCode(cause: unknown): string | undefined {
  if (typeof cause === 'object' && cause !== null && 'code' in cause) {
    const code = (cause as { code: unknown }).code;
    return typeof code === 'string' ? code : undefined;
  }
  return undefined;
}

function syscallOf(cause: unknown): string | undefined {
  if (typeof cause === 'object' && cause !== null && 'syscall' in cause) {
    const syscall = (cause as { syscall: unknown }).syscall;
    return typeof syscall === 'string' ? syscall : undefined;
  }
  return undefined;
}
