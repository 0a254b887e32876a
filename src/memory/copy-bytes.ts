import { native } from '../native.js';

/**
 * Copies `length` bytes from `source[sourceStart..]` to `target[targetStart..]` (memmove). A
 * native copy because JavaScript has none that takes ranges and makes no object:
 * `target.set(source.subarray(...))` and Buffer#copy with offsets each build a view, ~96 B
 * per bounced request. Throws RangeError for a range past either end (a detached array has none).
 */
export const copyBytes: (
  source: Uint8Array,
  sourceStart: number,
  target: Uint8Array,
  targetStart: number,
  length: number,
) => void = native.copyBytes;
