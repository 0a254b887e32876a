import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { InvalidArgumentError, QueueBrokenError } from '../../src/errors.js';
import {
  splitRingLayout,
  VIRTQ_AVAIL_F_NO_INTERRUPT,
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
  vringNeedEvent,
} from '../../src/virtqueue/layout.js';
import { type Segment, SplitVirtqueue } from '../../src/virtqueue/split.js';
import {
  FakeSplitDevice,
  type FakeDeviceOptions,
  type ParsedChain,
} from '../helpers/fake-device.js';

/** GPA of byte 0 of the buffer: above 4 GiB so the high half of every address is exercised. */
const GPA_BASE = 2 ** 40;
const RING_OFFSET = 4096;

interface Rig {
  vq: SplitVirtqueue;
  dev: FakeSplitDevice;
  u8: Uint8Array;
  buffer: SharedArrayBuffer;
  /** Byte offset of the data area. */
  dataOff: number;
  gpa(offset: number): number;
}

function rig(
  opts: {
    size?: number;
    indirectEntries?: number;
    eventIdx?: boolean;
    indirect?: boolean;
    dataBytes?: number;
    device?: Partial<FakeDeviceOptions>;
  } = {},
): Rig {
  const size = opts.size ?? 8;
  const features = { eventIdx: opts.eventIdx ?? false, indirect: opts.indirect ?? false };
  const layout = splitRingLayout(size, opts.indirectEntries ?? 0);
  const dataOff = RING_OFFSET + Math.ceil(layout.totalBytes / 4096) * 4096;
  const buffer = new SharedArrayBuffer(dataOff + (opts.dataBytes ?? 65536));
  const memory = { buffer, offset: RING_OFFSET, gpa: GPA_BASE + RING_OFFSET };
  const vq = new SplitVirtqueue(3, layout, memory, features);
  const dev = new FakeSplitDevice(layout, memory, features, {
    translate(gpa, len) {
      const off = gpa - GPA_BASE;
      if (off < 0 || off + len > buffer.byteLength) throw new RangeError('outside memory');
      return off;
    },
    ...opts.device,
  });
  return { vq, dev, u8: new Uint8Array(buffer), buffer, dataOff, gpa: (o) => GPA_BASE + o };
}

const seg = (gpa: number, len: number, write: boolean): Segment => ({ gpa, len, write });

function noUsed(): never {
  throw new Error('unexpected used element');
}

describe('splitRingLayout', () => {
  it('places the areas with spec alignment and computes totalBytes', () => {
    const cases = [
      { size: 1, e: 1, desc: 0, avail: 16, used: 64, indirect: 80, total: 96 },
      { size: 8, e: 4, desc: 0, avail: 128, used: 192, indirect: 272, total: 784 },
      { size: 256, e: 0, desc: 0, avail: 4096, used: 4672, indirect: 6736, total: 6736 },
      {
        size: 32768,
        e: 16,
        desc: 0,
        avail: 524288,
        used: 589888,
        indirect: 852048,
        total: 852048 + 32768 * 16 * 16,
      },
    ];
    for (const c of cases) {
      const l = splitRingLayout(c.size, c.e);
      assert.deepEqual(
        [l.descOffset, l.availOffset, l.usedOffset, l.indirectOffset, l.totalBytes],
        [c.desc, c.avail, c.used, c.indirect, c.total],
        `size ${c.size}`,
      );
      assert.equal(l.size, c.size);
      assert.equal(l.indirectEntries, c.e);
      assert.equal(l.descOffset % 16, 0);
      assert.equal(l.availOffset % 2, 0);
      assert.equal(l.usedOffset % 64, 0, 'used ring on its own cache line');
      assert.ok(l.usedOffset >= l.availOffset + 6 + 2 * c.size, 'avail ring fits');
      assert.ok(l.indirectOffset >= l.usedOffset + 6 + 8 * c.size, 'used ring fits');
      assert.equal(l.indirectOffset % 16, 0);
    }
  });

  it('rejects sizes that are not powers of two in 1..32768', () => {
    for (const size of [0, 3, 6, 100, 65536, 32769, -8, 1.5, NaN]) {
      assert.throws(() => splitRingLayout(size, 0), RangeError, `size ${size}`);
    }
    assert.throws(() => splitRingLayout(8, 9), RangeError, 'indirect table longer than queue');
    assert.throws(() => splitRingLayout(8, -1), RangeError);
  });
});

