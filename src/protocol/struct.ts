/**
 * A table-driven codec for fixed-layout wire structs. Each struct is described once as a table of
 * (name → type at byte offset); encode, decode and the TypeScript value type all derive from it, so
 * the layout cannot drift between the two directions.
 *
 * Byte order is little-endian: vhost-user uses the host's native order, and every platform this
 * library supports (x86-64, aarch64 Linux) is little-endian.
 */

import { InvalidArgumentError, ProtocolError } from '../errors.js';

export type FieldKind = 'u8' | 'u16' | 'u32' | 'u64';

export interface Field<K extends FieldKind = FieldKind> {
  readonly kind: K;
  /** Byte offset from the start of the struct. */
  readonly offset: number;
  /** Width in bytes. */
  readonly size: number;
}

export type FieldTable = Readonly<Record<string, Field>>;

/** u64 fields decode to bigint (addresses and feature masks need all 64 bits), the rest to number. */
export type FieldValue<F extends Field> = F extends Field<'u64'> ? bigint : number;

export type StructValue<T extends FieldTable> = { [K in keyof T]: FieldValue<T[K]> };

export interface StructCodec<T extends FieldTable> {
  readonly name: string;
  /** Size in bytes on the wire. */
  readonly size: number;
  readonly fields: T;
  encode(value: StructValue<T>): Uint8Array;
  encodeInto(view: DataView, offset: number, value: StructValue<T>): void;
  /** Throws ProtocolError unless `bytes` is exactly `size` long. */
  decode(bytes: Uint8Array): StructValue<T>;
  /** Reads `size` bytes at `offset`; the caller has checked the bounds. */
  decodeFrom(view: DataView, offset: number): StructValue<T>;
}

const WIDTH: Readonly<Record<FieldKind, number>> = { u8: 1, u16: 2, u32: 4, u64: 8 };
const U64_LIMIT = 1n << 64n;

function field<K extends FieldKind>(kind: K, offset: number): Field<K> {
  return Object.freeze({ kind, offset, size: WIDTH[kind] });
}

export const u8 = (offset: number): Field<'u8'> => field('u8', offset);
export const u16 = (offset: number): Field<'u16'> => field('u16', offset);
export const u32 = (offset: number): Field<'u32'> => field('u32', offset);
export const u64 = (offset: number): Field<'u64'> => field('u64', offset);

/**
 * Defines a struct of `size` bytes. Bytes not covered by a field are written as zero and ignored on
 * decode. Throws InvalidArgumentError if a field is misaligned, overlaps another or lies outside
 * the struct: the tables are constants, so this fails at module load.
 */
export function defineStruct<T extends FieldTable>(
  name: string,
  size: number,
  fields: T,
): StructCodec<T> {
  const entries = Object.entries(fields);
  checkLayout(name, size, entries);

  const encodeInto = (view: DataView, offset: number, value: StructValue<T>): void => {
    for (const [key, f] of entries) {
      writeField(view, offset + f.offset, f, (value as Record<string, unknown>)[key], name, key);
    }
  };
  const decodeFrom = (view: DataView, offset: number): StructValue<T> => {
    const out: Record<string, number | bigint> = {};
    for (const [key, f] of entries) out[key] = readField(view, offset + f.offset, f);
    return out as StructValue<T>;
  };

  return Object.freeze({
    name,
    size,
    fields,
    encodeInto,
    decodeFrom,
    encode(value: StructValue<T>): Uint8Array {
      const bytes = new Uint8Array(size);
      encodeInto(new DataView(bytes.buffer), 0, value);
      return bytes;
    },
    decode(bytes: Uint8Array): StructValue<T> {
      if (bytes.length !== size) {
        throw new ProtocolError(`${name} is ${bytes.length} bytes, expected ${size}`);
      }
      return decodeFrom(new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength), 0);
    },
  });
}

function checkLayout(name: string, size: number, entries: [string, Field][]): void {
  const used = new Uint8Array(size);
  for (const [key, f] of entries) {
    if (f.offset % f.size !== 0 || f.offset < 0 || f.offset + f.size > size) {
      throw new InvalidArgumentError(`${name}.${key}: bad offset ${f.offset} for ${f.kind}`);
    }
    for (let i = f.offset; i < f.offset + f.size; i++) {
      if (used[i]) throw new InvalidArgumentError(`${name}.${key}: overlaps another field`);
      used[i] = 1;
    }
  }
}

function writeField(
  view: DataView,
  at: number,
  f: Field,
  value: unknown,
  name: string,
  key: string,
): void {
  if (f.kind === 'u64') {
    if (typeof value !== 'bigint' || value < 0n || value >= U64_LIMIT) {
      throw new InvalidArgumentError(
        `${name}.${key} must be a bigint in [0, 2^64), got ${String(value)}`,
      );
    }
    view.setBigUint64(at, value, true);
    return;
  }
  const max = 2 ** (f.size * 8);
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value >= max) {
    throw new InvalidArgumentError(
      `${name}.${key} must be an integer in [0, ${max}), got ${String(value)}`,
    );
  }
  if (f.kind === 'u8') view.setUint8(at, value);
  else if (f.kind === 'u16') view.setUint16(at, value, true);
  else view.setUint32(at, value, true);
}

function readField(view: DataView, at: number, f: Field): number | bigint {
  switch (f.kind) {
    case 'u8':
      return view.getUint8(at);
    case 'u16':
      return view.getUint16(at, true);
    case 'u32':
      return view.getUint32(at, true);
    case 'u64':
      return view.getBigUint64(at, true);
  }
}
