/**
 * The virtio-scsi frontend against devices that answer task management, flushes and raw commands
 * in ways the last hunt left open. As in scsi-hunt.test.ts, the peer is the embedded backend in
 * this process, with one misbehaviour scripted per test through its prototypes (the frontend's
 * code is untouched).
 */
import { test, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import {
  InvalidArgumentError,
  openScsiDevice,
  ScsiSenseError,
  TimeoutError,
} from '../../src/index.js';
import type { ScsiCommand, ScsiOutcome } from '../../src/backend/scsi-target.js';
import type { DeviceChain } from '../../src/backend/device-queue.js';
import { ScsiOp, ScsiStatus } from '../../src/devices/scsi/cdb.js';
import { encodeModeSense } from '../../src/devices/scsi/data.js';
import { encodeFixedSense, SenseKey } from '../../src/devices/scsi/sense.js';
import { VirtioScsiCmdRespHeader, VirtioScsiTmf } from '../../src/devices/scsi/spec.js';
import { copyToSegments } from '../../src/backend/storage.js';
import { opcodeOf, resetScript, script, withScsiServer } from '../helpers/scsi-script.js';
import { within } from '../helpers/within.js';
import { allReturned, read16 } from '../helpers/scsi-commands.js';

afterEach(resetScript);

const RESP = VirtioScsiCmdRespHeader.fields;
/** The response area the embedded backend writes before data-in: header and 96 sense bytes. */
const RESP_BYTES = VirtioScsiCmdRespHeader.size + 96;
const ABORT_TASK = VirtioScsiTmf.VIRTIO_SCSI_T_TMF_ABORT_TASK;
const LUN_RESET = VirtioScsiTmf.VIRTIO_SCSI_T_TMF_LOGICAL_UNIT_RESET;

test('an ABORT TASK answered FUNCTION_COMPLETE whose command never returns escalates to LOGICAL UNIT RESET', async () => {
  await withScsiServer({}, async (sock, server) => {
    // `timeout` also bounds each task management function, and the wait for its effect.
    const dev = await openScsiDevice(sock, { timeout: 300 });
    try {
      script.holdMs = 60_000;
      script.loseCommandsOn = new Set([ABORT_TASK]);
      const given = await Promise.all(
        [0, 1, 2].map((i) => dev.read(i * 4096, 4096, { timeout: 50 }).catch((e: unknown) => e)),
      );
      for (const err of given) assert.ok(err instanceof TimeoutError, String(err));
      script.holdMs = 0;
      // Each abort "completed" but left its command held, its slot taken: the LUN is reset, once,
      // which ends them all.
      await allReturned(dev, 5000);
      assert.equal(dev.stats.taskAborts, 3);
      assert.equal(dev.stats.lunResets, 1);
      assert.equal(server.stats.tmfAbortTask, 3);
      assert.equal(server.stats.tmfLunReset, 1);
      assert.equal(dev.closed, false);
      const data = Buffer.alloc(4096, 0x6b);
      await dev.write(data, 8192);
      assert.ok((await dev.read(8192, 4096)).equals(data));
    } finally {
      await dev.close();
    }
  });
});

test('a LOGICAL UNIT RESET answered FUNCTION_COMPLETE that leaves the command held fails the device, typed', async () => {
  await withScsiServer({}, async (sock, server) => {
    const dev = await openScsiDevice(sock, { timeout: 300 });
    try {
      const failed = new Promise<Error>((resolve) => dev.once('error', resolve));
      script.holdMs = 60_000;
      script.loseCommandsOn = new Set([ABORT_TASK, LUN_RESET]);
      const started = Date.now();
      const err = await dev.read(0, 4096, { timeout: 50 }).catch((e: unknown) => e);
      assert.ok(err instanceof TimeoutError, String(err));
      const pending = dev.read(4096, 512).catch((e: unknown) => e); // held as well
      // 50 ms, then 300 ms for the abort to take effect, then 300 ms for the reset's.
      const failure = await within(failed, 10_000, 'the device never failed');
      assert.ok(failure instanceof TimeoutError, String(failure));
      assert.match(failure.operation, /LOGICAL UNIT RESET/);
      const elapsed = Date.now() - started;
      assert.ok(elapsed >= 600 && elapsed < 10_000, `failed after ${elapsed} ms`);
      assert.equal(server.stats.tmfAbortTask, 1);
      assert.equal(server.stats.tmfLunReset, 1);
      // Nothing waits for the held commands: every caller is answered.
      assert.ok((await pending) instanceof TimeoutError);
      await assert.rejects(dev.read(0, 512), TimeoutError);
      assert.equal(dev.closed, true);
    } finally {
      await dev.close();
    }
  });
});

/** MODE SENSE answered with the caching page's WCE as given (write-protect off). */
function modeSenseWithCache(writeCache: boolean): (cmd: ScsiCommand) => ScsiOutcome | undefined {
  return (cmd) => {
    const op = cmd.cdb[0];
    if (op !== ScsiOp.MODE_SENSE_6 && op !== ScsiOp.MODE_SENSE_10) return undefined;
    const data = encodeModeSense(op === ScsiOp.MODE_SENSE_10, false, writeCache);
    let room = 0;
    for (const s of cmd.dataIn) room += s.buf.length;
    const n = Math.min(data.length, room);
    copyToSegments(cmd.dataIn, 0, Buffer.from(data.subarray(0, n)));
    return { status: ScsiStatus.GOOD, sense: undefined, transferred: n, overrun: false };
  };
}

test('flush on a LUN whose write cache was off at open: one without SYNCHRONIZE CACHE counts as flushed, the command still sent', async () => {
  await withScsiServer({}, async (sock) => {
    let synchronizeCache = 0;
    const modeSense = modeSenseWithCache(false);
    script.target = (cmd) => {
      const op = cmd.cdb[0];
      if (op !== ScsiOp.SYNCHRONIZE_CACHE_10 && op !== ScsiOp.SYNCHRONIZE_CACHE_16) {
        return modeSense(cmd);
      }
      // A LUN without a write cache need not implement it.
      synchronizeCache++;
      return {
        status: ScsiStatus.CHECK_CONDITION,
        sense: encodeFixedSense(SenseKey.ILLEGAL_REQUEST, 0x20, 0),
        transferred: 0,
        overrun: false,
      };
    };
    const dev = await openScsiDevice(sock, { timeout: 2000 });
    try {
      assert.equal(dev.info.type === 'virtio-scsi' && dev.info.writeCache, 'writethrough');
      await dev.write(Buffer.alloc(4096, 0x11), 0);
      // (No flushSync here: the backend runs in this thread, which it would block.)
      await dev.flush();
      const stream = dev.createWriteStream({ start: 4096 });
      await new Promise<void>((resolve, reject) => {
        stream.on('error', reject);
        stream.end(Buffer.alloc(1000, 0x22), () => resolve());
      });
      // Sent (the cache may have been turned on since), and its refusal taken as done.
      assert.ok(synchronizeCache >= 1, `${synchronizeCache} SYNCHRONIZE CACHE sent`);
      assert.ok((await dev.read(4096, 1000)).equals(Buffer.alloc(1000, 0x22)));
    } finally {
      await dev.close();
    }
  });
  // With the write cache on, flush is SYNCHRONIZE CACHE, and its failure is the caller's.
  await withScsiServer({}, async (sock) => {
    let synchronizeCache = 0;
    const modeSense = modeSenseWithCache(true);
    script.target = (cmd) => {
      const op = cmd.cdb[0];
      if (op === ScsiOp.SYNCHRONIZE_CACHE_10 || op === ScsiOp.SYNCHRONIZE_CACHE_16) {
        synchronizeCache++;
        return {
          status: ScsiStatus.CHECK_CONDITION,
          sense: encodeFixedSense(SenseKey.ILLEGAL_REQUEST, 0x20, 0),
          transferred: 0,
          overrun: false,
        };
      }
      return modeSense(cmd);
    };
    const dev = await openScsiDevice(sock, { timeout: 2000 });
    try {
      assert.equal(dev.info.type === 'virtio-scsi' && dev.info.writeCache, 'writeback');
      await assert.rejects(dev.flush(), ScsiSenseError);
      assert.equal(synchronizeCache, 1);
    } finally {
      await dev.close();
    }
  });
});

test('scsiCommand returns only the data-in the used length says was written', async () => {
  await withScsiServer({}, async (sock) => {
    const dev = await openScsiDevice(sock, { timeout: 2000 });
    try {
      const data = Buffer.alloc(4096);
      for (let i = 0; i < data.length; i++) data[i] = (i * 13 + 5) & 0xff;
      await dev.write(data, 0);
      const isRead16 = (chain: DeviceChain): boolean => opcodeOf(chain) === ScsiOp.READ_16;
      // GOOD, resid 0, but len says only 1,024 bytes were written; the rest is not the LUN's.
      script.device = (chain, result) => {
        if (!isRead16(chain)) return result;
        const dataIn = chain.writable.slice(1);
        let skip = 1024;
        for (const seg of dataIn) {
          if (skip < seg.buf.length) seg.buf.fill(0xee, skip);
          skip = Math.max(0, skip - seg.buf.length);
        }
        return { ...result, len: 1024 };
      };
      let got = await dev.scsiCommand(read16(0, 8), { dataIn: 4096 });
      assert.equal(got.residual, 3072);
      assert.equal(got.data.length, 1024);
      assert.ok(got.data.equals(data.subarray(0, 1024)));
      // A residual that says more is missing wins over the used length.
      script.device = (chain, result) => {
        if (!isRead16(chain)) return result;
        chain.writable[0]!.buf.writeUInt32LE(3584, RESP.resid.offset);
        return { ...result, len: 1024 };
      };
      got = await dev.scsiCommand(read16(0, 8), { dataIn: 4096 });
      assert.equal(got.residual, 3584);
      assert.equal(got.data.length, 512);
      // len 0 is "not reported"; a len counting the data alone, or the response too, is whole.
      for (const len of [0, 4096, RESP_BYTES + 4096]) {
        script.device = (chain, result) => (isRead16(chain) ? { ...result, len } : result);
        got = await dev.scsiCommand(read16(0, 8), { dataIn: 4096 });
        assert.equal(got.residual, 0, `len ${len}`);
        assert.ok(got.data.equals(data), `len ${len}`);
      }
    } finally {
      await dev.close();
    }
  });
});

test('a raw command that failed still reports its sense, whatever the used length', async () => {
  await withScsiServer({}, async (sock) => {
    const dev = await openScsiDevice(sock, { timeout: 2000 });
    try {
      // A READ past the end: CHECK CONDITION, LBA OUT OF RANGE.
      script.device = (chain, result) =>
        opcodeOf(chain) === ScsiOp.READ_16 ? { ...result, len: RESP_BYTES } : result;
      const err = await dev
        .scsiCommand(read16(1 << 20, 1), { dataIn: 512 })
        .catch((e: unknown) => e);
      assert.ok(err instanceof ScsiSenseError, String(err));
      assert.equal(err.senseKey, SenseKey.ILLEGAL_REQUEST);
    } finally {
      await dev.close();
    }
  });
});

test('scsiCommand whose dataOut is detached while it waits for memory fails alone and writes nothing', async () => {
  // Every completion is held 100 ms. A bounced 40 KiB read holds most of the 64 KiB while the
  // command waits for 32 KiB; its dataOut is detached meanwhile (transferred). Before, the command
  // copied 0 bytes from it and sent the bounce buffer's stale bytes as a WRITE, resolving OK.
  await withScsiServer({ faults: { delayCompletionsMs: 100 } }, async (sock) => {
    const dev = await openScsiDevice(sock, { memorySize: 64 * 1024 });
    try {
      const before = await dev.read(0, 32 * 1024);
      const reading = dev.read(64 * 1024, 40 * 1024);
      const source = new ArrayBuffer(32 * 1024);
      new Uint8Array(source).fill(0xa5);
      const cdb = new Uint8Array(10);
      cdb[0] = ScsiOp.WRITE_10;
      new DataView(cdb.buffer).setUint16(7, (32 * 1024) / dev.blockSize);
      // Settled as soon as the read frees memory, maybe before the read's own continuation.
      const command = dev.scsiCommand(cdb, { dataOut: new Uint8Array(source) }).then(
        () => 'resolved',
        (err: unknown) => err,
      );
      structuredClone(source, { transfer: [source] });
      await reading;
      const outcome = await command;
      assert.ok(outcome instanceof InvalidArgumentError, String(outcome));
      assert.ok((await dev.read(0, 32 * 1024)).equals(before), 'nothing was written');
    } finally {
      await dev.close();
    }
  });
});
