/**
 * The virtio-scsi request queue against a fake device on the same ring: the chain it builds,
 * and what each response means (success, retry after backoff, typed error), including the cases
 * that must never be retried (a command whose caller gave up).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { splitRingLayout } from '../../src/virtqueue/layout.js';
import { SplitVirtqueue } from '../../src/virtqueue/split.js';
import { FakeSplitDevice, type ParsedChain } from '../helpers/fake-device.js';
import {
  MAX_NOT_READY_RETRIES,
  MAX_SCSI_RETRIES,
  ScsiRequestQueue,
  type ScsiQueueHost,
} from '../../src/devices/scsi/scsi-queue.js';
import { BlockRequest } from '../../src/block/request.js';
import { newDeviceStats } from '../../src/devices/stats.js';
import { ScsiOp, ScsiStatus } from '../../src/devices/scsi/cdb.js';
import { encodeFixedSense, SenseKey } from '../../src/devices/scsi/sense.js';
import {
  VirtioScsiCmdReqHeader,
  VirtioScsiResponse,
  decodeVirtioLun,
} from '../../src/devices/scsi/spec.js';
import {
  ScsiSenseError,
  ScsiStatusError,
  ShortTransferError,
  VirtioScsiResponseError,
} from '../../src/errors.js';

const GPA = 0x1_0000_0000;
const SIZE = 16;

interface Rig {
  queue: ScsiRequestQueue;
  dev: FakeSplitDevice;
  u8: Uint8Array;
  host: ScsiQueueHost & { aborts: bigint[]; due: number[]; deferred: ScsiSenseError[] };
  dataGpa: number;
}

function rig(): Rig {
  const layout = splitRingLayout(SIZE, 0);
  const ringBytes = Math.ceil(layout.totalBytes / 4096) * 4096;
  const areaBytes = ScsiRequestQueue.areaBytes(SIZE, 32, 96);
  const dataOff = ringBytes + Math.ceil(areaBytes / 4096) * 4096;
  const buffer = new SharedArrayBuffer(dataOff + 65536);
  const features = { eventIdx: false, indirect: false };
  const vq = new SplitVirtqueue(2, layout, { buffer, offset: 0, gpa: GPA }, features);
  const dev = new FakeSplitDevice(layout, { buffer, offset: 0, gpa: GPA }, features, {
    translate: (gpa, len) => {
      const off = gpa - GPA;
      if (off < 0 || off + len > buffer.byteLength) throw new RangeError('outside memory');
      return off;
    },
  });
  const stats = newDeviceStats();
  const host = {
    stats,
    aborts: [] as bigint[],
    due: [] as number[],
    deferred: [] as ScsiSenseError[],
    retryScheduled(due: number) {
      this.due.push(due);
    },
    abortTask(_t: number, _l: number, tag: bigint) {
      this.aborts.push(tag);
    },
    deferredError(error: ScsiSenseError) {
      this.deferred.push(error);
    },
  };
  const queue = new ScsiRequestQueue(
    { vq, kickFd: -1, callFd: -1 },
    { buffer, offset: ringBytes, gpa: GPA + ringBytes },
    {
      cdbSize: 32,
      senseSize: 96,
      target: 1,
      lun: 300,
      blockSize: 512,
      use16: true,
      discardWithUnmap: true,
      zeroesByUnmap: false,
      writeThrough: false,
      zeroBlockGpa: 0,
    },
    host,
  );
  return { queue, dev, u8: new Uint8Array(buffer), host, dataGpa: GPA + dataOff };
}

function request(kind: 'read' | 'write', dataGpa: number, owner: object = {}): BlockRequest {
  const r = new BlockRequest();
  r.kind = kind;
  r.position = 4096;
  r.length = 8192;
  r.dataGpa = dataGpa;
  r.owner = owner;
  return r;
}

/** What the device saw, and a way to answer it. */
function take(rig: Rig): { chain: ParsedChain; tag: bigint; cdb: Uint8Array } {
  const chain = rig.dev.popAvailable();
  assert.ok(chain, 'no chain on the ring');
  assert.deepEqual(chain.errors, []);
  const req = chain.readable[0]!;
  const view = new DataView(rig.u8.buffer, req.offset, req.len);
  const header = VirtioScsiCmdReqHeader.decodeFrom(view, 0);
  return { chain, tag: header.id, cdb: rig.u8.slice(req.offset + 19, req.offset + 19 + 16) };
}

