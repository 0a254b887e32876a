/**
 * Task management in the embedded vhost-user-scsi backend over a real socket, driven by the
 * minimal virtio-scsi driver of test/helpers/scsi-mini-driver.ts: ABORT TASK and LOGICAL UNIT
 * RESET on held commands, the faults rejectAbortTask and ignoreTaskManagement, and the tmf*
 * counters, both in-process and from a child's STATS line.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import {
  createBlockServer,
  type BlockServerOptions,
  type ServerStats,
} from '../../src/backend/index.js';
import {
  VirtioScsiResponse,
  VirtioScsiTmf,
  VIRTIO_SCSI_S_FUNCTION_COMPLETE,
} from '../../src/devices/scsi/spec.js';
import { ScsiStatus } from '../../src/devices/scsi/cdb.js';
import { SenseKey } from '../../src/devices/scsi/sense.js';
import { startEmbedded } from '../helpers/embedded-backend.js';
import {
  anQuery,
  BS,
  command,
  completed,
  CONTROLQ,
  DISK,
  LUN,
  MiniDriver,
  postCommand,
  postTmf,
  readCdb,
  REQUESTQ,
  RESP,
  server,
  socketPath,
  TARGET,
  tmf,
  TUR,
  watchProblems,
  withDriver,
  writeCdb,
} from '../helpers/scsi-mini-driver.js';

const REJECTED = VirtioScsiResponse.VIRTIO_SCSI_S_FUNCTION_REJECTED;
const {
  VIRTIO_SCSI_T_TMF_ABORT_TASK: ABORT_TASK,
  VIRTIO_SCSI_T_TMF_LOGICAL_UNIT_RESET: LUN_RESET,
} = VirtioScsiTmf;

type Tmf = Pick<ServerStats, 'tmfAbortTask' | 'tmfAbortMatched' | 'tmfLunReset' | 'tmfOther'>;
const tmfStats = (s: ServerStats): Tmf => ({
  tmfAbortTask: s.tmfAbortTask,
  tmfAbortMatched: s.tmfAbortMatched,
  tmfLunReset: s.tmfLunReset,
  tmfOther: s.tmfOther,
});

/** withDriver on a server with these faults, which must report no problem (watchProblems). */
const withFaults = (
  faults: BlockServerOptions['faults'],
  body: Parameters<typeof withDriver>[1],
): Promise<void> => withDriver({ faults }, body, { noProblems: true });

test('ABORT TASK on a held command: ABORTED, FUNCTION COMPLETE, counted as matched', async () => {
  await withFaults({ delayCompletionsMs: 20_000 }, async (d, s) => {
    assert.deepEqual(tmfStats(s.stats), {
      tmfAbortTask: 0,
      tmfAbortMatched: 0,
      tmfLunReset: 0,
      tmfOther: 0,
    });
    const a = postCommand(d, readCdb(0, 1), { tag: 77n, inLen: BS });
    postCommand(d, readCdb(1, 1), { tag: 78n, inLen: BS });
    assert.equal(await d.nextUsed(REQUESTQ, 100), undefined, 'held by the fault');
    assert.equal(await tmf(d, ABORT_TASK, 77n), VIRTIO_SCSI_S_FUNCTION_COMPLETE);
    const aborted = completed(d, a, await d.nextUsed(REQUESTQ, 100), BS);
    assert.equal(aborted.response, VirtioScsiResponse.VIRTIO_SCSI_S_ABORTED);
    assert.equal(aborted.resid, BS);
    assert.equal(aborted.used.len, RESP);
    assert.deepEqual(tmfStats(s.stats), {
      tmfAbortTask: 1,
      tmfAbortMatched: 1,
      tmfLunReset: 0,
      tmfOther: 0,
    });
    assert.equal(await d.nextUsed(REQUESTQ, 50), undefined, 'tag 78 is still held');
    // A tag nobody holds: FUNCTION COMPLETE all the same, but not a match.
    assert.equal(await tmf(d, ABORT_TASK, 999n), VIRTIO_SCSI_S_FUNCTION_COMPLETE);
    assert.equal(
      await tmf(d, VirtioScsiTmf.VIRTIO_SCSI_T_TMF_QUERY_TASK, 78n),
      VirtioScsiResponse.VIRTIO_SCSI_S_FUNCTION_SUCCEEDED,
    );
    assert.deepEqual(tmfStats(s.stats), {
      tmfAbortTask: 2,
      tmfAbortMatched: 1,
      tmfLunReset: 0,
      tmfOther: 1,
    });
  });
});

