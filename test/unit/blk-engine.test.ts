/**
 * The virtio-blk request path (block engine + BlkQueue + split ring) against an in-memory device
 * that parses every chain and checks the ring rules and the device's advertised limits.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  BlockEngine,
  type IoMemory,
  type Operation,
  type OperationCallback,
} from '../../src/block/engine.js';
import { ReadOp } from '../../src/block/read-op.js';
import { WriteOp } from '../../src/block/write-op.js';
import { CommandOp } from '../../src/block/command-ops.js';
import type { BlockDriver, BlockLimits, BlockRequest } from '../../src/block/request.js';
import { RangeAllocator } from '../../src/memory/allocator.js';
import { BlkQueue, SLOT_STRIDE } from '../../src/devices/blk/blk-queue.js';
import { newDeviceStats, type DeviceStats } from '../../src/devices/stats.js';
import { splitRingLayout } from '../../src/virtqueue/layout.js';
import { SplitVirtqueue } from '../../src/virtqueue/split.js';
import { FakeSplitDevice, type ParsedChain } from '../helpers/fake-device.js';
import { prng, randomBytes, randomInt } from '../helpers/random.js';
import { native } from '../../src/native.js';

const GPA_BASE = 0x4000_0000;
const DISK_SIZE = 1024 * 1024;

interface Harness {
  engine: BlockEngine;
  device: FakeSplitDevice;
  queue: BlkQueue;
  disk: Buffer;
  stats: DeviceStats;
  chains: ParsedChain[];
  run(op: Operation): void;
  close(): void;
}

/** One SharedArrayBuffer holds rings, request slots and the data area, all at GPA_BASE + offset. */
function harness(opts: {
  queueSize: number;
  sizeMax: number;
  segMax: number;
  indirect: boolean;
  eventIdx: boolean;
}): Harness {
  const layout = splitRingLayout(
    opts.queueSize,
    opts.indirect ? Math.min(opts.segMax + 2, opts.queueSize) : 0,
  );
  const slotsOffset = Math.ceil(layout.totalBytes / 4096) * 4096;
  const dataOffset = Math.ceil((slotsOffset + opts.queueSize * SLOT_STRIDE) / 4096) * 4096;
  const dataSize = 2 * 1024 * 1024;
  const sab = new SharedArrayBuffer(dataOffset + dataSize);
  const bytes = new Uint8Array(sab);
  const vq = new SplitVirtqueue(0, layout, { buffer: sab, offset: 0, gpa: GPA_BASE }, opts);
  const stats = newDeviceStats();
  const kickFd = native.eventfd();
  const callFd = native.eventfd();
  const queue = new BlkQueue(
    vq,
    { buffer: sab, slotsOffset, slotsGpa: GPA_BASE + slotsOffset },
    { kickFd, callFd },
    opts.sizeMax,
    stats,
  );
  const limits: BlockLimits = {
    blockSize: 512,
    capacity: DISK_SIZE,
    readOnly: false,
    maxSegmentBytes: opts.sizeMax,
    maxSegments: opts.segMax,
    maxTransferBytes: Infinity,
    canFlush: true,
    canDiscard: true,
    canWriteZeroes: true,
    maxDiscardBytes: 64 * 1024,
    maxWriteZeroesBytes: 64 * 1024,
  };
  const driver: BlockDriver = {
    limits,
    trySubmit: (request: BlockRequest) => queue.trySubmit(request),
    get inFlight() {
      return queue.inFlight;
    },
  };
  const memory: IoMemory = {
    allocator: new RangeAllocator(dataSize),
    dataGpa: GPA_BASE + dataOffset,
    dataBytes: new Uint8Array(sab, dataOffset, dataSize),
    dataOffsetOf: () => -1,
  };
  const engine = new BlockEngine(driver, memory, stats, () => {}, { bounceChunkBytes: 64 * 1024 });
  const device = new FakeSplitDevice(layout, { buffer: sab, offset: 0, gpa: GPA_BASE }, opts, {
    translate: (gpa, len) => {
      const off = gpa - GPA_BASE;
      if (off < 0 || off + len > sab.byteLength)
        throw new RangeError(`gpa 0x${gpa.toString(16)} outside memory`);
      return off;
    },
    sizeMax: opts.sizeMax,
    segMax: opts.segMax + 2, // the fake counts header and status too
  });
  const disk = Buffer.alloc(DISK_SIZE);
  const chains: ParsedChain[] = [];
  // A RAM disk speaking virtio-blk: header (readable), data, status (last writable byte).
  const serve = (chain: ParsedChain): number => {
    chains.push(chain);
    const hdr = chain.readable[0]!;
    const view = new DataView(sab, hdr.offset, 16);
    const type = view.getUint32(0, true);
    const sector = Number(view.getBigUint64(8, true));
    const status = chain.writable[chain.writable.length - 1]!;
    let at = sector * 512;
    let written = 1;
    if (type === 0) {
      for (const seg of chain.writable.slice(0, -1)) {
        bytes.set(disk.subarray(at, at + seg.len), seg.offset);
        at += seg.len;
        written += seg.len;
      }
    } else if (type === 1) {
      for (const seg of chain.readable.slice(1)) {
        disk.set(bytes.subarray(seg.offset, seg.offset + seg.len), at);
        at += seg.len;
      }
    } else if (type === 11 || type === 13) {
      const seg = new DataView(sab, chain.readable[1]!.offset, 16);
      const start = Number(seg.getBigUint64(0, true)) * 512;
      const count = seg.getUint32(8, true) * 512;
      disk.fill(0, start, start + count);
    }
    bytes[status.offset] = 0;
    return written;
  };
  return {
    engine,
    device,
    queue,
    disk,
    stats,
    chains,
    run(op: Operation) {
      engine.start(op);
      for (let spins = 0; !op.settled; spins++) {
        assert.ok(spins < 100000, 'operation did not finish');
        queue.kick();
        device.process(serve);
        queue.drain();
        engine.pump();
      }
    },
    close() {
      native.close(kickFd);
      native.close(callFd);
    },
  };
}