function answer(
  rig: Rig,
  chain: ParsedChain,
  fields: { response?: number; status?: number; resid?: number; sense?: Uint8Array },
): void {
  const resp = chain.writable[0]!;
  const view = new DataView(rig.u8.buffer, resp.offset, resp.len);
  view.setUint32(0, fields.sense?.length ?? 0, true);
  view.setUint32(4, fields.resid ?? 0, true);
  view.setUint8(10, fields.status ?? 0);
  view.setUint8(11, fields.response ?? 0);
  if (fields.sense) rig.u8.set(fields.sense, resp.offset + 12);
  // The used len QEMU and SPDK report: the response area and the data-in buffers, whole.
  rig.dev.pushUsed(
    chain.head,
    chain.writable.reduce((n, s) => n + s.len, 0),
  );
  rig.dev.publishUsed();
  rig.queue.drain();
}

function outcome(r: BlockRequest): { error: Error | null | undefined } {
  const box: { error: Error | null | undefined } = { error: undefined };
  r.onComplete = (_req, error) => {
    box.error = error;
  };
  return box;
}

test('the chain is request, response, data-in for a read, with the LUN and a READ(16)', () => {
  const t = rig();
  const r = request('read', t.dataGpa);
  const done = outcome(r);
  assert.ok(t.queue.trySubmit(r));
  const { chain, cdb } = take(t);
  assert.equal(chain.readable.length, 1);
  assert.deepEqual(
    chain.writable.map((s) => s.len),
    [12 + 96, 8192],
  );
  assert.deepEqual(decodeVirtioLun(t.u8, chain.readable[0]!.offset), { target: 1, lun: 300 });
  assert.equal(cdb[0], ScsiOp.READ_16);
  assert.equal(new DataView(cdb.buffer).getUint32(10), 16); // blocks
  answer(t, chain, {});
  assert.equal(done.error, null);
  assert.equal(t.queue.inFlight, 0);
});

test('virtio BUSY is retried with backoff, the same command goes again, then succeeds', () => {
  const t = rig();
  const r = request('write', t.dataGpa);
  const done = outcome(r);
  t.queue.trySubmit(r);
  const first = take(t);
  assert.equal(first.chain.readable.length, 2, 'request and data-out are device-readable');
  answer(t, first.chain, { response: VirtioScsiResponse.VIRTIO_SCSI_S_BUSY });
  assert.equal(done.error, undefined, 'not answered yet');
  assert.equal(t.host.due.length, 1);
  // The drain itself resubmits what is due by the wall clock (Date.now(), whole ms): the 1 ms
  // backoff can be over already when the millisecond ticked during the drain.
  if (Date.now() < t.host.due[0]!) {
    assert.ok(t.queue.runDue(t.host.due[0]! - 1) >= 0, 'not due yet');
    assert.equal(t.dev.popAvailable(), undefined);
  }
  assert.equal(t.queue.runDue(t.host.due[0]!), -1);
  const second = take(t);
  assert.equal(second.tag, first.tag);
  answer(t, second.chain, {});
  assert.equal(done.error, null);
  assert.equal(t.host.stats.retries, 1);
});

test('a command whose caller gave up is aborted by tag and never retried', () => {
  for (const reply of [
    { response: VirtioScsiResponse.VIRTIO_SCSI_S_BUSY },
    { response: VirtioScsiResponse.VIRTIO_SCSI_S_TRANSPORT_FAILURE },
    { response: VirtioScsiResponse.VIRTIO_SCSI_S_ABORTED },
    { status: ScsiStatus.BUSY },
    {
      status: ScsiStatus.CHECK_CONDITION,
      sense: encodeFixedSense(SenseKey.UNIT_ATTENTION, 0x29, 0),
    },
  ]) {
    const t = rig();
    const owner = {};
    const r = request('read', t.dataGpa, owner);
    const done = outcome(r);
    t.queue.trySubmit(r);
    const { chain, tag } = take(t);
    t.queue.abandon(owner);
    assert.deepEqual(t.host.aborts, [tag]);
    answer(t, chain, reply);
    assert.ok(done.error instanceof Error, JSON.stringify(reply));
    assert.equal(t.host.due.length, 0, `retried after abandon: ${JSON.stringify(reply)}`);
    assert.equal(t.queue.runDue(Date.now() + 10_000), -1);
    assert.equal(t.dev.popAvailable(), undefined);
    assert.equal(t.queue.inFlight, 0);
  }
});

test('a retry still waiting for its backoff ends at once when abandoned', () => {
  const t = rig();
  const owner = {};
  const r = request('read', t.dataGpa, owner);
  const done = outcome(r);
  t.queue.trySubmit(r);
  // The drain resubmits what is due by the wall clock (whole ms): when the millisecond ticks
  // during it, the 1 ms backoff is over already and the retry goes at once. Answer again until
  // one waits (the backoff doubles each time).
  let chain = take(t).chain;
  for (let attempt = 0; ; attempt++) {
    answer(t, chain, { status: ScsiStatus.TASK_SET_FULL });
    const resent = t.dev.popAvailable();
    if (resent === undefined) break;
    assert.ok(attempt < 5, 'a retry waits for its backoff');
    chain = resent;
  }
  assert.ok(t.host.due.length >= 1);
  t.queue.abandon(owner);
  assert.ok(done.error instanceof VirtioScsiResponseError);
  assert.equal(t.host.aborts.length, 0, 'nothing to abort: the device does not hold it');
  assert.equal(t.queue.runDue(Date.now() + 10_000), -1);
  assert.equal(t.queue.inFlight, 0);
});

