/**
 * Cross-thread proof of the ring's memory ordering and notification handshakes: the driver runs
 * here, the device in a worker over the same SharedArrayBuffer. Kicks and interrupts go through
 * Int32 doorbells; each side sleeps only after re-enabling notifications and re-checking the ring,
 * so a missing fence or a wrong suppression decision shows up as a timed-out wait (test failure)
 * or as corrupted data, not as a hang.
 */

import assert from 'node:assert/strict';
import { describe, it, type TestContext } from 'node:test';
import { Worker } from 'node:worker_threads';
import { splitRingLayout } from '../../src/virtqueue/layout.js';
import { type Segment, SplitVirtqueue } from '../../src/virtqueue/split.js';
import { DIGEST_INIT, digestFinish, digestUpdate, patternByte } from '../helpers/fake-device.js';
import {
  BELL_COUNT,
  BELL_DEVICE_FAILED,
  BELL_IRQ,
  BELL_KICK,
  BELL_STOP,
  type DeviceWorkerData,
  type DeviceWorkerResult,
} from '../helpers/fake-device-worker.js';

const WAIT_MS = 2000;
const SLOT_BYTES = 4096;
const HDR_OFF = 0;
const STATUS_OFF = 32;
const DATA_OFF = 64;
const MAX_SEG = 512;
const GPA_BASE = 2 ** 36;

interface Config {
  size: number;
  eventIdx: boolean;
  indirect: boolean;
  requests: number;
  seed: number;
}

function startDevice(data: DeviceWorkerData): {
  ready: Promise<void>;
  done: Promise<DeviceWorkerResult>;
  exited: Promise<void>;
} {
  const worker = new Worker(new URL('../helpers/fake-device-worker.js', import.meta.url), {
    workerData: data,
  });
  let readyResolve: () => void = () => {};
  const ready = new Promise<void>((resolve) => (readyResolve = resolve));
  const done = new Promise<DeviceWorkerResult>((resolve, reject) => {
    worker.on('message', (m: { type: string }) => {
      if (m.type === 'ready') readyResolve();
      else if (m.type === 'done') resolve(m as DeviceWorkerResult);
    });
    worker.on('error', reject);
    worker.on('exit', (code) => reject(new Error(`device worker exited with code ${code}`)));
  });
  const exited = new Promise<void>((resolve) => worker.once('exit', () => resolve()));
  return { ready, done, exited };
}

