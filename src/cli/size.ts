import { UsageError } from './errors.js';

const UNITS: Record<string, number> = {
  '': 1,
  b: 1,
  k: 1024,
  m: 1024 ** 2,
  g: 1024 ** 3,
  t: 1024 ** 4,
};

/**
 * Parses a byte count like qemu-io does: decimal or 0x hex, with an optional binary suffix
 * (4k, 1M, 1G, 1T; "KiB"/"KB" spellings too). Throws UsageError naming `what` otherwise.
 */
export function parseSize(text: string | undefined, what: string): number {
  if (text === undefined) throw new UsageError(`missing ${what}`);
  const match = /^\s*(0x[0-9a-f]+|\d+)\s*([kmgtb]?)(?:i?b)?\s*$/i.exec(text);
  if (!match) throw new UsageError(`${what}: not a byte count: '${text}' (examples: 4096, 4k, 1M)`);
  const base = Number(match[1]);
  const value = base * UNITS[match[2]!.toLowerCase()]!;
  if (!Number.isSafeInteger(value)) throw new UsageError(`${what}: too large: '${text}'`);
  return value;
}

/** A positive (or, with `min` 0, non-negative) integer option such as an iteration count. */
export function parseCount(
  text: string | undefined,
  what: string,
  min = 1,
  max = Number.MAX_SAFE_INTEGER,
): number {
  const value = parseSize(text, what);
  if (value < min) throw new UsageError(`${what} must be at least ${min}, got ${text}`);
  if (value > max) throw new UsageError(`${what} must be at most ${max}, got ${text}`);
  return value;
}

/** 1536 -> "1.5 KiB": for humans only, never parsed back. */
export function formatSize(bytes: number): string {
  const units = ['bytes', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  if (unit === 0) return `${bytes} bytes`;
  return `${Number.isInteger(value) ? value : value.toFixed(1)} ${units[unit]}`;
}
