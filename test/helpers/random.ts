import { mulberry32 } from '../../src/util/prng.js';

/** A seeded PRNG, so failures reproduce from the printed seed. */
export const prng = mulberry32;

export function randomInt(rand: () => number, min: number, max: number): number {
  return min + Math.floor(rand() * (max - min + 1));
}

export function randomBytes(rand: () => number, length: number): Buffer {
  const out = Buffer.allocUnsafe(length);
  for (let i = 0; i < length; i++) out[i] = (rand() * 256) | 0;
  return out;
}