function settle(): { cb: OperationCallback; result: { error: Error | null; value: number } } {
  const result = { error: null as Error | null, value: -1 };
  return {
    cb: (op, e) => {
      result.error = e;
      result.value = e === null ? Number(op.result()) : 0;
    },
    result,
  };
}

for (const indirect of [false, true]) {
  test(`size_max 4096 / seg_max 4 are respected (indirect ${indirect})`, () => {
    const h = harness({ queueSize: 16, sizeMax: 4096, segMax: 4, indirect, eventIdx: true });
    const rand = prng(21);
    const data = randomBytes(rand, 40000);
    const w = settle();
    h.run(new WriteOp(h.engine, 'write', data, false, 1000, data.length, w.cb));
    assert.equal(w.result.error, null);
    assert.ok(h.disk.subarray(1000, 41000).equals(data));
    for (const chain of h.chains) {
      const dataSegs = chain.readable.length - 1 + chain.writable.length - 1;
      assert.ok(dataSegs <= 4, `chain with ${dataSegs} data segments`);
      for (const seg of [...chain.readable.slice(1), ...chain.writable.slice(0, -1)]) {
        assert.ok(seg.len <= 4096, `segment of ${seg.len} bytes`);
      }
      assert.equal(chain.indirect, indirect, 'indirect descriptors used exactly when negotiated');
    }
    assert.deepEqual(h.device.violations, []);

    // A 16 KiB aligned read needs exactly 4 segments of 4096: one request, not four.
    h.chains.length = 0;
    const into = Buffer.alloc(16384);
    const r = settle();
    h.run(new ReadOp(h.engine, into, 4096, 16384, r.cb));
    assert.equal(r.result.error, null);
    assert.ok(into.equals(h.disk.subarray(4096, 4096 + 16384)));
    assert.equal(h.chains.length, 1);
    assert.deepEqual(
      h.chains[0]!.writable.map((s) => s.len),
      [4096, 4096, 4096, 4096, 1],
    );
    // 16 KiB + 512 needs a fifth segment: it is split into two requests.
    h.chains.length = 0;
    const r2 = settle();
    h.run(new ReadOp(h.engine, Buffer.alloc(16896), 0, 16896, r2.cb));
    assert.equal(h.chains.length, 2);
    h.close();
  });
}

