/**
 * What the disk is made of: a RAM buffer or a file. I/O is synchronous and vectored, straight
 * between the storage and Buffers over the frontend's memory (the backend runs in its own
 * process, so blocking is fine). With O_DIRECT, transfers whose memory or file offset is not
 * aligned go through a page-aligned bounce buffer we map ourselves.
 */

import {
  closeSync,
  constants,
  fdatasyncSync,
  fstatSync,
  openSync,
  readSync,
  readvSync,
  writevSync,
} from 'node:fs';
import { native, type MappingHandle } from '../native.js';
import type { IoSegment } from './device-queue.js';

export interface Storage {
  /** Bytes. */
  readonly size: number;
  /** 'ram', 'direct' (O_DIRECT file) or 'buffered' (file). */
  readonly kind: 'ram' | 'direct' | 'buffered';
  /** Fills `segments`, in order, from `position`. Throws the fs error on failure. */
  read(segments: readonly IoSegment[], position: number): void;
  write(segments: readonly IoSegment[], position: number): void;
  writeZeroes(position: number, length: number): void;
  flush(): void;
  close(): void;
}

export class RamStorage implements Storage {
  readonly kind = 'ram';
  readonly size: number;
  readonly #bytes: Buffer;

  constructor(size: number) {
    this.size = size;
    this.#bytes = Buffer.alloc(size);
  }

  read(segments: readonly IoSegment[], position: number): void {
    let at = position;
    for (const s of segments) at += this.#bytes.copy(s.buf, 0, at, at + s.buf.length);
  }

  write(segments: readonly IoSegment[], position: number): void {
    let at = position;
    for (const s of segments) at += s.buf.copy(this.#bytes, at);
  }

  writeZeroes(position: number, length: number): void {
    this.#bytes.fill(0, position, position + length);
  }

  flush(): void {}

  close(): void {}
}

const BOUNCE_BYTES = 1024 * 1024;
/** Linux IOV_MAX: readv/writev take at most this many buffers per call. */
const IOV_MAX = 1024;
const ZEROES = Buffer.alloc(64 * 1024);

export class FileStorage implements Storage {
  readonly size: number;
  readonly kind: 'direct' | 'buffered';
  readonly #fd: number;
  /** O_DIRECT alignment of memory, offsets and lengths; 1 when buffered. */
  readonly #align: number;
  #bounce: { fd: number; handle: MappingHandle; bytes: Buffer } | undefined;
  #closed = false;

  private constructor(fd: number, size: number, align: number) {
    this.#fd = fd;
    this.size = size;
    this.#align = align;
    this.kind = align > 1 ? 'direct' : 'buffered';
  }

  /**
   * Opens `path`. direct: true insists on O_DIRECT, false never uses it, undefined tries it and
   * falls back to buffered I/O when the file system refuses (tmpfs, some FUSE) or the file size is
   * not a multiple of the alignment it needs. Throws the fs error.
   */
  static open(path: string, readOnly: boolean, direct: boolean | undefined): FileStorage {
    const flags = readOnly ? constants.O_RDONLY : constants.O_RDWR;
    const size = fstatOf(path, flags);
    if (direct !== false && constants.O_DIRECT !== undefined) {
      const storage = FileStorage.#tryDirect(path, flags, size);
      if (storage) return storage;
      if (direct === true) {
        throw Object.assign(new Error(`${path}: O_DIRECT is not usable on this file`), {
          code: 'EINVAL',
        });
      }
    }
    return new FileStorage(openSync(path, flags), size, 1);
  }

  static #tryDirect(path: string, flags: number, size: number): FileStorage | undefined {
    let fd: number;
    try {
      fd = openSync(path, flags | constants.O_DIRECT);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EINVAL') return undefined;
      throw err;
    }
    const storage = new FileStorage(fd, size, 1);
    // The logical block size is not visible from Node: probe the smallest alignment that works.
    for (const align of [512, 4096]) {
      if (size % align !== 0) break;
      try {
        readSync(fd, storage.#bounceBytes().subarray(0, align), 0, align, 0);
        storage.#releaseBounce();
        return new FileStorage(fd, size, align);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EINVAL') {
          storage.#releaseBounce();
          closeSync(fd);
          throw err;
        }
      }
    }
    storage.#releaseBounce();
    closeSync(fd);
    return undefined;
  }

  read(segments: readonly IoSegment[], position: number): void {
    this.#transfer(segments, position, false);
  }

  write(segments: readonly IoSegment[], position: number): void {
    this.#transfer(segments, position, true);
  }

  /** Vectored I/O straight to guest memory when O_DIRECT allows it, else through the bounce. */
  #transfer(segments: readonly IoSegment[], position: number, write: boolean): void {
    if (this.#aligned(segments, position)) {
      const buffers = segments.map((s) => s.buf);
      if (write) writevAll(this.#fd, buffers, position);
      else readvAll(this.#fd, buffers, position);
      return;
    }
    const copy = write ? copyFromSegments : copyToSegments;
    this.#bounced(
      position,
      byteLength(segments),
      (bounce, skip, at, n) => copy(segments, at - position, bounce.subarray(skip, skip + n)),
      write,
    );
  }

