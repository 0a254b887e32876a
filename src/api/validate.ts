import { constants as bufferConstants } from 'node:buffer';
import { InvalidArgumentError, OutOfRangeError } from '../errors.js';

/**
 * position / length must be non-negative safe integers and stay within the device. Its size is
 * read here from the device's limits, not passed: above 2^31 bytes it is a number that a call V8
 * did not inline would box in a new heap number per request.
 */
export function checkRange(
  operation: string,
  position: unknown,
  length: unknown,
  limits: { readonly capacity: number },
): void {
  checkOffset(operation, 'position', position);
  checkOffset(operation, 'length', length);
  const size = limits.capacity;
  if ((position as number) + (length as number) > size) {
    throw new OutOfRangeError(
      `${operation}: range [${String(position)}, ${(position as number) + (length as number)}) is past the end of the device (${size} bytes)`,
    );
  }
}

function checkOffset(operation: string, name: string, value: unknown): void {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) {
    throw new OutOfRangeError(
      `${operation}: ${name} must be a non-negative integer, got ${typeof value === 'number' ? value : typeof value}`,
    );
  }
}

export function checkBuffer(operation: string, buffer: unknown): Uint8Array {
  if (!(buffer instanceof Uint8Array)) {
    throw new InvalidArgumentError(`${operation}: buffer must be a Buffer or Uint8Array`);
  }
  return buffer;
}

/**
 * A new Buffer of `length` bytes must fit in one Buffer (`max`: Node's limit, 4 GiB on Node.js
 * 20, 2^53 - 1 from 22); a longer one goes through readInto or a stream.
 */
export function checkNewBufferLength(
  operation: string,
  length: number,
  max: number = bufferConstants.MAX_LENGTH,
): void {
  if (length > max) {
    throw new InvalidArgumentError(
      `${operation}: length ${length} is more than one Buffer holds (${max}); use readInto or createReadStream`,
    );
  }
}

/** The longest a Node.js timer waits: setTimeout turns a longer delay into 1 ms. */
export const MAX_TIMEOUT_MS = 2 ** 31 - 1;

export function checkTimeout(name: string, value: unknown): number | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'number' || !(value > 0) || !(value <= MAX_TIMEOUT_MS)) {
    throw new InvalidArgumentError(
      `${name} must be a positive number of milliseconds, at most ${MAX_TIMEOUT_MS}`,
    );
  }
  return value;
}

export function checkIntegerOption(
  name: string,
  value: unknown,
  min: number,
  max: number,
  fallback: number,
): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min || value > max) {
    throw new InvalidArgumentError(
      `${name} must be an integer in ${min}..${max}, got ${String(value)}`,
    );
  }
  return value;
}

/** An AbortSignal, or undefined; anything else would throw from addEventListener, untyped. */
export function checkSignal(value: unknown): void {
  if (value === undefined) return;
  if (
    typeof value !== 'object' ||
    value === null ||
    typeof (value as Partial<AbortSignal>).aborted !== 'boolean' ||
    typeof (value as Partial<AbortSignal>).addEventListener !== 'function' ||
    typeof (value as Partial<AbortSignal>).removeEventListener !== 'function'
  ) {
    throw new InvalidArgumentError('signal must be an AbortSignal');
  }
}
