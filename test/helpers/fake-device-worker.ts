/**
 * Worker thread that plays a virtio-blk-like device over a shared split ring, for the cross-thread
 * memory-ordering stress test. Kicks and interrupts are emulated with Int32 doorbells.
 *
 * Request format (set by the stress test): readable header of 16 bytes { type u32 (0 read,
 * 1 write), token u32, dataBytes u32, pad }, then data segments (readable for write, writable for
 * read), then a 1-byte writable status. For a write the device checks the data pattern and stores
 * a digest of it as status; for a read it fills the data with the pattern and status = token & 0xff.
 */

import { parentPort, workerData } from 'node:worker_threads';
import type { SplitRingLayout } from '../../src/virtqueue/layout.js';
import {
  DIGEST_INIT,
  digestFinish,
  digestUpdate,
  FakeSplitDevice,
  type ParsedChain,
  patternByte,
} from './fake-device.js';

/** Doorbell slots in the Int32Array over `bells`. */
export const BELL_KICK = 0;
export const BELL_IRQ = 1;
export const BELL_STOP = 2;
export const BELL_DEVICE_FAILED = 3;
export const BELL_COUNT = 4;

export interface DeviceWorkerData {
  ring: SharedArrayBuffer;
  bells: SharedArrayBuffer;
  layout: SplitRingLayout;
  ringOffset: number;
  ringGpa: number;
  /** GPA of byte 0 of `ring`. */
  gpaBase: number;
  features: { eventIdx: boolean; indirect: boolean };
  waitMs: number;
}

export interface DeviceWorkerResult {
  type: 'done';
  processed: number;
  interrupts: number;
  /** Times the device went to sleep on the kick doorbell. */
  sleeps: number;
  violations: string[];
  errors: string[];
}

function run(data: DeviceWorkerData): DeviceWorkerResult {
  const bells = new Int32Array(data.bells);
  const u8 = new Uint8Array(data.ring);
  const view = new DataView(data.ring);
  const errors: string[] = [];
  const dev = new FakeSplitDevice(
    data.layout,
    { buffer: data.ring, offset: data.ringOffset, gpa: data.ringGpa },
    data.features,
    {
      translate(gpa, len) {
        const off = gpa - data.gpaBase;
        if (off < 0 || off + len > data.ring.byteLength) throw new RangeError('outside memory');
        return off;
      },
      onInterrupt() {
        Atomics.add(bells, BELL_IRQ, 1);
        Atomics.notify(bells, BELL_IRQ);
      },
    },
  );

  const handle = (chain: ParsedChain): number => {
    const hdr = chain.readable[0];
    const status = chain.writable[chain.writable.length - 1];
    if (hdr === undefined || hdr.len !== 16 || status === undefined || status.len !== 1) {
      errors.push(`chain ${chain.head}: bad request shape`);
      return 0;
    }
    const type = view.getUint32(hdr.offset, true);
    const token = view.getUint32(hdr.offset + 4, true);
    const dataBytes = view.getUint32(hdr.offset + 8, true);
    let k = 0;
    if (type === 1) {
      let h = DIGEST_INIT;
      for (let s = 1; s < chain.readable.length; s++) {
        const seg = chain.readable[s]!;
        const bytes = u8.subarray(seg.offset, seg.offset + seg.len);
        for (let i = 0; i < bytes.length; i++, k++) {
          if (bytes[i] !== patternByte(token, k)) {
            errors.push(`token ${token}: write data byte ${k} is ${bytes[i]}, not the pattern`);
            break;
          }
        }
        h = digestUpdate(h, bytes);
      }
      if (k !== dataBytes) errors.push(`token ${token}: ${k} data bytes, header says ${dataBytes}`);
      u8[status.offset] = digestFinish(h);
      return 1;
    }
    for (let s = 0; s < chain.writable.length - 1; s++) {
      const seg = chain.writable[s]!;
      for (let i = 0; i < seg.len; i++, k++) u8[seg.offset + i] = patternByte(token, k);
    }
    if (k !== dataBytes) errors.push(`token ${token}: ${k} data bytes, header says ${dataBytes}`);
    u8[status.offset] = token & 0xff;
    return k + 1;
  };

  let processed = 0;
  let sleeps = 0;
  // Poll with kicks suppressed; sleep only after re-enabling kicks and re-checking the ring.
  dev.disableNotifications();
  for (;;) {
    if (Atomics.load(bells, BELL_STOP) !== 0) break;
    const n = dev.process(handle);
    if (n > 0) {
      processed += n;
      if (errors.length > 0 || dev.violations.length > 0) break;
      continue;
    }
    // Read the doorbell before re-checking the ring: a kick that lands after this load changes the
    // value, so Atomics.wait returns at once instead of sleeping through it.
    const seen = Atomics.load(bells, BELL_KICK);
    if (dev.enableNotifications()) {
      dev.disableNotifications();
      continue;
    }
    if (Atomics.load(bells, BELL_STOP) !== 0) break;
    sleeps++;
    const r = Atomics.wait(bells, BELL_KICK, seen, data.waitMs);
    if (r === 'timed-out' && Atomics.load(bells, BELL_STOP) === 0) {
      errors.push(
        `device: no kick for ${data.waitMs} ms (lost kick?); ${dev.availablePending()} chains ` +
          `available, avail index ${dev.lastAvailIdx}`,
      );
      break;
    }
    dev.disableNotifications();
  }
  if (errors.length > 0 || dev.violations.length > 0) {
    Atomics.store(bells, BELL_DEVICE_FAILED, 1);
    Atomics.add(bells, BELL_IRQ, 1);
    Atomics.notify(bells, BELL_IRQ);
  }
  return {
    type: 'done',
    processed,
    interrupts: dev.interrupts,
    sleeps,
    violations: dev.violations.slice(0, 20),
    errors: errors.slice(0, 20),
  };
}

if (parentPort !== null && workerData !== null && typeof workerData === 'object') {
  const port = parentPort;
  port.postMessage({ type: 'ready' });
  port.postMessage(run(workerData as DeviceWorkerData));
}