describe('vringNeedEvent', () => {
  it('follows the spec formula with 16-bit wrap-around', () => {
    const table: [event: number, newIdx: number, oldIdx: number, expected: boolean][] = [
      [0, 1, 0, true],
      [1, 1, 0, false],
      [0, 2, 1, false],
      [5, 10, 4, true],
      [4, 10, 5, false],
      [9, 10, 5, true],
      [10, 10, 5, false],
      [7, 7, 7, false],
      [65535, 0, 65535, true],
      [65534, 0, 65535, false],
      [65535, 1, 65534, true],
      [0, 1, 65535, true],
      [1, 1, 65535, false],
      [65535, 65535, 65534, false],
      [65533, 2, 65530, true],
      [3, 2, 65530, false],
    ];
    for (const [event, newIdx, oldIdx, expected] of table) {
      assert.equal(
        vringNeedEvent(event, newIdx, oldIdx),
        expected,
        `vring_need_event(${event}, ${newIdx}, ${oldIdx})`,
      );
    }
  });
});

describe('SplitVirtqueue', () => {
  it('round-trips chains with data in both directions', () => {
    const r = rig();
    const hdr = r.dataOff;
    const out = r.dataOff + 512;
    const inA = r.dataOff + 1024;
    const inB = r.dataOff + 1536;
    const status = r.dataOff + 2048;
    r.u8.set([1, 2, 3, 4], hdr);
    r.u8.fill(0xab, out, out + 300);
    assert.equal(
      r.vq.add(
        [seg(r.gpa(hdr), 4, false), seg(r.gpa(out), 300, false), seg(r.gpa(status), 1, true)],
        7,
      ),
      true,
    );
    assert.equal(
      r.vq.add(
        [
          seg(r.gpa(hdr), 4, false),
          seg(r.gpa(inA), 100, true),
          seg(r.gpa(inB), 200, true),
          seg(r.gpa(status + 1), 1, true),
        ],
        2 ** 31,
      ),
      true,
    );
    assert.equal(r.vq.inFlight, 2);
    assert.equal(r.vq.freeDescriptors, 1);
    assert.equal(r.dev.availablePending(), 0, 'nothing visible before publish');
    r.vq.publish();
    assert.equal(r.vq.availIdx, 2);

    const seen: ParsedChain[] = [];
    const n = r.dev.process((chain) => {
      seen.push(chain);
      assert.deepEqual(
        [...r.u8.subarray(chain.readable[0]!.offset, chain.readable[0]!.offset + 4)],
        [1, 2, 3, 4],
      );
      let written = 0;
      if (chain.readable.length === 2) {
        const d = chain.readable[1]!;
        assert.equal(d.len, 300);
        assert.ok(r.u8.subarray(d.offset, d.offset + d.len).every((b) => b === 0xab));
      }
      for (const w of chain.writable) {
        r.u8.fill(0x5a, w.offset, w.offset + w.len);
        written += w.len;
      }
      return written;
    });
    assert.equal(n, 2);
    assert.deepEqual(r.dev.violations, []);
    assert.deepEqual(
      seen.map((c) => [c.readable.length, c.writable.length, c.writableBytes]),
      [
        [2, 1, 1],
        [1, 3, 301],
      ],
    );
    assert.equal(seen[1]!.writable[0]!.gpa, r.gpa(inA), 'u64 GPA survives the round trip');

    const done: [number, number][] = [];
    assert.equal(r.vq.hasUsed(), true);
    assert.equal(
      r.vq.drain((t, len) => done.push([t, len])),
      2,
    );
    assert.deepEqual(done, [
      [7, 1],
      [2 ** 31, 301],
    ]);
    assert.equal(r.vq.hasUsed(), false);
    assert.equal(r.vq.inFlight, 0);
    assert.equal(r.vq.freeDescriptors, 8);
    assert.equal(r.vq.lastUsedIdx, 2);
    assert.ok(r.u8.subarray(inA, inA + 100).every((b) => b === 0x5a));
    assert.equal(r.u8[status + 2], 0, 'device wrote nothing past the chain');
  });

  it('reports exhaustion with false / canAdd and refills after drain', () => {
    const r = rig({ size: 8 });
    const chain = [
      seg(r.gpa(r.dataOff), 16, false),
      seg(r.gpa(r.dataOff + 16), 16, true),
      seg(r.gpa(r.dataOff + 32), 1, true),
    ];
    assert.equal(r.vq.add(chain, 1), true);
    assert.equal(r.vq.add(chain, 2), true);
    assert.equal(r.vq.canAdd(3), false);
    assert.equal(r.vq.canAdd(2), true);
    assert.equal(r.vq.add(chain, 3), false);
    assert.equal(r.vq.freeDescriptors, 2);
    assert.equal(r.vq.inFlight, 2);
    r.vq.publish();
    r.dev.process(() => 0);
    const tokens: number[] = [];
    assert.equal(
      r.vq.drain((t) => tokens.push(t), 1),
      1,
      'max limits the pop',
    );
    assert.equal(r.vq.canAdd(3), true);
    assert.equal(
      r.vq.drain((t) => tokens.push(t)),
      1,
    );
    assert.deepEqual(tokens, [1, 2]);
    assert.equal(r.vq.freeDescriptors, 8);
    for (let i = 0; i < 2; i++) assert.equal(r.vq.add(chain, 10 + i), true);
    assert.equal(
      r.vq.add([seg(r.gpa(r.dataOff), 1, false), seg(r.gpa(r.dataOff), 1, false)], 12),
      true,
    );
    assert.equal(r.vq.freeDescriptors, 0);
    assert.equal(r.vq.canAdd(1), false);
    r.vq.publish();
    r.dev.process(() => 0);
    assert.equal(
      r.vq.drain(() => {}),
      3,
    );
    assert.equal(r.vq.freeDescriptors, 8);
    assert.deepEqual(r.dev.violations, []);
  });

  it('rejects chains that can never be added and bad arguments', () => {
    const r = rig({ size: 8, indirectEntries: 4, indirect: true });
    const one = seg(r.gpa(r.dataOff), 1, false);
    assert.throws(() => r.vq.add([], 1), RangeError);
    assert.throws(() => r.vq.add(new Array<Segment>(9).fill(one), 1), RangeError);
    assert.equal(r.vq.canAdd(9), false);
    assert.throws(() => r.vq.add([one], -1), RangeError);
    assert.throws(() => r.vq.add([one], 2 ** 31 + 1), RangeError);
    assert.throws(() => r.vq.add([one], 1.5), RangeError);
    assert.throws(() => r.vq.add([seg(2 ** 53, 1, false)], 1), RangeError);
    assert.throws(() => r.vq.add([seg(0, 2 ** 32, false)], 1), RangeError);
    assert.throws(() => r.vq.add([seg(0, 1, true), one], 1), InvalidArgumentError);
    assert.equal(r.vq.inFlight, 0);
    assert.equal(r.vq.freeDescriptors, 8, 'a rejected chain leaves nothing behind');
  });

  it('rejects memory that does not hold the ring', () => {
    const layout = splitRingLayout(8, 0);
    const buffer = new SharedArrayBuffer(8192);
    const f = { eventIdx: false, indirect: false };
    assert.throws(
      () => new SplitVirtqueue(0, layout, { buffer, offset: 100, gpa: 0 }, f),
      RangeError,
    );
    assert.throws(
      () => new SplitVirtqueue(0, layout, { buffer, offset: 8192, gpa: 0 }, f),
      RangeError,
    );
    assert.throws(
      () => new SplitVirtqueue(0, layout, { buffer, offset: 0, gpa: 8 }, f),
      RangeError,
    );
    const vq = new SplitVirtqueue(0, layout, { buffer, offset: 4096, gpa: 0x10000 }, f);
    assert.deepEqual([vq.descGpa, vq.availGpa, vq.usedGpa], [0x10000, 0x10080, 0x100c0]);
  });

  it('survives 16-bit index wrap-around with queue size 8 (70,000+ requests)', () => {
    const r = rig({ size: 8, indirectEntries: 4, indirect: true, dataBytes: 8 * 64 });
    const total = 70_123;
    let next = 0;
    let done = 0;
    let rng = 12345;
    const slotOf = (t: number): number => t % 8;
    const shapes: Segment[][] = [];
    for (let n = 1; n <= 8; n++) {
      shapes.push(Array.from({ length: n }, () => seg(0, 0, false)));
    }
    const returned = new Uint8Array(total);
    while (done < total) {
      rng = (Math.imul(rng, 1103515245) + 12345) >>> 0;
      let batch = 1 + (rng % 8);
      while (batch-- > 0 && next < total && r.vq.inFlight < 8) {
        const n = 1 + ((rng >>> 8) % 6);
        if (!r.vq.canAdd(n)) break;
        const segs = shapes[n - 1]!;
        const base = r.dataOff + slotOf(next) * 64;
        // First segment readable (carries the token), the rest writable, 4 bytes each.
        for (let i = 0; i < n; i++) {
          const s = segs[i]!;
          s.gpa = r.gpa(base + 4 * i);
          s.len = 4;
          s.write = i > 0;
        }
        new DataView(r.buffer).setUint32(base, next, true);
        assert.equal(r.vq.add(segs, next), true);
        next++;
      }
      r.vq.publish();
      r.dev.process((c) => {
        const token = new DataView(r.buffer).getUint32(c.readable[0]!.offset, true);
        for (const w of c.writable)
          new DataView(r.buffer).setUint32(w.offset, token ^ 0x5a5a5a5a, true);
        return c.writableBytes;
      });
      const before = done;
      const took = r.vq.drain((t, len) => {
        assert.equal(returned[t], 0, `token ${t} returned twice`);
        returned[t] = 1;
        const base = r.dataOff + slotOf(t) * 64;
        const view = new DataView(r.buffer);
        const n = len / 4 + 1;
        for (let i = 1; i < n; i++)
          assert.equal(view.getUint32(base + 4 * i, true), (t ^ 0x5a5a5a5a) >>> 0);
        done++;
      });
      // Counted across the index's wrap at 2^16 too.
      assert.equal(took, done - before);
    }
    assert.equal(
      returned.every((b) => b === 1),
      true,
    );
    assert.deepEqual(r.dev.violations, []);
    assert.equal(r.vq.availIdx, total & 0xffff);
    assert.equal(r.vq.lastUsedIdx, total & 0xffff);
    assert.equal(r.dev.usedIdx, total & 0xffff);
    assert.equal(r.vq.freeDescriptors, 8);
  });

  it('uses an indirect table only when negotiated and the chain fits it', () => {
    const shape = (r: Rig, n: number): Segment[] =>
      Array.from({ length: n }, (_, i) => seg(r.gpa(r.dataOff + 16 * i), 16, i === n - 1));

    const on = rig({ size: 8, indirectEntries: 4, indirect: true });
    on.vq.add(shape(on, 3), 1);
    assert.equal(on.vq.freeDescriptors, 7, 'indirect chain takes one ring descriptor');
    on.vq.add(shape(on, 1), 2);
    on.vq.add(shape(on, 5), 3);
    assert.equal(on.vq.freeDescriptors, 1);
    on.vq.publish();
    const flags: number[][] = [];
    const indirect: boolean[] = [];
    on.dev.process((c) => {
      flags.push(c.flags);
      indirect.push(c.indirect);
      return 0;
    });
    assert.deepEqual(on.dev.violations, []);
    assert.deepEqual(indirect, [true, false, false]);
    const N = VIRTQ_DESC_F_NEXT;
    const W = VIRTQ_DESC_F_WRITE;
    assert.deepEqual(flags, [[VIRTQ_DESC_F_INDIRECT, N, N, W], [W], [N, N, N, N, W]]);
    on.vq.drain(() => {});
    assert.equal(on.vq.freeDescriptors, 8);

    const off = rig({ size: 8, indirectEntries: 4, indirect: false });
    off.vq.add(shape(off, 3), 1);
    assert.equal(off.vq.freeDescriptors, 5);
    off.vq.publish();
    off.dev.process((c) => {
      assert.equal(c.indirect, false);
      assert.deepEqual(c.flags, [N, N, W]);
      return 0;
    });
    assert.equal(off.dev.popped, 1);
    assert.deepEqual(off.dev.violations, []);
  });

  it('kicks unless the device sets NO_NOTIFY (no EVENT_IDX)', () => {
    const r = rig();
    const one = [seg(r.gpa(r.dataOff), 1, false)];
    assert.equal(r.vq.kickNeeded(), false, 'nothing published');
    r.vq.add(one, 1);
    r.vq.publish();
    assert.equal(r.vq.kickNeeded(), true);
    assert.equal(r.vq.kickNeeded(), false, 'already decided for this index');
    r.dev.setNoNotify(true);
    r.vq.add(one, 2);
    r.vq.publish();
    assert.equal(r.vq.kickNeeded(), false);
    r.dev.setNoNotify(false);
    r.vq.add(one, 3);
    r.vq.publish();
    assert.equal(r.vq.kickNeeded(), true);
    r.dev.setAvailEvent(100);
    r.vq.add(one, 4);
    r.vq.publish();
    assert.equal(r.vq.kickNeeded(), true, 'avail_event is ignored without EVENT_IDX');
  });

  it('wants the next kick unless the device sets NO_NOTIFY (no EVENT_IDX)', () => {
    const r = rig();
    assert.equal(r.vq.wantsNextKick(), true);
    r.dev.setNoNotify(true);
    assert.equal(r.vq.wantsNextKick(), false, 'a device that polls');
    r.dev.setAvailEvent(100);
    r.dev.setNoNotify(false);
    assert.equal(r.vq.wantsNextKick(), true, 'avail_event is ignored without EVENT_IDX');
  });

  it('wants the next kick when avail_event is the published index (EVENT_IDX), across the wrap', () => {
    const r = rig({ size: 8, eventIdx: true });
    const one = [seg(r.gpa(r.dataOff), 1, false)];
    const publishOne = (): void => {
      assert.equal(r.vq.add(one, 0), true);
      r.vq.publish();
      r.vq.kickNeeded();
      r.dev.process(() => 0);
      r.vq.drain(() => {});
    };
    r.dev.setAvailEvent(0);
    assert.equal(r.vq.wantsNextKick(), true, 'the next chain (index 0 -> 1) passes 0');
    publishOne();
    r.dev.setAvailEvent(0);
    assert.equal(r.vq.wantsNextKick(), false, 'avail_event behind: the device asked for none');
    r.dev.setAvailEvent(5);
    assert.equal(r.vq.wantsNextKick(), false, 'avail_event ahead: not the next chain');
    r.dev.setAvailEvent(1);
    r.dev.setNoNotify(true);
    assert.equal(r.vq.wantsNextKick(), true, 'NO_NOTIFY is ignored with EVENT_IDX');
    while (r.vq.availIdx !== 65535) publishOne();
    r.dev.setAvailEvent(65535);
    assert.equal(r.vq.wantsNextKick(), true, '65535 -> 0 passes 65535');
    publishOne();
    assert.equal(r.vq.availIdx, 0);
    r.dev.setAvailEvent(0);
    assert.equal(r.vq.wantsNextKick(), true);
    r.dev.setAvailEvent(65535);
    assert.equal(r.vq.wantsNextKick(), false);
  });

  it('kicks when avail.idx passes avail_event (EVENT_IDX), across 65535 -> 0', () => {
    const r = rig({ size: 8, eventIdx: true });
    const one = [seg(r.gpa(r.dataOff), 1, false)];
    const publish = (k: number): void => {
      for (let i = 0; i < k; i++) assert.equal(r.vq.add(one, i), true);
      r.vq.publish();
    };
    const complete = (): void => {
      r.dev.process(() => 0);
      r.vq.drain(() => {});
    };
    publish(1); // 0 -> 1, avail_event 0
    assert.equal(r.vq.kickNeeded(), true);
    publish(1); // 1 -> 2
    assert.equal(r.vq.kickNeeded(), false);
    r.dev.setNoNotify(false);
    r.dev.setAvailEvent(2);
    publish(1); // 2 -> 3
    assert.equal(r.vq.kickNeeded(), true);
    r.dev.setNoNotify(true);
    r.dev.setAvailEvent(4);
    publish(3); // 3 -> 6 passes 4
    assert.equal(r.vq.kickNeeded(), true, 'NO_NOTIFY is ignored with EVENT_IDX');
    complete();
    r.dev.setAvailEvent(8);
    publish(2); // 6 -> 8 does not pass 8
    assert.equal(r.vq.kickNeeded(), false);
    complete();

    // Walk the index up to just below the wrap.
    while (r.vq.availIdx !== 65533) {
      publish(1);
      r.vq.kickNeeded();
      complete();
    }
    r.dev.setAvailEvent(65535);
    publish(2); // 65533 -> 65535: 65535 not passed
    assert.equal(r.vq.kickNeeded(), false);
    complete();
    publish(1); // 65535 -> 0 passes 65535
    assert.equal(r.vq.availIdx, 0);
    assert.equal(r.vq.kickNeeded(), true);
    complete();
    r.dev.setAvailEvent(1);
    publish(3); // 0 -> 3 passes 1
    assert.equal(r.vq.kickNeeded(), true);
    complete();
    r.dev.setAvailEvent(65534); // far behind
    publish(1);
    assert.equal(r.vq.kickNeeded(), false);
    complete();
    r.dev.setAvailEvent(3);
    assert.equal(r.dev.lastAvailIdx, 4);
    publish(1); // 4 -> 5; avail_event 3 already behind
    assert.equal(r.vq.kickNeeded(), false);
    complete();
    assert.deepEqual(r.dev.violations, []);
  });

  for (const eventIdx of [false, true]) {
    it(`suppresses interrupts and reports raced completions (EVENT_IDX ${eventIdx})`, () => {
      const r = rig({ eventIdx });
      const one = [seg(r.gpa(r.dataOff), 1, true)];
      const submit = (k: number): void => {
        for (let i = 0; i < k; i++) r.vq.add(one, i);
        r.vq.publish();
      };
      // Interrupts are on at start.
      submit(1);
      r.dev.process(() => 1);
      assert.equal(r.dev.interrupts, 1);
      assert.equal(
        r.vq.drain(() => {}),
        1,
      );

      r.vq.disableInterrupts();
      if (eventIdx) assert.equal(r.dev.usedEvent, 0, 'used_event = last used - 1');
      else assert.equal(r.dev.availFlags, VIRTQ_AVAIL_F_NO_INTERRUPT);
      submit(2);
      r.dev.process(() => 1);
      submit(1);
      r.dev.process(() => 1);
      assert.equal(r.dev.interrupts, 1, 'no interrupt while disabled');
      // Completions raced in before interrupts were re-enabled: the caller must drain.
      assert.equal(r.vq.enableInterrupts(), true);
      assert.equal(
        r.vq.drain(() => {}),
        3,
      );
      assert.equal(r.vq.enableInterrupts(), false);
      if (eventIdx) assert.equal(r.dev.usedEvent, 4);
      else assert.equal(r.dev.availFlags, 0);
      submit(1);
      r.dev.process(() => 1);
      assert.equal(r.dev.interrupts, 2, 'interrupt once enabled');
      submit(1);
      r.dev.process(() => 1);
      // EVENT_IDX: used_event 4 was passed by the previous batch, so no second interrupt until
      // the driver re-arms; without it every batch interrupts.
      assert.equal(r.dev.interrupts, eventIdx ? 2 : 3);
      assert.equal(
        r.vq.drain(() => {}),
        2,
      );
      assert.deepEqual(r.dev.violations, []);
    });
  }

  it('enableInterruptsAfter(k): one interrupt after k completions (EVENT_IDX), re-checked', () => {
    const r = rig({ size: 16, eventIdx: true });
    const one = [seg(r.gpa(r.dataOff), 1, true)];
    for (let i = 0; i < 10; i++) r.vq.add(one, i);
    r.vq.publish();
    assert.equal(r.vq.publishedInFlight, 10);
    assert.equal(r.vq.canBatchInterrupts, true);
    r.vq.disableInterrupts();
    r.dev.process(() => 1, 1);
    // One completion already pending: asking for 4 more than consumed does not race.
    assert.equal(r.vq.usedPending(), 1);
    assert.equal(r.vq.enableInterruptsAfter(4), false);
    assert.equal(r.dev.usedEvent, 3, 'used_event = last consumed + k - 1');
    r.dev.process(() => 1, 1);
    r.dev.process(() => 1, 1);
    assert.equal(r.dev.interrupts, 0, 'no interrupt before the 4th completion');
    r.dev.process(() => 1, 1);
    assert.equal(r.dev.interrupts, 1, 'the 4th completion interrupts');
    r.dev.process(() => 1, 2);
    assert.equal(r.dev.interrupts, 1, 'and only it');
    assert.equal(
      r.vq.drain(() => {}),
      6,
    );
    // k completions already pending: the caller must drain instead of sleeping.
    r.dev.process(() => 1, 2);
    assert.equal(r.vq.enableInterruptsAfter(2), true);
    assert.equal(r.vq.enableInterruptsAfter(3), false);
    // k <= 1 is a plain enableInterrupts(): the pending ones already count.
    assert.equal(r.vq.enableInterruptsAfter(1), true);
    assert.equal(r.dev.usedEvent, 6);
    assert.deepEqual(r.dev.violations, []);
  });

  it('enableInterruptsAfter without EVENT_IDX asks for every interrupt', () => {
    const r = rig({ size: 8, eventIdx: false });
    const one = [seg(r.gpa(r.dataOff), 1, true)];
    for (let i = 0; i < 4; i++) r.vq.add(one, i);
    r.vq.publish();
    assert.equal(r.vq.canBatchInterrupts, false);
    r.vq.disableInterrupts();
    assert.equal(r.vq.enableInterruptsAfter(4), false);
    assert.equal(r.dev.availFlags, 0);
    r.dev.process(() => 1, 1);
    assert.equal(r.dev.interrupts, 1);
    assert.equal(r.vq.enableInterruptsAfter(4), true, 'a pending completion is reported');
  });

  it('a callback that drains the ring itself: the outer drain stops where the nested one reached', () => {
    // The completion strategy re-arms with a drain when a callback tells it the device went idle
    // for its caller, while this drain still has elements to pop.
    const r = rig();
    const status = r.dataOff;
    for (let i = 0; i < 4; i++) {
      assert.equal(r.vq.add([seg(r.gpa(status + i), 1, true)], 10 + i), true);
    }
    r.vq.publish();
    assert.equal(
      r.dev.process(() => 1, 3),
      3,
    );
    const outer: number[] = [];
    const nested: number[] = [];
    const took = r.vq.drain((token) => {
      outer.push(token);
      if (outer.length === 1) {
        // The device returns the fourth meanwhile; the nested drain pops the rest.
        r.dev.process(() => 1);
        assert.equal(
          r.vq.drain((t) => nested.push(t)),
          3,
        );
      }
    });
    assert.equal(took, 1);
    assert.deepEqual(outer, [10]);
    assert.deepEqual(nested, [11, 12, 13]);
    assert.equal(r.vq.inFlight, 0);
    assert.equal(r.vq.broken, false);
    assert.equal(r.vq.drain(noUsed), 0);
  });

  describe('device misbehaviour breaks the queue', () => {
    const expectBroken = (r: Rig, pattern: RegExp): void => {
      const check = (e: unknown): boolean => {
        assert.ok(e instanceof QueueBrokenError);
        assert.equal(e.code, 'VHOST_USER_ERR_QUEUE_BROKEN');
        assert.equal(e.queue, 3);
        assert.match(e.message, pattern);
        return true;
      };
      assert.throws(() => r.vq.drain(noUsed), check);
      assert.equal(r.vq.broken, true);
      // Sticky: everything after fails fast with the same error.
      assert.throws(() => r.vq.drain(noUsed), check);
      assert.throws(() => r.vq.add([seg(r.gpa(r.dataOff), 1, true)], 1), check);
      assert.throws(() => r.vq.publish(), check);
      assert.equal(r.vq.canAdd(1), false);
    };
    const twoChains = (r: Rig): ParsedChain[] => {
      r.vq.add([seg(r.gpa(r.dataOff), 16, false), seg(r.gpa(r.dataOff + 16), 8, true)], 1);
      r.vq.add([seg(r.gpa(r.dataOff + 32), 16, false), seg(r.gpa(r.dataOff + 48), 8, true)], 2);
      r.vq.publish();
      return [r.dev.popAvailable()!, r.dev.popAvailable()!];
    };

    it('used id out of range', () => {
      const r = rig();
      twoChains(r);
      r.dev.pushUsed(8, 0);
      r.dev.publishUsed();
      expectBroken(r, /id 8 is out of range/);
    });

    it('duplicate used entry (id no longer in flight)', () => {
      const r = rig();
      const [a] = twoChains(r);
      r.dev.pushUsed(a!.head, 1);
      r.dev.pushUsed(a!.head, 1);
      r.dev.publishUsed();
      const got: number[] = [];
      assert.throws(() => r.vq.drain((t) => got.push(t)), /not the head of a chain in flight/);
      assert.deepEqual(got, [1], 'the valid element before the bad one was delivered');
      assert.equal(r.vq.broken, true);
    });

    it('used id that is inside a chain, not its head', () => {
      const r = rig();
      const [a] = twoChains(r);
      r.dev.pushUsed(a!.head + 1, 0);
      r.dev.publishUsed();
      expectBroken(r, /not the head/);
    });

    it('len larger than the writable bytes of the chain', () => {
      const r = rig();
      const [a] = twoChains(r);
      r.dev.pushUsed(a!.head, 9);
      r.dev.publishUsed();
      expectBroken(r, /len 9 exceeds the 8 writable bytes/);
    });

    it('used.idx jumps past the chains in flight', () => {
      const r = rig();
      twoChains(r);
      r.dev.setUsedIdxRaw(3);
      expectBroken(r, /only 2 chains are in flight/);
    });

    it('returning a chain that was added but not published', () => {
      const r = rig();
      r.vq.add([seg(r.gpa(r.dataOff), 8, true)], 1);
      r.dev.pushUsed(0, 0);
      r.dev.publishUsed();
      expectBroken(r, /only 0 chains are in flight/);
    });
  });
});

