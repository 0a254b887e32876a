import { test } from 'node:test';
import assert from 'node:assert/strict';
import { native } from '../../src/native.js';
import { BackendMemory } from '../../src/backend/guest-memory.js';
import { DeviceQueue, type DeviceQueueFeatures } from '../../src/backend/device-queue.js';
import { BlkDevice } from '../../src/backend/blk-device.js';
import { RamStorage } from '../../src/backend/storage.js';
import {
  splitRingLayout,
  VIRTQ_AVAIL_F_NO_INTERRUPT,
  VIRTQ_DESC_F_INDIRECT as INDIRECT,
  VIRTQ_DESC_F_NEXT as NEXT,
  VIRTQ_DESC_F_WRITE as WRITE,
} from '../../src/virtqueue/layout.js';
import {
  VIRTIO_BLK_S_IOERR,
  VIRTIO_BLK_S_OK,
  VIRTIO_BLK_S_UNSUPP,
  VirtioBlkType,
} from '../../src/devices/blk/spec.js';

const MEM = 1 << 20;
const GPA = 0x10_0000;
const UVA = 0x7f00_0000_0000;
const SIZE = 8;
const layout = splitRingLayout(SIZE, 0);
/** Request areas (offsets in the region). */
const HDR = 0x10000;
const DATA = 0x11000;
const STATUS = 0x12000;
const TABLE = 0x13000;

interface Rig {
  queue: DeviceQueue;
  device: BlkDevice;
  storage: RamStorage;
  view: DataView;
  bytes: Uint8Array;
  desc(i: number, off: number, len: number, flags: number, next?: number): void;
  /** Writes an indirect-table entry at TABLE. */
  entry(i: number, off: number, len: number, flags: number, next?: number): void;
  publish(head: number): void;
  header(type: number, sector?: number): void;
  usedElem(i: number): { id: number; len: number };
  close(): void;
}

function rig(
  features: DeviceQueueFeatures = { eventIdx: true, indirect: true },
  limits = { sizeMax: 0, segMax: 126 },
): Rig {
  const fd = native.memfdCreate('backend-queue-test', 0);
  native.ftruncate(fd, MEM);
  native.memfdSeal(fd);
  const mapping = native.mmap(fd, MEM, 0, 'shared');
  const region = {
    guestPhysAddr: BigInt(GPA),
    memorySize: BigInt(MEM),
    userspaceAddr: BigInt(UVA),
    mmapOffset: 0n,
  };
  const memory = BackendMemory.map([region], [fd]);
  const queue = new DeviceQueue(
    0,
    {
      size: SIZE,
      descUva: UVA + layout.descOffset,
      availUva: UVA + layout.availOffset,
      usedUva: UVA + layout.usedOffset,
    },
    0,
    memory,
    features,
    limits,
  );
  const storage = new RamStorage(1 << 20);
  const view = new DataView(mapping.buffer);
  const writeDesc = (at: number, off: number, len: number, flags: number, next = 0): void => {
    const addr = off < 0 ? 0x7fff_0000 : GPA + off; // negative: unmapped
    view.setUint32(at, addr % 0x1_0000_0000, true);
    view.setUint32(at + 4, Math.floor(addr / 0x1_0000_0000), true);
    view.setUint32(at + 8, len, true);
    view.setUint16(at + 12, flags, true);
    view.setUint16(at + 14, next, true);
  };
  let availIdx = 0;
  return {
    queue,
    storage,
    device: new BlkDevice(storage, storage.size, false, Buffer.from('unit')),
    view,
    bytes: new Uint8Array(mapping.buffer),
    desc: (i, off, len, flags, next) =>
      writeDesc(layout.descOffset + 16 * i, off, len, flags, next),
    entry: (i, off, len, flags, next) => writeDesc(TABLE + 16 * i, off, len, flags, next),
    publish: (head) => {
      view.setUint16(layout.availOffset + 4 + 2 * (availIdx % SIZE), head, true);
      availIdx = (availIdx + 1) & 0xffff;
      view.setUint16(layout.availOffset + 2, availIdx, true);
    },
    header: (type, sector = 0) => {
      view.setUint32(HDR, type, true);
      view.setUint32(HDR + 4, 0, true);
      view.setBigUint64(HDR + 8, BigInt(sector), true);
    },
    usedElem: (i) => ({
      id: view.getUint32(layout.usedOffset + 4 + 8 * i, true),
      len: view.getUint32(layout.usedOffset + 8 + 8 * i, true),
    }),
    close: () => {
      memory.close();
      native.munmap(mapping.handle);
    },
  };
}