test('random unaligned I/O through a small ring matches a model', () => {
  for (const eventIdx of [false, true]) {
    const h = harness({ queueSize: 8, sizeMax: 4096, segMax: 3, indirect: !eventIdx, eventIdx });
    const model = Buffer.alloc(DISK_SIZE);
    const rand = prng(eventIdx ? 1 : 2);
    for (let i = 0; i < 200; i++) {
      const length = randomInt(rand, 1, 30000);
      const position = randomInt(rand, 0, DISK_SIZE - length);
      const data = randomBytes(rand, length);
      const w = settle();
      h.run(new WriteOp(h.engine, 'write', data, false, position, length, w.cb));
      assert.equal(w.result.error, null);
      data.copy(model, position);
      const into = Buffer.alloc(randomInt(rand, 1, 30000));
      const rp = randomInt(rand, 0, DISK_SIZE - into.length);
      const r = settle();
      h.run(new ReadOp(h.engine, into, rp, into.length, r.cb));
      assert.ok(into.equals(model.subarray(rp, rp + into.length)), `iteration ${i}`);
    }
    assert.ok(h.disk.equals(model));
    assert.deepEqual(h.device.violations, []);
    h.close();
  }
});

test('discard requests stay inside the blocks they were given and respect max_discard', () => {
  const h = harness({ queueSize: 16, sizeMax: 4096, segMax: 4, indirect: true, eventIdx: true });
  h.disk.fill(0x77);
  const c = settle();
  h.run(new CommandOp(h.engine, 'discard', 512, 200 * 1024, c.cb));
  assert.equal(c.result.error, null);
  assert.equal(h.chains.length, Math.ceil((200 * 1024) / (64 * 1024)));
  assert.ok(h.disk.subarray(0, 512).every((b) => b === 0x77));
  assert.ok(h.disk.subarray(512, 512 + 200 * 1024).every((b) => b === 0));
  assert.ok(h.disk.subarray(512 + 200 * 1024).every((b) => b === 0x77));
  h.close();
});

test('a status byte the device never wrote fails the request', () => {
  const h = harness({ queueSize: 8, sizeMax: 4096, segMax: 4, indirect: false, eventIdx: false });
  const c = settle();
  h.engine.start(new CommandOp(h.engine, 'flush', 0, 0, c.cb));
  h.queue.kick();
  // Return the chain without touching the status byte (still the 0xff preset).
  h.device.process(() => 0);
  h.queue.drain();
  assert.equal((c.result.error as { code?: string } | null)?.code, 'VHOST_USER_ERR_QUEUE_BROKEN');
  h.close();
});

test('no kicks while the device sets VRING_USED_F_NO_NOTIFY; one per batch otherwise', () => {
  for (const eventIdx of [false, true]) {
    const h = harness({ queueSize: 64, sizeMax: 4096, segMax: 4, indirect: true, eventIdx });
    const batch = (): void => {
      const results = Array.from({ length: 32 }, () => settle());
      for (let i = 0; i < 32; i++) {
        h.engine.start(new ReadOp(h.engine, Buffer.alloc(512), i * 512, 512, results[i]!.cb));
      }
      h.queue.kick();
      while (results.some((r) => r.result.value < 0)) {
        h.device.process(() => 1);
        h.queue.drain();
      }
    };
    if (!eventIdx) {
      // A polling device (SPDK) sets NO_NOTIFY: kicks would be wasted system calls.
      h.device.setNoNotify(true);
      batch();
      assert.equal(h.stats.kicks, 0, 'kicked a device that asked for no notifications');
      h.device.setNoNotify(false);
    } else {
      // With EVENT_IDX the device asks through avail_event: keep it at the current index.
      h.device.setAvailEvent(0);
    }
    const before = h.stats.kicks;
    batch();
    assert.equal(h.stats.kicks - before, 1, '32 requests in one batch must cost one kick');
    h.close();
  }
});

test('bounce buffers are reused, and handed back when memory is needed', () => {
  const h = harness({ queueSize: 16, sizeMax: 4096, segMax: 4, indirect: true, eventIdx: true });
  const allocator = h.engine.memory.allocator;
  const total = allocator.freeBytes;
  for (let i = 0; i < 3; i++) {
    const r = settle();
    h.run(new ReadOp(h.engine, Buffer.alloc(1000), 100, 1000, r.cb));
    assert.equal(r.result.error, null);
  }
  // One bounce buffer stays cached for the next request of that size...
  assert.equal(allocator.allocatedCount, 1);
  assert.ok(allocator.freeBytes < total);
  // ...until the application needs the memory.
  assert.equal(h.engine.releaseCachedMemory(), true);
  assert.equal(allocator.freeBytes, total);
  assert.equal(allocator.allocatedCount, 0);
  h.close();
});