  writeZeroes(position: number, length: number): void {
    if (this.#align === 1) {
      for (let done = 0; done < length;) {
        const bufs: Buffer[] = [];
        for (let i = 0; i < 16 && done < length; i++) {
          const n = Math.min(ZEROES.length, length - done);
          bufs.push(ZEROES.subarray(0, n));
          done += n;
        }
        writevAll(this.#fd, bufs, position + done - byteLengthOf(bufs));
      }
      return;
    }
    this.#bounced(
      position,
      length,
      (bounce, skip, _at, n) => {
        bounce.fill(0, skip, skip + n);
      },
      true,
    );
  }

  flush(): void {
    fdatasyncSync(this.#fd);
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#releaseBounce();
    closeSync(this.#fd);
  }

  #aligned(segments: readonly IoSegment[], position: number): boolean {
    const align = this.#align;
    if (align === 1) return true;
    if (position % align !== 0) return false;
    for (const s of segments) if (s.addr % align !== 0 || s.buf.length % align !== 0) return false;
    return true;
  }

  /**
   * Moves [position, position + length) through the bounce buffer in aligned chunks. For each
   * chunk, `fill(bounce, skip, at, n)` handles the n bytes of the request at file offset `at`,
   * found at bounce[skip]. Writes whose chunk edges are unaligned read the chunk first, so the
   * neighbouring bytes survive (read-modify-write).
   */
  #bounced(
    position: number,
    length: number,
    fill: (bounce: Buffer, skip: number, at: number, n: number) => void,
    write: boolean,
  ): void {
    const align = this.#align;
    const bounce = this.#bounceBytes();
    const step = bounce.length - 2 * align;
    for (let at = position; at < position + length;) {
      const n = Math.min(step, position + length - at);
      const start = at - (at % align);
      const end = Math.ceil((at + n) / align) * align;
      const window = bounce.subarray(0, end - start);
      if (!write || start !== at || end !== at + n) readvAll(this.#fd, [window], start);
      fill(bounce, at - start, at, n);
      if (write) writevAll(this.#fd, [window], start);
      at += n;
    }
  }

  #bounceBytes(): Buffer {
    if (this.#bounce === undefined) {
      const fd = native.memfdCreate('vhost-user-backend-bounce', 0);
      try {
        native.ftruncate(fd, BOUNCE_BYTES);
        const { handle, buffer } = native.mmap(fd, BOUNCE_BYTES, 0, 'plain');
        this.#bounce = { fd, handle, bytes: Buffer.from(buffer as ArrayBuffer) };
      } catch (err) {
        native.close(fd);
        throw err;
      }
    }
    return this.#bounce.bytes;
  }

  #releaseBounce(): void {
    const bounce = this.#bounce;
    if (bounce === undefined) return;
    this.#bounce = undefined;
    native.munmap(bounce.handle);
    native.close(bounce.fd);
  }
}

function fstatOf(path: string, flags: number): number {
  const fd = openSync(path, flags);
  try {
    return fstatSync(fd).size;
  } finally {
    closeSync(fd);
  }
}

/** readv until every buffer is full; bytes past the end of the file read as zeroes. */
function readvAll(fd: number, buffers: readonly Buffer[], position: number): void {
  let bufs = [...buffers];
  let at = position;
  while (bufs.length > 0) {
    const batch = bufs.length > IOV_MAX ? bufs.slice(0, IOV_MAX) : bufs;
    const n = readvSync(fd, batch, at);
    if (n === 0) {
      for (const b of bufs) b.fill(0);
      return;
    }
    at += n;
    bufs = advance(bufs, n);
  }
}

function writevAll(fd: number, buffers: readonly Buffer[], position: number): void {
  let bufs = [...buffers];
  let at = position;
  while (bufs.length > 0) {
    const batch = bufs.length > IOV_MAX ? bufs.slice(0, IOV_MAX) : bufs;
    const n = writevSync(fd, batch, at);
    at += n;
    bufs = advance(bufs, n);
  }
}

/** Drops the first n bytes of a buffer list. */
function advance(bufs: Buffer[], n: number): Buffer[] {
  let i = 0;
  let left = n;
  while (i < bufs.length && left >= bufs[i]!.length) left -= bufs[i++]!.length;
  const rest = bufs.slice(i);
  if (left > 0 && rest.length > 0) rest[0] = rest[0]!.subarray(left);
  return rest.filter((b) => b.length > 0);
}

function byteLength(segments: readonly IoSegment[]): number {
  let n = 0;
  for (const s of segments) n += s.buf.length;
  return n;
}

function byteLengthOf(bufs: readonly Buffer[]): number {
  let n = 0;
  for (const b of bufs) n += b.length;
  return n;
}

/** Copies `src` into the byte stream formed by `segments`, starting `skip` bytes in. */
export function copyToSegments(segments: readonly IoSegment[], skip: number, src: Buffer): void {
  let done = 0;
  for (const s of segments) {
    if (done >= src.length) return;
    if (skip >= s.buf.length) {
      skip -= s.buf.length;
      continue;
    }
    done += src.copy(s.buf, skip, done, done + s.buf.length - skip);
    skip = 0;
  }
}

/** Copies bytes of the stream formed by `segments`, starting `skip` bytes in, into `dst`. */
export function copyFromSegments(segments: readonly IoSegment[], skip: number, dst: Buffer): void {
  let done = 0;
  for (const s of segments) {
    if (done >= dst.length) return;
    if (skip >= s.buf.length) {
      skip -= s.buf.length;
      continue;
    }
    done += s.buf.copy(dst, done, skip, Math.min(s.buf.length, skip + dst.length - done));
    skip = 0;
  }
}