/** The usual read: header, one 512-byte data buffer, status. */
function readChain(r: Rig): void {
  r.header(VirtioBlkType.VIRTIO_BLK_T_IN);
  r.desc(0, HDR, 16, NEXT, 1);
  r.desc(1, DATA, 512, WRITE | NEXT, 2);
  r.desc(2, STATUS, 1, WRITE);
}

type Outcome = 'ok' | 'ioerr' | 'broken';
interface Row {
  name: string;
  features?: DeviceQueueFeatures;
  limits?: { sizeMax: number; segMax: number };
  build(r: Rig): void;
  expect: Outcome;
  overLimit?: boolean;
}

const rows: Row[] = [
  { name: 'valid direct chain', build: (r) => (readChain(r), r.publish(0)), expect: 'ok' },
  {
    name: 'valid indirect chain',
    build: (r) => {
      r.header(VirtioBlkType.VIRTIO_BLK_T_IN);
      r.entry(0, HDR, 16, NEXT, 1);
      r.entry(1, DATA, 512, WRITE | NEXT, 2);
      r.entry(2, STATUS, 1, WRITE);
      r.desc(5, TABLE, 48, INDIRECT);
      r.publish(5);
    },
    expect: 'ok',
  },
  {
    name: 'head index out of range',
    build: (r) => (readChain(r), r.publish(SIZE)),
    expect: 'broken',
  },
  {
    name: 'next index out of range',
    build: (r) => (readChain(r), r.desc(1, DATA, 512, WRITE | NEXT, 40), r.publish(0)),
    expect: 'broken',
  },
  {
    name: 'loop in the descriptor table',
    build: (r) => (readChain(r), r.desc(2, STATUS, 1, WRITE | NEXT, 0), r.publish(0)),
    expect: 'broken',
  },
  {
    name: 'indirect table length not a multiple of 16',
    build: (r) => (r.desc(0, TABLE, 40, INDIRECT), r.publish(0)),
    expect: 'broken',
  },
  {
    name: 'indirect table outside guest memory',
    build: (r) => (r.desc(0, -1, 48, INDIRECT), r.publish(0)),
    expect: 'broken',
  },
  {
    name: 'loop inside an indirect table',
    build: (r) => {
      r.entry(0, HDR, 16, NEXT, 1);
      r.entry(1, STATUS, 1, WRITE | NEXT, 0);
      r.desc(0, TABLE, 32, INDIRECT);
      r.publish(0);
    },
    expect: 'broken',
  },
  {
    name: 'nested indirect table',
    build: (r) => {
      r.header(VirtioBlkType.VIRTIO_BLK_T_IN);
      r.entry(0, HDR, 16, NEXT, 1);
      r.entry(1, TABLE, 48, INDIRECT | NEXT, 2);
      r.entry(2, STATUS, 1, WRITE);
      r.desc(0, TABLE, 48, INDIRECT);
      r.publish(0);
    },
    expect: 'ioerr',
  },
  {
    name: 'INDIRECT combined with NEXT',
    build: (r) => {
      r.header(VirtioBlkType.VIRTIO_BLK_T_IN);
      r.entry(0, HDR, 16, NEXT, 1);
      r.entry(1, STATUS, 1, WRITE);
      r.desc(0, TABLE, 32, INDIRECT | NEXT, 1);
      r.publish(0);
    },
    expect: 'ioerr',
  },
  {
    name: 'indirect descriptor without the feature',
    features: { eventIdx: true, indirect: false },
    build: (r) => {
      r.header(VirtioBlkType.VIRTIO_BLK_T_IN);
      r.entry(0, HDR, 16, NEXT, 1);
      r.entry(1, STATUS, 1, WRITE);
      r.desc(0, TABLE, 32, INDIRECT);
      r.publish(0);
    },
    expect: 'ioerr',
  },
  {
    name: 'readable descriptor after a writable one',
    build: (r) => {
      r.header(VirtioBlkType.VIRTIO_BLK_T_IN);
      r.desc(0, HDR, 16, NEXT, 1);
      r.desc(1, DATA, 512, WRITE | NEXT, 2);
      r.desc(2, DATA, 512, NEXT, 3);
      r.desc(3, STATUS, 1, WRITE);
      r.publish(0);
    },
    expect: 'ioerr',
  },
  {
    name: 'data buffer outside guest memory',
    build: (r) => (readChain(r), r.desc(1, -1, 512, WRITE | NEXT, 2), r.publish(0)),
    expect: 'ioerr',
  },
  {
    name: 'data buffer running past the end of its region',
    build: (r) => (readChain(r), r.desc(1, MEM - 256, 512, WRITE | NEXT, 2), r.publish(0)),
    expect: 'ioerr',
  },
  {
    name: 'status byte outside guest memory',
    build: (r) => (readChain(r), r.desc(2, -1, 1, WRITE), r.publish(0)),
    expect: 'broken',
  },
  {
    name: 'no writable status descriptor',
    build: (r) => (readChain(r), r.desc(2, STATUS, 1, 0), r.publish(0)),
    expect: 'broken',
  },
  {
    name: 'empty status descriptor',
    build: (r) => (readChain(r), r.desc(2, STATUS, 0, WRITE), r.publish(0)),
    expect: 'broken',
  },
  {
    name: 'segment larger than size_max',
    limits: { sizeMax: 256, segMax: 126 },
    build: (r) => (readChain(r), r.publish(0)),
    expect: 'ioerr',
    overLimit: true,
  },
  {
    name: 'more data segments than seg_max',
    limits: { sizeMax: 0, segMax: 1 },
    build: (r) => {
      r.header(VirtioBlkType.VIRTIO_BLK_T_IN);
      r.desc(0, HDR, 16, NEXT, 1);
      r.desc(1, DATA, 256, WRITE | NEXT, 2);
      r.desc(2, DATA + 256, 256, WRITE | NEXT, 3);
      r.desc(3, STATUS, 1, WRITE);
      r.publish(0);
    },
    expect: 'ioerr',
    overLimit: true,
  },
  {
    name: 'avail.idx more than the queue size ahead',
    build: (r) => {
      readChain(r);
      r.publish(0);
      r.view.setUint16(layout.availOffset + 2, SIZE + 5, true);
    },
    expect: 'broken',
  },
  {
    name: 'header shorter than 16 bytes',
    build: (r) => (readChain(r), r.desc(0, HDR, 8, NEXT, 1), r.publish(0)),
    expect: 'ioerr',
  },
  {
    name: 'read past the capacity',
    build: (r) => (readChain(r), r.header(VirtioBlkType.VIRTIO_BLK_T_IN, 2048), r.publish(0)),
    expect: 'ioerr',
  },
  {
    name: 'data length not a whole sector',
    build: (r) => (readChain(r), r.desc(1, DATA, 500, WRITE | NEXT, 2), r.publish(0)),
    expect: 'ioerr',
  },
];

