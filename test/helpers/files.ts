import { closeSync, openSync, readSync } from 'node:fs';

/** Bytes of a backing file, read directly: the independent witness of what reached the disk. */
export function fileBytes(path: string, position: number, length: number): Buffer {
  const fd = openSync(path, 'r');
  try {
    const out = Buffer.alloc(length);
    readSync(fd, out, 0, length, position);
    return out;
  } finally {
    closeSync(fd);
  }
}
