/** Raw SCSI commands and waits shared by the virtio-scsi tests. */
import type { BlockDevice } from '../../src/index.js';
import { ScsiOp } from '../../src/devices/scsi/cdb.js';

/** Resolves (ms waited) once every request the device was given has come back, else rejects. */
export async function allReturned(dev: BlockDevice, ms: number): Promise<number> {
  const start = Date.now();
  while (dev.stats.requests !== dev.stats.completions) {
    if (Date.now() - start > ms) {
      throw new Error(
        `${dev.stats.requests - dev.stats.completions} request(s) still held after ${ms} ms`,
      );
    }
    await new Promise((r) => setTimeout(r, 5));
  }
  return Date.now() - start;
}

/** READ(16) of `blocks` blocks at `lba`. */
export function read16(lba: number, blocks: number): Uint8Array {
  const cdb = new Uint8Array(16);
  cdb[0] = ScsiOp.READ_16;
  new DataView(cdb.buffer).setBigUint64(2, BigInt(lba));
  new DataView(cdb.buffer).setUint32(10, blocks);
  return cdb;
}