async function stress(t: TestContext, cfg: Config): Promise<void> {
  const { size } = cfg;
  assert.ok(size <= 256, 'token packs the slot into 8 bits');
  const layout = splitRingLayout(size, cfg.indirect ? Math.min(size, 8) : 0);
  const dataBase = Math.ceil(layout.totalBytes / 4096) * 4096;
  const ring = new SharedArrayBuffer(dataBase + size * SLOT_BYTES);
  const bellsBuffer = new SharedArrayBuffer(4 * BELL_COUNT);
  const bells = new Int32Array(bellsBuffer);
  const features = { eventIdx: cfg.eventIdx, indirect: cfg.indirect };
  const vq = new SplitVirtqueue(0, layout, { buffer: ring, offset: 0, gpa: GPA_BASE }, features);
  const u8 = new Uint8Array(ring);
  const view = new DataView(ring);

  const device = startDevice({
    ring,
    bells: bellsBuffer,
    layout,
    ringOffset: 0,
    ringGpa: GPA_BASE,
    gpaBase: GPA_BASE,
    features,
    waitMs: WAIT_MS,
  });
  await device.ready;

  // Per-slot request state, preallocated like a real driver's.
  const freeSlots = Int32Array.from({ length: size }, (_, i) => i);
  let numFreeSlots = size;
  const expectedLen = new Uint32Array(size);
  const expectedStatus = new Uint8Array(size);
  const isRead = new Uint8Array(size);
  const segLens = new Uint16Array(size * 4);
  const nSegs = new Uint8Array(size);
  const returned = new Uint8Array(cfg.requests);
  const chains: Segment[][] = [];
  for (let n = 0; n <= 6; n++)
    chains.push(Array.from({ length: n }, () => ({ gpa: 0, len: 0, write: false })));

  let rng = cfg.seed >>> 0 || 1;
  const rand = (): number => {
    rng ^= rng << 13;
    rng ^= rng >>> 17;
    rng ^= rng << 5;
    return (rng >>>= 0);
  };

  let submitted = 0;
  let completed = 0;
  let kicks = 0;
  let driverSleeps = 0;

  const onUsed = (token: number, len: number): void => {
    const slot = token & 0xff;
    const req = token >>> 8;
    assert.equal(returned[req], 0, `request ${req} returned twice`);
    returned[req] = 1;
    const base = dataBase + slot * SLOT_BYTES;
    assert.equal(len, expectedLen[slot], `request ${req}: used len`);
    assert.equal(u8[base + STATUS_OFF], expectedStatus[slot], `request ${req}: status byte`);
    if (isRead[slot] === 1) {
      let k = 0;
      for (let s = 0; s < nSegs[slot]!; s++) {
        const off = base + DATA_OFF + s * MAX_SEG;
        const l = segLens[slot * 4 + s]!;
        for (let i = 0; i < l; i++, k++) {
          if (u8[off + i] !== patternByte(token, k)) {
            assert.fail(
              `request ${req}: read data byte ${k} is ${u8[off + i]}, expected ${patternByte(token, k)}`,
            );
          }
        }
      }
    }
    freeSlots[numFreeSlots++] = slot;
    completed++;
  };

  const started = performance.now();
  let failure: unknown;
  try {
    vq.disableInterrupts(); // poll while busy; re-enable only before sleeping
    while (completed < cfg.requests) {
      if (Atomics.load(bells, BELL_DEVICE_FAILED) !== 0) break;
      let added = 0;
      while (submitted < cfg.requests && numFreeSlots > 0) {
        const r = rand();
        const nData = 1 + (r & 3);
        const n = nData + 2;
        if (!vq.canAdd(n)) break;
        const read = (r & 4) !== 0;
        const slot = freeSlots[--numFreeSlots]!;
        const token = submitted * 256 + slot;
        const base = dataBase + slot * SLOT_BYTES;
        const segs = chains[n]!;
        let dataBytes = 0;
        let h = DIGEST_INIT;
        for (let s = 0; s < nData; s++) {
          const l = 1 + (rand() % MAX_SEG);
          const off = base + DATA_OFF + s * MAX_SEG;
          segLens[slot * 4 + s] = l;
          const bytes = u8.subarray(off, off + l);
          if (read) bytes.fill(0);
          else {
            for (let i = 0; i < l; i++) bytes[i] = patternByte(token, dataBytes + i);
            h = digestUpdate(h, bytes);
          }
          dataBytes += l;
          const seg = segs[s + 1]!;
          seg.gpa = GPA_BASE + off;
          seg.len = l;
          seg.write = read;
        }
        view.setUint32(base + HDR_OFF, read ? 0 : 1, true);
        view.setUint32(base + HDR_OFF + 4, token, true);
        view.setUint32(base + HDR_OFF + 8, dataBytes, true);
        segs[0]!.gpa = GPA_BASE + base + HDR_OFF;
        segs[0]!.len = 16;
        segs[0]!.write = false;
        const status = segs[n - 1]!;
        status.gpa = GPA_BASE + base + STATUS_OFF;
        status.len = 1;
        status.write = true;
        nSegs[slot] = nData;
        isRead[slot] = read ? 1 : 0;
        expectedLen[slot] = read ? dataBytes + 1 : 1;
        expectedStatus[slot] = read ? token & 0xff : digestFinish(h);
        u8[base + STATUS_OFF] = ~expectedStatus[slot]! & 0xff;
        assert.equal(vq.add(segs, token), true);
        submitted++;
        added++;
        // Publish in random-sized batches so the device sees both single and batched updates.
        if ((rand() & 7) === 0) break;
      }
      if (added > 0) {
        vq.publish();
        if (vq.kickNeeded()) {
          kicks++;
          Atomics.add(bells, BELL_KICK, 1);
          Atomics.notify(bells, BELL_KICK);
        }
      }
      const max = (rand() & 15) === 0 ? 1 + (rand() & 3) : undefined;
      if (vq.drain(onUsed, max) > 0) continue;
      if (added > 0) continue; // try to add more before sleeping
      // Sleep only after asking for interrupts and re-checking used.idx; read the doorbell first
      // so an interrupt that lands in between makes Atomics.wait return at once.
      const seen = Atomics.load(bells, BELL_IRQ);
      if (vq.enableInterrupts()) {
        vq.disableInterrupts();
        continue;
      }
      if (Atomics.load(bells, BELL_DEVICE_FAILED) !== 0) break;
      driverSleeps++;
      if (Atomics.wait(bells, BELL_IRQ, seen, WAIT_MS) === 'timed-out') {
        throw new Error(
          `lost interrupt: driver waited ${WAIT_MS} ms with ${vq.inFlight} requests in flight ` +
            `(avail ${vq.availIdx}, used ${vq.lastUsedIdx}, hasUsed ${vq.hasUsed()})`,
        );
      }
      vq.disableInterrupts();
    }
  } catch (err) {
    failure = err;
  } finally {
    Atomics.store(bells, BELL_STOP, 1);
    Atomics.add(bells, BELL_KICK, 1);
    Atomics.notify(bells, BELL_KICK);
  }
  const elapsed = performance.now() - started;
  const result = await device.done;
  await device.exited;

  // Report both sides: a lost wake-up usually shows as both waiting until their timeouts.
  const problems = [...result.violations, ...result.errors];
  if (failure !== undefined) problems.unshift(`driver: ${String(failure)}`);
  if (problems.length > 0) {
    assert.fail(`stress run failed after ${completed} requests:\n${problems.join('\n')}`);
  }
  assert.equal(completed, cfg.requests);
  assert.equal(result.processed, cfg.requests);
  assert.equal(
    returned.every((b) => b === 1),
    true,
    'every request returned once',
  );
  assert.equal(vq.inFlight, 0);
  assert.equal(vq.freeDescriptors, size);
  const rate = Math.round((cfg.requests / elapsed) * 1000);
  t.diagnostic(
    `size ${size} eventIdx ${cfg.eventIdx} indirect ${cfg.indirect}: ${cfg.requests} requests ` +
      `in ${elapsed.toFixed(0)} ms (${rate} req/s); kicks ${kicks} ` +
      `(${((kicks / cfg.requests) * 100).toFixed(1)}%), interrupts ${result.interrupts} ` +
      `(${((result.interrupts / cfg.requests) * 100).toFixed(1)}%); driver sleeps ${driverSleeps}, ` +
      `device sleeps ${result.sleeps}`,
  );
}

describe('split virtqueue across threads', { timeout: 120_000 }, () => {
  const configs: Config[] = [
    { size: 8, eventIdx: false, indirect: false, requests: 75_000, seed: 1 },
    { size: 8, eventIdx: true, indirect: true, requests: 75_000, seed: 2 },
    { size: 256, eventIdx: false, indirect: true, requests: 75_000, seed: 3 },
    { size: 256, eventIdx: true, indirect: false, requests: 75_000, seed: 4 },
  ];
  for (const cfg of configs) {
    it(`size ${cfg.size}, EVENT_IDX ${cfg.eventIdx}, indirect ${cfg.indirect}`, (t) =>
      stress(t, cfg));
  }
});