test('retries are bounded: BUSY forever ends in ScsiStatusError, NOT READY gets longer', () => {
  const t = rig();
  const r = request('read', t.dataGpa);
  const done = outcome(r);
  t.queue.trySubmit(r);
  for (let i = 0; i <= MAX_SCSI_RETRIES; i++) {
    answer(t, take(t).chain, { status: ScsiStatus.BUSY });
    t.queue.runDue(Date.now() + 10_000);
  }
  assert.ok(done.error instanceof ScsiStatusError);
  assert.equal(done.error.status, ScsiStatus.BUSY);

  const u = rig();
  const nr = request('read', u.dataGpa);
  const nrDone = outcome(nr);
  u.queue.trySubmit(nr);
  const becoming = encodeFixedSense(SenseKey.NOT_READY, 0x04, 0x01);
  for (let i = 0; i <= MAX_NOT_READY_RETRIES; i++) {
    answer(u, take(u).chain, { status: ScsiStatus.CHECK_CONDITION, sense: becoming });
    if (i < MAX_NOT_READY_RETRIES) assert.equal(nrDone.error, undefined, `attempt ${i}`);
    u.queue.runDue(Date.now() + 10_000_000);
  }
  assert.ok(nrDone.error instanceof ScsiSenseError);
  assert.equal(nrDone.error.senseKey, SenseKey.NOT_READY);
});

test('UNIT ATTENTION goes again at once; RECOVERED ERROR is success; a deferred error is reported and the command retried', () => {
  const t = rig();
  const r = request('read', t.dataGpa);
  const done = outcome(r);
  t.queue.trySubmit(r);
  const before = Date.now();
  answer(t, take(t).chain, {
    status: ScsiStatus.CHECK_CONDITION,
    sense: encodeFixedSense(SenseKey.UNIT_ATTENTION, 0x29, 0),
  });
  assert.ok(t.host.due[0]! <= Date.now() && t.host.due[0]! >= before);
  // drain() resubmits due retries itself once descriptors came back.
  const again = take(t);
  answer(t, again.chain, {
    status: ScsiStatus.CHECK_CONDITION,
    sense: encodeFixedSense(SenseKey.RECOVERED_ERROR, 0x17, 0x01),
  });
  assert.equal(done.error, null);

  const w = request('write', t.dataGpa);
  const wDone = outcome(w);
  t.queue.trySubmit(w);
  const deferred = encodeFixedSense(SenseKey.MEDIUM_ERROR, 0x0c, 0x00);
  deferred[0] = 0x71;
  answer(t, take(t).chain, { status: ScsiStatus.CHECK_CONDITION, sense: deferred });
  assert.equal(t.host.deferred.length, 1);
  assert.equal(t.host.deferred[0]!.deferred, true);
  assert.match(t.host.deferred[0]!.message, /deferred error/);
  t.queue.runDue(Date.now() + 10_000);
  answer(t, take(t).chain, {});
  assert.equal(wDone.error, null);
});

test('a read with a residual is a ShortTransferError; an unknown response is typed', () => {
  const t = rig();
  const r = request('read', t.dataGpa);
  const done = outcome(r);
  t.queue.trySubmit(r);
  answer(t, take(t).chain, { resid: 512 });
  assert.ok(done.error instanceof ShortTransferError);
  assert.equal(done.error.residual, 512);

  const b = request('read', t.dataGpa);
  const bDone = outcome(b);
  t.queue.trySubmit(b);
  answer(t, take(t).chain, { response: VirtioScsiResponse.VIRTIO_SCSI_S_BAD_TARGET });
  assert.ok(bDone.error instanceof VirtioScsiResponseError);
  assert.equal(bDone.error.responseName, 'VIRTIO_SCSI_S_BAD_TARGET');
});

test('a reused slot gets a new tag (an old ABORT TASK cannot hit the new command)', () => {
  const t = rig();
  const tags = new Set<bigint>();
  for (let i = 0; i < 3; i++) {
    const r = request('read', t.dataGpa);
    outcome(r);
    t.queue.trySubmit(r);
    const { chain, tag } = take(t);
    tags.add(tag);
    answer(t, chain, {});
  }
  assert.equal(tags.size, 3);
});