describe('FakeSplitDevice rule checks', () => {
  it('flags size_max, seg_max, loops and addresses outside memory', () => {
    const r = rig({ device: { sizeMax: 64, segMax: 1 } });
    r.vq.add(
      [
        seg(r.gpa(r.dataOff), 16, false),
        seg(r.gpa(r.dataOff + 16), 100, false),
        seg(r.gpa(r.dataOff + 200), 8, false),
        seg(r.gpa(r.dataOff + 300), 1, true),
      ],
      1,
    );
    r.vq.add([seg(GPA_BASE + r.buffer.byteLength, 16, false)], 2);
    r.vq.publish();
    r.dev.process(() => 0);
    assert.equal(r.dev.violations.length, 3, r.dev.violations.join('\n'));
    assert.match(r.dev.violations[0]!, /exceeds size_max 64/);
    assert.match(r.dev.violations[1]!, /2 data segments exceed seg_max 1/);
    assert.match(r.dev.violations[2]!, /outside memory/);

    // Corrupt a published chain into a loop: desc 1 -> desc 0.
    const c = rig();
    c.vq.add([seg(c.gpa(c.dataOff), 1, false), seg(c.gpa(c.dataOff), 1, false)], 1);
    const desc16 = new Uint16Array(c.buffer, RING_OFFSET, 8 * 8);
    desc16[8 + 6] = VIRTQ_DESC_F_NEXT;
    desc16[8 + 7] = 0;
    c.vq.publish();
    c.dev.process(() => 0);
    assert.match(c.dev.violations.join('\n'), /loop or chain longer than 8/);
  });
});