for (const row of rows) {
  test(`device queue: ${row.name} -> ${row.expect}`, () => {
    const r = rig(row.features, row.limits);
    try {
      r.bytes[STATUS] = 0xff;
      row.build(r);
      let chain;
      assert.doesNotThrow(() => (chain = r.queue.pop()));
      if (row.expect === 'broken') {
        assert.equal(chain, undefined);
        assert.equal(typeof r.queue.broken, 'string');
        assert.equal(r.queue.pop(), undefined, 'a broken queue stays stopped');
        return;
      }
      assert.ok(chain, `no chain; broken: ${r.queue.broken}`);
      const result = r.device.execute(chain);
      assert.equal(r.bytes[STATUS], row.expect === 'ok' ? VIRTIO_BLK_S_OK : VIRTIO_BLK_S_IOERR);
      assert.equal(result.rejected, row.overLimit === true);
      if (row.expect === 'ok') assert.equal(result.len, 513);
      else assert.equal(result.len, 1);
      assert.equal(r.queue.broken, undefined);
    } finally {
      r.close();
    }
  });
}

test('device queue: write then read through the used ring, header split over descriptors', () => {
  const r = rig();
  try {
    r.header(VirtioBlkType.VIRTIO_BLK_T_OUT, 3);
    r.bytes.fill(0xab, DATA, DATA + 1024);
    r.desc(0, HDR, 10, NEXT, 1);
    r.desc(1, HDR + 10, 6, NEXT, 2);
    r.desc(2, DATA, 1024, NEXT, 3);
    r.desc(3, STATUS, 1, WRITE);
    r.publish(0);
    const chain = r.queue.pop()!;
    const result = r.device.execute(chain);
    assert.equal(result.status, VIRTIO_BLK_S_OK);
    r.queue.pushUsed(chain.head, result.len);
    assert.deepEqual(r.usedElem(0), { id: 0, len: 1 });
    assert.equal(r.view.getUint16(layout.usedOffset + 2, true), 1);

    r.bytes.fill(0, DATA, DATA + 2048);
    r.header(VirtioBlkType.VIRTIO_BLK_T_IN, 2);
    r.desc(4, HDR, 16, NEXT, 5);
    r.desc(5, DATA, 2048, WRITE | NEXT, 6);
    r.desc(6, STATUS, 1, WRITE);
    r.publish(4);
    const read = r.queue.pop()!;
    const back = r.device.execute(read);
    r.queue.pushUsed(read.head, back.len);
    assert.deepEqual(r.usedElem(1), { id: 4, len: 2049 });
    const got = Buffer.from(r.bytes.subarray(DATA, DATA + 2048));
    assert.ok(got.subarray(0, 512).every((b) => b === 0));
    assert.ok(got.subarray(512, 1536).every((b) => b === 0xab));
    assert.ok(got.subarray(1536).every((b) => b === 0));
    assert.equal(r.queue.lastAvail, 2);
  } finally {
    r.close();
  }
});