test('rejectAbortTask: FUNCTION REJECTED, the command completes later normally; LUN RESET still works', async () => {
  await withFaults({ delayCompletionsMs: 400, rejectAbortTask: true }, async (d, s) => {
    const pattern = Buffer.alloc(BS);
    for (let i = 0; i < BS; i++) pattern[i] = (i * 7) & 0xff;
    assert.equal((await command(d, writeCdb(5, 1), { out: pattern })).status, ScsiStatus.GOOD);
    const start = Date.now();
    const r = postCommand(d, readCdb(5, 1), { tag: 5n, inLen: BS });
    assert.equal(await tmf(d, ABORT_TASK, 5n), REJECTED);
    assert.equal(await d.nextUsed(REQUESTQ, 50), undefined, 'still held');
    const done = completed(d, r, await d.nextUsed(REQUESTQ), BS);
    assert.ok(Date.now() - start >= 350, 'completed when its delay ran out');
    assert.equal(done.response, VirtioScsiResponse.VIRTIO_SCSI_S_OK);
    assert.equal(done.status, ScsiStatus.GOOD);
    assert.deepEqual(done.data, pattern);
    assert.deepEqual(tmfStats(s.stats), {
      tmfAbortTask: 1,
      tmfAbortMatched: 0,
      tmfLunReset: 0,
      tmfOther: 0,
    });
    // LOGICAL UNIT RESET is not affected by the fault.
    const held = postCommand(d, readCdb(6, 1), { tag: 6n, inLen: BS });
    assert.equal(await tmf(d, LUN_RESET), VIRTIO_SCSI_S_FUNCTION_COMPLETE);
    const reset = completed(d, held, await d.nextUsed(REQUESTQ, 100), BS);
    assert.equal(reset.response, VirtioScsiResponse.VIRTIO_SCSI_S_RESET);
    const ua = await command(d, TUR);
    assert.equal(ua.status, ScsiStatus.CHECK_CONDITION);
    assert.deepEqual(
      [ua.sense?.senseKey, ua.sense?.asc, ua.sense?.ascq],
      [SenseKey.UNIT_ATTENTION, 0x29, 0],
    );
    assert.equal((await command(d, TUR)).status, ScsiStatus.GOOD);
    assert.equal(tmfStats(s.stats).tmfLunReset, 1);
  });
});

test('LOGICAL UNIT RESET: held commands complete RESET, the next command gets UNIT ATTENTION once', async () => {
  await withFaults({ delayCompletionsMs: 300 }, async (d, s) => {
    const a = postCommand(d, readCdb(0, 1), { tag: 1n, inLen: BS });
    const b = postCommand(d, writeCdb(1, 1), { tag: 2n, out: Buffer.alloc(BS, 9) });
    assert.equal(await tmf(d, LUN_RESET), VIRTIO_SCSI_S_FUNCTION_COMPLETE);
    const ra = completed(d, a, await d.nextUsed(REQUESTQ, 100), BS);
    const rb = completed(d, b, await d.nextUsed(REQUESTQ, 100));
    for (const r of [ra, rb]) {
      assert.equal(r.response, VirtioScsiResponse.VIRTIO_SCSI_S_RESET);
      assert.equal(r.used.len, RESP);
    }
    assert.equal(ra.resid, BS);
    assert.equal(rb.resid, BS);
    const ua = await command(d, TUR);
    assert.equal(ua.response, VirtioScsiResponse.VIRTIO_SCSI_S_OK);
    assert.equal(ua.status, ScsiStatus.CHECK_CONDITION);
    assert.deepEqual(
      [ua.sense?.senseKey, ua.sense?.asc, ua.sense?.ascq],
      [SenseKey.UNIT_ATTENTION, 0x29, 0],
    );
    assert.equal((await command(d, TUR)).status, ScsiStatus.GOOD, 'reported once');
    assert.deepEqual(tmfStats(s.stats), {
      tmfAbortTask: 0,
      tmfAbortMatched: 0,
      tmfLunReset: 1,
      tmfOther: 0,
    });
  });
});

