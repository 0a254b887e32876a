/**
 * The embedded backend in vhost-user-scsi mode over a real socket, driven by the minimal
 * virtio-scsi driver of test/helpers/scsi-mini-driver.ts (raw vhost-user messages, rings in a
 * sealed memfd): request framing, residuals, BAD_TARGET, controlq task management on held
 * commands, eventq events and missed events, and the scsi faults.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  U64,
  decodeConfig,
  encodeConfig,
  VhostUserVringState,
} from '../../src/protocol/messages.js';
import { createBlockServer, type BlockServerOptions } from '../../src/backend/index.js';
import {
  VirtioScsiConfig,
  VirtioScsiEvent,
  VirtioScsiEventType,
  VirtioScsiFeature,
  VirtioScsiResponse,
  VirtioScsiTmf,
  VIRTIO_SCSI_EVT_RESET_RESCAN,
  VIRTIO_SCSI_T_EVENTS_MISSED,
} from '../../src/devices/scsi/spec.js';
import { buildInquiry, ScsiStatus } from '../../src/devices/scsi/cdb.js';
import { decodeStandardInquiry } from '../../src/devices/scsi/data.js';
import { SenseKey } from '../../src/devices/scsi/sense.js';
import { startEmbedded } from '../helpers/embedded-backend.js';
import { fileBytes } from '../helpers/files.js';
import {
  BS,
  cdbOf,
  command,
  completed,
  DISK,
  LUN,
  MiniDriver,
  postAnQuery,
  postCommand,
  readCdb,
  RESP,
  socketPath,
  TARGET,
  tmf,
  TUR,
  withDriver,
  writeCdb,
  type Completed,
} from '../helpers/scsi-mini-driver.js';

test('features, GET_QUEUE_NUM and the virtio_scsi_config', async () => {
  await withDriver({ queues: 2, maxSectors: 2048, segMax: 64 }, async (driver) => {
    const features = U64.decode(await driver.ask('VHOST_USER_GET_FEATURES')).value;
    for (const b of [
      VirtioScsiFeature.VIRTIO_SCSI_F_HOTPLUG,
      VirtioScsiFeature.VIRTIO_SCSI_F_CHANGE,
      32,
      28,
      29,
      24,
    ]) {
      assert.ok((features >> BigInt(b)) & 1n, `feature bit ${b} offered`);
    }
    assert.equal((features >> BigInt(VirtioScsiFeature.VIRTIO_SCSI_F_INOUT)) & 1n, 0n);
    assert.equal(
      U64.decode(await driver.ask('VHOST_USER_GET_QUEUE_NUM')).value,
      4n,
      'controlq + eventq + 2',
    );
    const reply = decodeConfig(
      await driver.ask(
        'VHOST_USER_GET_CONFIG',
        encodeConfig({ offset: 0, flags: 0, data: new Uint8Array(36) }),
      ),
      'GET_CONFIG',
    );
    assert.deepEqual(VirtioScsiConfig.decode(reply.data), {
      numQueues: 2,
      segMax: 64,
      maxSectors: 2048,
      cmdPerLun: 128,
      eventInfoSize: 16,
      senseSize: 96,
      cdbSize: 32,
      maxChannel: 0,
      maxTarget: 255,
      maxLun: 16383,
    });
  });
});

test('commands over the rings: INQUIRY, WRITE then READ with residual, used lengths', async () => {
  await withDriver({}, async (d) => {
    const inq = await command(
      d,
      cdbOf((o, a) => buildInquiry(o, a, undefined, 96)),
      { inLen: 96 },
    );
    assert.equal(inq.response, VirtioScsiResponse.VIRTIO_SCSI_S_OK);
    assert.equal(inq.status, ScsiStatus.GOOD);
    assert.equal(inq.resid, 96 - 36);
    assert.equal(inq.used.len, RESP + 36);
    assert.equal(decodeStandardInquiry(inq.data).product, 'vhost-user-scsi');
    const pattern = Buffer.alloc(4 * BS);
    for (let i = 0; i < pattern.length; i++) pattern[i] = (i * 13) & 0xff;
    const w = await command(d, writeCdb(10, 4), { out: pattern });
    assert.equal(w.status, ScsiStatus.GOOD);
    assert.equal(w.resid, 0);
    assert.equal(w.used.len, RESP);
    // An 8-block buffer for a 4-block read: resid is the 4 blocks not written.
    const r = await command(d, readCdb(10, 4), { inLen: 8 * BS });
    assert.equal(r.status, ScsiStatus.GOOD);
    assert.equal(r.resid, 4 * BS);
    assert.equal(r.used.len, RESP + 4 * BS);
    assert.deepEqual(r.data, pattern);
    const exact = await command(d, readCdb(10, 4), { inLen: 4 * BS });
    assert.equal(exact.resid, 0);
    // A data-in buffer too small for the transfer: VIRTIO_SCSI_S_OVERRUN.
    const over = await command(d, readCdb(10, 4), { inLen: 2 * BS });
    assert.equal(over.response, VirtioScsiResponse.VIRTIO_SCSI_S_OVERRUN);
  });
});

test('addressing: other targets BAD_TARGET, absent LUN sense 0x25, bad chains FAILURE', async () => {
  await withDriver({}, async (d) => {
    for (const target of [0, 2, 255]) {
      const c = await command(
        d,
        cdbOf((o, a) => buildInquiry(o, a, undefined, 36)),
        { target, inLen: 36 },
      );
      assert.equal(c.response, VirtioScsiResponse.VIRTIO_SCSI_S_BAD_TARGET, `target ${target}`);
      assert.equal(c.resid, 36);
    }
    const absent = await command(d, TUR, { lun: 3 });
    assert.equal(absent.response, VirtioScsiResponse.VIRTIO_SCSI_S_OK);
    assert.equal(absent.status, ScsiStatus.CHECK_CONDITION);
    assert.equal(absent.senseLen, 18);
    assert.equal(absent.sense?.senseKey, SenseKey.ILLEGAL_REQUEST);
    assert.equal(absent.sense?.asc, 0x25);
    const inq = await command(
      d,
      cdbOf((o, a) => buildInquiry(o, a, undefined, 36)),
      { lun: 3, inLen: 36 },
    );
    assert.equal(inq.data[0], 0x7f);
    // The request is cut short: no CDB.
    const bad = await command(d, TUR, { reqLen: 20 });
    assert.equal(bad.response, VirtioScsiResponse.VIRTIO_SCSI_S_FAILURE);
    // The server is still serving.
    assert.equal((await command(d, TUR)).status, ScsiStatus.GOOD);
  });
});

test('controlq: ABORT TASK and LOGICAL UNIT RESET complete held commands; UNIT ATTENTION after reset', async () => {
  await withDriver({ faults: { delayCompletionsMs: 20_000 } }, async (d) => {
    const a = postCommand(d, readCdb(0, 1), { tag: 77n, inLen: BS });
    const b = postCommand(d, readCdb(1, 1), { tag: 78n, inLen: BS });
    assert.equal(await d.nextUsed(2, 100), undefined, 'held by the fault');
    assert.equal(
      await tmf(d, VirtioScsiTmf.VIRTIO_SCSI_T_TMF_QUERY_TASK, 77n),
      10,
      'FUNCTION SUCCEEDED',
    );
    assert.equal(await tmf(d, VirtioScsiTmf.VIRTIO_SCSI_T_TMF_ABORT_TASK, 77n), 0);
    const aborted = completed(d, a, await d.nextUsed(2, 100), BS);
    assert.equal(aborted.response, VirtioScsiResponse.VIRTIO_SCSI_S_ABORTED);
    assert.equal(aborted.resid, BS);
    assert.equal(aborted.used.len, RESP);
    assert.equal(await d.nextUsed(2, 50), undefined, 'the other one is still held');
    // A tag nobody holds: complete all the same (it is done).
    assert.equal(await tmf(d, VirtioScsiTmf.VIRTIO_SCSI_T_TMF_ABORT_TASK, 999n), 0);
    assert.equal(await tmf(d, VirtioScsiTmf.VIRTIO_SCSI_T_TMF_LOGICAL_UNIT_RESET), 0);
    const reset = completed(d, b, await d.nextUsed(2, 100), BS);
    assert.equal(reset.response, VirtioScsiResponse.VIRTIO_SCSI_S_RESET);
    assert.equal(
      await tmf(d, VirtioScsiTmf.VIRTIO_SCSI_T_TMF_CLEAR_ACA),
      VirtioScsiResponse.VIRTIO_SCSI_S_FUNCTION_REJECTED,
    );
    assert.equal(await tmf(d, 42), VirtioScsiResponse.VIRTIO_SCSI_S_FUNCTION_REJECTED);
    assert.equal(
      await tmf(d, VirtioScsiTmf.VIRTIO_SCSI_T_TMF_ABORT_TASK_SET, 0n, { target: 9 }),
      VirtioScsiResponse.VIRTIO_SCSI_S_BAD_TARGET,
    );
    assert.equal(
      await tmf(d, VirtioScsiTmf.VIRTIO_SCSI_T_TMF_LOGICAL_UNIT_RESET, 0n, { lun: 5 }),
      VirtioScsiResponse.VIRTIO_SCSI_S_INCORRECT_LUN,
    );
    // The next command reports the reset once (it is held too, then flushed at GET_VRING_BASE).
    const ua = postCommand(d, TUR);
    const base = VhostUserVringState.decode(
      await d.ask('VHOST_USER_GET_VRING_BASE', VhostUserVringState.encode({ index: 2, num: 0 })),
    );
    assert.equal(base.num, 3, 'three commands taken');
    const uaDone = completed(d, ua, await d.nextUsed(2, 100), 0);
    assert.equal(uaDone.status, ScsiStatus.CHECK_CONDITION);
    assert.equal(uaDone.sense?.senseKey, SenseKey.UNIT_ATTENTION);
    assert.deepEqual([uaDone.sense?.asc, uaDone.sense?.ascq], [0x29, 0]);
    // AN_QUERY: nothing supported, response OK, event_actual 0.
    const { resp } = postAnQuery(d, 0xffff);
    assert.equal((await d.nextUsed(0))?.len, 5);
    assert.deepEqual([...d.bytes.subarray(resp, resp + 5)], [0, 0, 0, 0, 0]);
  });
});

function eventOf(d: MiniDriver, off: number): { event: number; reason: number; lun: number[] } {
  const e = VirtioScsiEvent.decode(d.bytes.subarray(off, off + 16));
  return { event: e.event, reason: e.reason, lun: [...d.bytes.subarray(off + 4, off + 8)] };
}

test('eventq: buffers are held until an event; a missed event is flagged on the next one', async () => {
  await withDriver({}, async (d, s) => {
    const first = d.alloc(16);
    d.post(1, [[first, 16, true]]);
    assert.equal(await d.nextUsed(1, 100), undefined, 'posted buffers are not completed');
    assert.equal(
      s.raiseEvent({
        event: VirtioScsiEventType.VIRTIO_SCSI_T_TRANSPORT_RESET,
        reason: VIRTIO_SCSI_EVT_RESET_RESCAN,
      }),
      true,
    );
    assert.equal((await d.nextUsed(1))?.len, 16);
    assert.deepEqual(eventOf(d, first), {
      event: VirtioScsiEventType.VIRTIO_SCSI_T_TRANSPORT_RESET,
      reason: VIRTIO_SCSI_EVT_RESET_RESCAN,
      lun: [1, TARGET, 0x40, LUN],
    });
    // No buffer: missed.
    assert.equal(
      s.raiseEvent({
        event: VirtioScsiEventType.VIRTIO_SCSI_T_PARAM_CHANGE,
        reason: 0x2a | (0x09 << 8),
      }),
      false,
    );
    // The driver posts a buffer and kicks: it gets an empty event that says events were missed.
    const second = d.alloc(16);
    d.post(1, [[second, 16, true]]);
    assert.equal((await d.nextUsed(1))?.len, 16);
    assert.equal(
      eventOf(d, second).event,
      (VirtioScsiEventType.VIRTIO_SCSI_T_NO_EVENT | VIRTIO_SCSI_T_EVENTS_MISSED) >>> 0,
    );
    // Then events are plain again.
    const third = d.alloc(16);
    d.post(1, [[third, 16, true]]);
    assert.equal(await d.nextUsed(1, 50), undefined);
    assert.ok(
      s.raiseEvent({
        event: VirtioScsiEventType.VIRTIO_SCSI_T_PARAM_CHANGE,
        reason: 0x2a | (0x09 << 8),
      }),
    );
    assert.equal((await d.nextUsed(1))?.len, 16);
    assert.deepEqual(eventOf(d, third), {
      event: VirtioScsiEventType.VIRTIO_SCSI_T_PARAM_CHANGE,
      reason: 0x092a,
      lun: [1, TARGET, 0x40, LUN],
    });
    // A buffer held at GET_VRING_BASE: the base leaves it to the driver, which posts it again
    // when the ring restarts; the event missed while the ring was stopped is reported in it.
    const held = d.alloc(16);
    d.post(1, [[held, 16, true]]);
    const base = VhostUserVringState.decode(
      await d.ask('VHOST_USER_GET_VRING_BASE', VhostUserVringState.encode({ index: 1, num: 0 })),
    );
    assert.equal(base.num, 3, 'three buffers consumed, the fourth not');
    assert.equal(
      s.raiseEvent({ event: VirtioScsiEventType.VIRTIO_SCSI_T_TRANSPORT_RESET }),
      false,
      'ring stopped',
    );
    await d.startRing(1, 3);
    d.post(1, [[held, 16, true]]);
    assert.equal((await d.nextUsed(1))?.len, 16);
    assert.equal(
      eventOf(d, held).event,
      (VirtioScsiEventType.VIRTIO_SCSI_T_NO_EVENT | VIRTIO_SCSI_T_EVENTS_MISSED) >>> 0,
    );
    assert.throws(() => s.raiseEvent({ event: 1, lun: 20000 }), {
      code: 'VHOST_USER_ERR_INVALID_ARGUMENT',
    });
  });
});

test('scsi faults: BUSY, TASK SET FULL, virtio BUSY, TRANSPORT_FAILURE, UNIT ATTENTION, short reads', async () => {
  const cases: [Partial<BlockServerOptions>['faults'], (c: Completed) => void][] = [
    [{ scsiBusyEvery: 2 }, (c) => assert.deepEqual([c.status, c.senseLen], [ScsiStatus.BUSY, 0])],
    [{ taskSetFullEvery: 2 }, (c) => assert.equal(c.status, ScsiStatus.TASK_SET_FULL)],
    [
      { virtioBusyEvery: 2 },
      (c) => assert.equal(c.response, VirtioScsiResponse.VIRTIO_SCSI_S_BUSY),
    ],
    [
      { transportFailureEvery: 2 },
      (c) => assert.equal(c.response, VirtioScsiResponse.VIRTIO_SCSI_S_TRANSPORT_FAILURE),
    ],
    [{ unitAttentionEvery: 2 }, (c) => assert.equal(c.sense?.senseKey, SenseKey.UNIT_ATTENTION)],
    [{ ioErrorEvery: 2 }, (c) => assert.equal(c.sense?.senseKey, SenseKey.MEDIUM_ERROR)],
  ];
  for (const [faults, check] of cases) {
    await withDriver({ faults }, async (d) => {
      const block = Buffer.alloc(BS, 0x77);
      assert.equal((await command(d, TUR)).status, ScsiStatus.GOOD, JSON.stringify(faults));
      // The second command is faulted: its write must not reach the disk.
      const faulted = await command(d, writeCdb(3, 1), { out: block });
      check(faulted);
      assert.equal(faulted.resid, BS);
      const back = await command(d, readCdb(3, 1), { inLen: BS });
      assert.equal(back.status, ScsiStatus.GOOD);
      assert.deepEqual(back.data, Buffer.alloc(BS), 'the faulted write touched nothing');
    });
  }
  await withDriver({ faults: { shortReadEvery: 2 } }, async (d) => {
    assert.equal((await command(d, readCdb(0, 4), { inLen: 4 * BS })).resid, 0);
    const short = await command(d, readCdb(0, 4), { inLen: 4 * BS });
    assert.equal(short.status, ScsiStatus.GOOD);
    assert.equal(short.resid, 2 * BS);
    assert.equal(short.used.len, RESP + 2 * BS);
  });
  await withDriver({ faults: { hideWriteProtect: true } }, async (d) => {
    const w = await command(d, writeCdb(0, 1), { out: Buffer.alloc(BS, 1) });
    assert.equal(w.status, ScsiStatus.CHECK_CONDITION);
    assert.deepEqual([w.sense?.senseKey, w.sense?.asc], [SenseKey.DATA_PROTECT, 0x27]);
  });
});

test('options: scsi-only options need type scsi; bad values are InvalidArgumentError', () => {
  const base = { socketPath: socketPath(), size: DISK };
  const bad: Partial<BlockServerOptions>[] = [
    { target: 1 },
    { lun: 1 },
    { faults: { scsiBusyEvery: 1 } },
    { faults: { hideWriteProtect: true } },
    { type: 'scsi', target: 256 },
    { type: 'scsi', lun: 16384 },
    { type: 'scsi', sizeMax: 4096 },
    { type: 'scsi', maxSectors: 0 },
    { type: 'scsi', faults: { shortReadEvery: 0 } },
    { type: 'nvme' as 'scsi' },
  ];
  for (const extra of bad) {
    assert.throws(
      () => createBlockServer({ ...base, ...extra }),
      { code: 'VHOST_USER_ERR_INVALID_ARGUMENT' },
      JSON.stringify(extra),
    );
  }
  const blk = createBlockServer(base);
  assert.throws(() => blk.raiseEvent({ event: 1 }), { code: 'VHOST_USER_ERR_INVALID_ARGUMENT' });
});

test('startEmbedded starts a scsi backend in a child; raiseEvent reaches its eventq', async () => {
  const backend = await startEmbedded({ type: 'scsi', target: TARGET, lun: LUN, fileSize: DISK });
  let d: MiniDriver | undefined;
  try {
    assert.equal(await backend.raiseEvent({ event: 1 }), false, 'no frontend yet');
    d = await MiniDriver.open(backend.socketPath);
    const block = Buffer.alloc(BS, 0x3c);
    assert.equal((await command(d, writeCdb(7, 1), { out: block })).status, ScsiStatus.GOOD);
    assert.deepEqual(fileBytes(backend.imagePath, 7 * BS, BS), block, 'the write reached the file');
    const buf = d.alloc(16);
    d.post(1, [[buf, 16, true]]);
    assert.equal(await d.nextUsed(1, 50), undefined);
    assert.equal(
      await backend.raiseEvent({
        event: VirtioScsiEventType.VIRTIO_SCSI_T_PARAM_CHANGE,
        reason: 0x092a,
      }),
      true,
    );
    assert.equal((await d.nextUsed(1))?.len, 16);
    // The missed event before the connection belonged to no frontend: no flag here.
    assert.equal(eventOf(d, buf).event, VirtioScsiEventType.VIRTIO_SCSI_T_PARAM_CHANGE);
    await assert.rejects(backend.raiseEvent({ event: -1 }), /event.event must be an integer/);
  } finally {
    d?.close();
    await backend.stop();
  }
});
