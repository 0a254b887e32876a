/**
 * The virtio-scsi frontend against targets that answer badly or unusually: cases found by
 * hunting around identification, residuals and used lengths. The peer is the embedded backend in
 * this process, its target or its virtio framing rewritten per test through the prototypes (the
 * frontend's own code is untouched), so a test can script exactly one misbehaviour.
 */
import { test, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import {
  openScsiDevice,
  ScsiSenseError,
  ScsiStatusError,
  ShortTransferError,
  UnsupportedError,
  VirtioScsiResponseError,
} from '../../src/index.js';
import type { ScsiOutcome } from '../../src/backend/scsi-target.js';
import type { DeviceChain } from '../../src/backend/device-queue.js';
import { ScsiOp, ScsiStatus } from '../../src/devices/scsi/cdb.js';
import { encodeFixedSense, SenseKey } from '../../src/devices/scsi/sense.js';
import { VirtioScsiCmdRespHeader, VirtioScsiResponse } from '../../src/devices/scsi/spec.js';
import { opcodeOf, resetScript, script, withScsiServer } from '../helpers/scsi-script.js';

afterEach(resetScript);

const RESP = VirtioScsiCmdRespHeader.fields;
/** The response area the embedded backend writes before data-in: header and 96 sense bytes. */
const RESP_BYTES = VirtioScsiCmdRespHeader.size + 96;

function isRead(chain: DeviceChain): boolean {
  const op = opcodeOf(chain);
  return op === ScsiOp.READ_16 || op === ScsiOp.READ_10;
}

test('a controller whose max_sectors is below a REPORT LUNS list of 256 LUNs can be opened', async () => {
  // max_sectors 1: 512 bytes per command, less than the 2,056 bytes a 256-LUN list takes.
  for (const maxSectors of [1, 4]) {
    await withScsiServer({ maxSectors }, async (sock) => {
      const dev = await openScsiDevice(sock, { timeout: 2000 });
      try {
        assert.equal(dev.size, 1024 * 1024);
        const data = Buffer.alloc(10_000);
        for (let i = 0; i < data.length; i++) data[i] = (i * 7 + maxSectors) & 0xff;
        await dev.write(data, 1234);
        assert.ok((await dev.read(1234, data.length)).equals(data));
      } finally {
        await dev.close();
      }
    });
  }
});

test('a read completed GOOD whose used length says the data was not written is a ShortTransferError', async () => {
  await withScsiServer({}, async (sock) => {
    const dev = await openScsiDevice(sock, { timeout: 2000 });
    try {
      await dev.write(Buffer.alloc(4096, 0x5a), 0);
      // The device writes the response (resid 0, GOOD) but no data, and says so in len.
      script.device = (chain, result) => {
        if (!isRead(chain)) return result;
        // The response is the first writable segment; the data-in after it stays as it was.
        for (const seg of chain.writable.slice(1)) seg.buf.fill(0xee);
        return { ...result, len: RESP_BYTES };
      };
      const err = await dev.read(0, 4096).catch((e: unknown) => e);
      assert.ok(
        err instanceof ShortTransferError,
        `expected ShortTransferError, got ${Buffer.isBuffer(err) ? 'data' : String(err)}`,
      );
      assert.equal(err.expected, 4096);
      // len 0 means "not reported" (Linux's vhost-scsi): the residual alone decides.
      script.device = (chain, result) => (isRead(chain) ? { ...result, len: 0 } : result);
      assert.ok((await dev.read(0, 4096)).equals(Buffer.alloc(4096, 0x5a)));
    } finally {
      await dev.close();
    }
  });
});

test('a residual larger than the transfer is reported as the whole transfer, never a negative count', async () => {
  await withScsiServer({}, async (sock) => {
    const dev = await openScsiDevice(sock, { timeout: 2000 });
    try {
      script.device = (chain, result) => {
        if (isRead(chain)) chain.writable[0]!.buf.writeUInt32LE(100_000, RESP.resid.offset);
        return result;
      };
      const err = await dev.read(0, 512).catch((e: unknown) => e);
      assert.ok(err instanceof ShortTransferError, String(err));
      assert.equal(err.expected, 512);
      assert.equal(err.residual, 512);
      assert.match(err.message, /transferred 0 of 512 bytes/);
    } finally {
      await dev.close();
    }
  });
});

test('a LUN whose block is larger than the controller lets one command carry fails to open, typed', async () => {
  // max_sectors 4 is 2,048 bytes per command: no READ or WRITE of a 4,096-byte block fits.
  await withScsiServer({ blockSize: 4096, maxSectors: 4 }, async (sock) => {
    const err = await openScsiDevice(sock, { timeout: 2000 }).then(
      async (dev) => {
        await dev.close();
        return dev;
      },
      (e: unknown) => e,
    );
    assert.ok(err instanceof UnsupportedError, `expected UnsupportedError, got ${String(err)}`);
    assert.match(err.message, /max_sectors/);
    assert.match(err.message, /4096/);
  });
  // One block per command is enough.
  await withScsiServer({ blockSize: 4096, maxSectors: 8 }, async (sock) => {
    const dev = await openScsiDevice(sock, { timeout: 2000 });
    try {
      const data = Buffer.alloc(9000, 0x3c);
      await dev.write(data, 100);
      assert.ok((await dev.read(100, data.length)).equals(data));
    } finally {
      await dev.close();
    }
  });
});

test('each failure carries its code: descriptor sense, sense_len beyond the buffer, statuses, response codes', async () => {
  await withScsiServer({}, async (sock) => {
    const dev = await openScsiDevice(sock, { timeout: 2000 });
    try {
      const failRead = (outcome: ScsiOutcome): void => {
        script.target = (cmd) => (cmd.cdb[0] === ScsiOp.READ_16 ? outcome : undefined);
      };
      // Descriptor format (0x72), MEDIUM ERROR 11/00, an information descriptor with LBA 0x1234.
      const descriptor = Buffer.from('720311000000000c000a80000000000000001234', 'hex');
      failRead({
        status: ScsiStatus.CHECK_CONDITION,
        sense: descriptor,
        transferred: 0,
        overrun: false,
      });
      let err = await dev.read(0, 512).catch((e: unknown) => e);
      assert.ok(err instanceof ScsiSenseError, String(err));
      assert.deepEqual([err.senseKey, err.asc, err.ascq, err.information], [3, 0x11, 0, 0x1234]);

      // A sense_len far beyond the sense buffer reads only the buffer.
      failRead({
        status: ScsiStatus.CHECK_CONDITION,
        sense: encodeFixedSense(SenseKey.HARDWARE_ERROR, 0x44, 0),
        transferred: 0,
        overrun: false,
      });
      script.device = (chain, result) => {
        if (isRead(chain)) chain.writable[0]!.buf.writeUInt32LE(1 << 20, RESP.senseLen.offset);
        return result;
      };
      err = await dev.read(0, 512).catch((e: unknown) => e);
      assert.ok(err instanceof ScsiSenseError, String(err));
      assert.deepEqual([err.senseKey, err.asc], [SenseKey.HARDWARE_ERROR, 0x44]);
      assert.equal(err.raw.length, 96);
      script.device = undefined;

      for (const status of [ScsiStatus.RESERVATION_CONFLICT, ScsiStatus.TASK_ABORTED, 0x22]) {
        failRead({ status, sense: undefined, transferred: 0, overrun: false });
        err = await dev.read(0, 512).catch((e: unknown) => e);
        assert.ok(err instanceof ScsiStatusError, String(err));
        assert.equal(err.status, status);
      }
      // CHECK CONDITION without sense data: the status is all there is to report.
      failRead({
        status: ScsiStatus.CHECK_CONDITION,
        sense: undefined,
        transferred: 0,
        overrun: false,
      });
      err = await dev.read(0, 512).catch((e: unknown) => e);
      assert.ok(err instanceof ScsiStatusError, String(err));
      script.target = undefined;

      const final = [
        VirtioScsiResponse.VIRTIO_SCSI_S_OVERRUN,
        VirtioScsiResponse.VIRTIO_SCSI_S_ABORTED,
        VirtioScsiResponse.VIRTIO_SCSI_S_BAD_TARGET,
        VirtioScsiResponse.VIRTIO_SCSI_S_TARGET_FAILURE,
        VirtioScsiResponse.VIRTIO_SCSI_S_NEXUS_FAILURE,
        VirtioScsiResponse.VIRTIO_SCSI_S_FAILURE,
        VirtioScsiResponse.VIRTIO_SCSI_S_INCORRECT_LUN,
        13,
        200,
      ];
      for (const response of final) {
        const before = dev.stats.retries;
        script.device = (chain, result) => {
          if (isRead(chain)) chain.writable[0]!.buf[RESP.response.offset] = response;
          return result;
        };
        err = await dev.read(0, 512).catch((e: unknown) => e);
        assert.ok(err instanceof VirtioScsiResponseError, String(err));
        assert.equal(err.response, response);
        assert.equal(dev.stats.retries, before, `response ${response} is final`);
      }
      script.device = undefined;
      assert.ok((await dev.read(0, 512)).length === 512, 'the device still works');
    } finally {
      await dev.close();
    }
  });
});