test('device queue: unknown request type is UNSUPP; GET_ID fills the id', () => {
  const r = rig();
  try {
    readChain(r);
    r.header(77);
    r.publish(0);
    const chain = r.queue.pop()!;
    assert.equal(r.device.execute(chain).status, VIRTIO_BLK_S_UNSUPP);
    r.header(VirtioBlkType.VIRTIO_BLK_T_GET_ID);
    r.desc(3, HDR, 16, NEXT, 4);
    r.desc(4, DATA, 20, WRITE | NEXT, 5);
    r.desc(5, STATUS, 1, WRITE);
    r.publish(3);
    const id = r.device.execute(r.queue.pop()!);
    assert.equal(id.len, 21);
    assert.equal(Buffer.from(r.bytes.subarray(DATA, DATA + 4)).toString(), 'unit');
  } finally {
    r.close();
  }
});

test('device queue: interrupts follow used_event, kicks follow avail_event', () => {
  const r = rig({ eventIdx: true, indirect: true });
  const usedEvent = layout.availOffset + 4 + 2 * SIZE;
  const availEvent = layout.usedOffset + 4 + 8 * SIZE;
  try {
    readChain(r);
    r.publish(0);
    const chain = r.queue.pop()!;
    // The driver wants an interrupt once used.idx passes 0.
    r.view.setUint16(usedEvent, 0, true);
    r.queue.pushUsed(chain.head, 1);
    assert.equal(r.queue.needsInterrupt(), true);
    assert.equal(r.queue.needsInterrupt(), false, 'nothing new since the last decision');
    // used_event far behind: no interrupt for the next element.
    r.view.setUint16(usedEvent, 0xff00, true);
    r.publish(0);
    r.queue.pushUsed(r.queue.pop()!.head, 1);
    assert.equal(r.queue.needsInterrupt(), false);
    // Re-enabling kicks publishes avail_event = next avail index, then re-checks the ring.
    assert.equal(r.queue.enableKicks(), false);
    assert.equal(r.view.getUint16(availEvent, true), 2);
    r.publish(0);
    assert.equal(r.queue.enableKicks(), true, 'a chain published meanwhile must be seen');
    r.queue.suppressKicks();
    // 0x7fff ahead of the next avail index (2): out of the driver's reach.
    assert.equal(r.view.getUint16(availEvent, true), 0x8001);
    assert.equal(r.view.getUint16(layout.usedOffset, true), 1, 'NO_NOTIFY set with EVENT_IDX too');
    assert.equal(r.queue.enableKicks(), true, 'the chain is still pending');
    assert.equal(r.view.getUint16(availEvent, true), 2);
    assert.equal(r.view.getUint16(layout.usedOffset, true), 0, 'NO_NOTIFY cleared');
  } finally {
    r.close();
  }
  const flags = rig({ eventIdx: false, indirect: true });
  try {
    readChain(flags);
    flags.publish(0);
    flags.queue.pushUsed(flags.queue.pop()!.head, 1);
    flags.view.setUint16(layout.availOffset, VIRTQ_AVAIL_F_NO_INTERRUPT, true);
    assert.equal(flags.queue.needsInterrupt(), false);
    flags.queue.suppressKicks();
    assert.equal(flags.view.getUint16(layout.usedOffset, true), 1, 'NO_NOTIFY set');
    flags.queue.enableKicks();
    assert.equal(flags.view.getUint16(layout.usedOffset, true), 0, 'NO_NOTIFY cleared');
  } finally {
    flags.close();
  }
});