test('ignoreTaskManagement: no answer, nothing aborted; GET_VRING_BASE, reconnect and disconnect still work', async () => {
  const s = await server({ faults: { delayCompletionsMs: 20_000, ignoreTaskManagement: true } });
  const problems = watchProblems(s);
  let d: MiniDriver | undefined;
  try {
    d = await MiniDriver.open(s.socketPath!);
    const held = postCommand(d, readCdb(0, 1), { tag: 9n, inLen: BS });
    postTmf(d, ABORT_TASK, 9n);
    postTmf(d, LUN_RESET);
    postTmf(d, ABORT_TASK, 9n, { bytes: 10 }); // cut short: not answered either
    assert.equal(await d.nextUsed(CONTROLQ, 300), undefined, 'no TMF answered within 300 ms');
    assert.equal(await d.nextUsed(REQUESTQ, 10), undefined, 'the command was not aborted');
    // Asynchronous-notification requests are still answered.
    await anQuery(d);
    assert.deepEqual(tmfStats(s.stats), {
      tmfAbortTask: 1,
      tmfAbortMatched: 0,
      tmfLunReset: 1,
      tmfOther: 0,
    });
    // The controlq stops: its base counts the unanswered TMFs; the held command is delivered.
    assert.equal(await d.stopRing(CONTROLQ), 4);
    const done = completed(d, held, await d.nextUsed(REQUESTQ, 500), BS);
    assert.equal(done.response, VirtioScsiResponse.VIRTIO_SCSI_S_OK);
    assert.equal(done.status, ScsiStatus.GOOD);
    // The ignored LUN RESET armed no UNIT ATTENTION.
    const tur = postCommand(d, TUR, { tag: 10n });
    assert.equal(await d.stopRing(REQUESTQ), 2);
    assert.equal(completed(d, tur, await d.nextUsed(REQUESTQ, 500)).status, ScsiStatus.GOOD);
    await d.startRing(REQUESTQ, 2);
    // Restarted at that base, the controlq serves again, and still ignores TMFs.
    await d.startRing(CONTROLQ, 4);
    await anQuery(d);
    postTmf(d, VirtioScsiTmf.VIRTIO_SCSI_T_TMF_I_T_NEXUS_RESET);
    assert.equal(await d.nextUsed(CONTROLQ, 300), undefined);
    assert.equal(tmfStats(s.stats).tmfOther, 1);
    // Disconnect with a TMF unanswered and a command held.
    postCommand(d, readCdb(2, 1), { tag: 11n, inLen: BS });
    postTmf(d, ABORT_TASK, 11n);
    assert.equal(await d.nextUsed(CONTROLQ, 100), undefined);
    const gone = once(s, 'disconnect');
    d.close();
    await gone;
    // A new connection is served.
    d = await MiniDriver.open(s.socketPath!);
    await anQuery(d);
    postTmf(d, ABORT_TASK, 1n);
    assert.equal(await d.nextUsed(CONTROLQ, 300), undefined);
    assert.deepEqual(tmfStats(s.stats), {
      tmfAbortTask: 3,
      tmfAbortMatched: 0,
      tmfLunReset: 1,
      tmfOther: 1,
    });
    assert.equal(s.stats.connections, 2);
  } finally {
    d?.close();
    await s.close();
  }
  assert.deepEqual(problems, []);
});

test('the tmf counters reach the STATS line of a child backend (SIGUSR2)', async () => {
  const backend = await startEmbedded({
    type: 'scsi',
    target: TARGET,
    lun: LUN,
    size: DISK,
    faults: { delayCompletionsMs: 20_000, rejectAbortTask: true },
  });
  let d: MiniDriver | undefined;
  try {
    d = await MiniDriver.open(backend.socketPath);
    const held = postCommand(d, readCdb(0, 1), { tag: 3n, inLen: BS });
    assert.equal(await tmf(d, ABORT_TASK, 3n), REJECTED);
    assert.equal(await tmf(d, LUN_RESET), VIRTIO_SCSI_S_FUNCTION_COMPLETE);
    const reset = completed(d, held, await d.nextUsed(REQUESTQ, 500), BS);
    assert.equal(reset.response, VirtioScsiResponse.VIRTIO_SCSI_S_RESET);
    assert.equal(
      await tmf(d, VirtioScsiTmf.VIRTIO_SCSI_T_TMF_I_T_NEXUS_RESET),
      VIRTIO_SCSI_S_FUNCTION_COMPLETE,
    );
    const stats = await backend.stats();
    assert.deepEqual(tmfStats(stats), {
      tmfAbortTask: 1,
      tmfAbortMatched: 0,
      tmfLunReset: 1,
      tmfOther: 1,
    });
    assert.equal(stats.requests, 1);
  } finally {
    d?.close();
    const last = await backend.stop();
    assert.equal(last?.tmfLunReset, 1, 'the final STATS line too');
  }
  assert.deepEqual(
    backend.events.filter((e) => e !== 'connection' && e !== 'disconnect'),
    [],
    backend.stderr(),
  );
});

test('options: rejectAbortTask and ignoreTaskManagement are scsi-only booleans', () => {
  const base = { socketPath: socketPath(), size: DISK };
  const bad: [Partial<BlockServerOptions>, RegExp][] = [
    [{ faults: { rejectAbortTask: true } }, /faults.rejectAbortTask needs type 'scsi'/],
    [{ faults: { ignoreTaskManagement: false } }, /faults.ignoreTaskManagement needs type 'scsi'/],
    [
      { type: 'scsi', faults: { rejectAbortTask: 1 as unknown as boolean } },
      /faults.rejectAbortTask must be a boolean/,
    ],
    [
      { type: 'scsi', faults: { ignoreTaskManagement: 'yes' as unknown as boolean } },
      /faults.ignoreTaskManagement must be a boolean/,
    ],
  ];
  for (const [extra, message] of bad) {
    assert.throws(
      () => createBlockServer({ ...base, ...extra }),
      { code: 'VHOST_USER_ERR_INVALID_ARGUMENT', message },
      JSON.stringify(extra),
    );
  }
  assert.doesNotThrow(() =>
    createBlockServer({
      ...base,
      type: 'scsi',
      faults: { rejectAbortTask: true, ignoreTaskManagement: false },
    }),
  );
  // A blk server's stats carry the counters too (at zero).
  assert.deepEqual(tmfStats(createBlockServer(base).stats), {
    tmfAbortTask: 0,
    tmfAbortMatched: 0,
    tmfLunReset: 0,
    tmfOther: 0,
  });
});
