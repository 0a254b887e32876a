/**
 * virtio-scsi beyond the shared data-integrity suite: the LUN scan, identification, sense data
 * as typed errors, retries, short transfers, task management on timeouts, event queue reports
 * and transfers larger than a 10-byte CDB can describe. The peer is the embedded backend in scsi
 * mode: no installable vhost-user backend exports virtio-scsi (SPDK is not packaged here).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  createBlockServer,
  openDevice,
  openScsiDevice,
  ScsiSenseError,
  ScsiStatusError,
  ShortTransferError,
  TimeoutError,
  UnsupportedError,
  VirtioScsiResponseError,
  type ScsiEvent,
} from '../../src/index.js';
import { startEmbedded, type Embedded, type EmbeddedOptions } from '../helpers/embedded-backend.js';
import { fileBytes } from '../helpers/files.js';
import { prng, randomBytes } from '../helpers/random.js';
import { LIBRARY_ENTRY, runScript } from '../helpers/run-script.js';
import { allReturned, read16 } from '../helpers/scsi-commands.js';
import { SenseKey } from '../../src/devices/scsi/sense.js';
import { ScsiOp, ScsiStatus } from '../../src/devices/scsi/cdb.js';
import {
  VirtioScsiEventType,
  VirtioScsiResponse,
  VIRTIO_SCSI_EVT_RESET_REMOVED,
} from '../../src/devices/scsi/spec.js';

const MiB = 1024 * 1024;

async function withScsi(
  options: EmbeddedOptions,
  body: (socketPath: string, imagePath: string, backend: Embedded) => Promise<void>,
): Promise<void> {
  const backend = await startEmbedded({ type: 'scsi', ...options });
  try {
    await body(backend.socketPath, backend.imagePath, backend);
  } finally {
    await backend.stop();
  }
}

function write16(lba: number, blocks: number): Uint8Array {
  const cdb = read16(lba, blocks);
  cdb[0] = ScsiOp.WRITE_16;
  return cdb;
}

test('scan: with no target given the first disk LUN is found and identified', async () => {
  await withScsi(
    { target: 3, lun: 5, serial: 'SCAN-SERIAL-42', fileSize: 4 * MiB },
    async (sock) => {
      const dev = await openScsiDevice(sock, { scanAll: true });
      try {
        assert.equal(dev.info.type, 'virtio-scsi');
        if (dev.info.type !== 'virtio-scsi') return;
        assert.equal(dev.info.target, 3);
        assert.equal(dev.info.lun, 5);
        assert.equal(dev.size, 4 * MiB);
        assert.equal(dev.blockSize, 512);
        assert.equal(dev.readOnly, false);
        assert.equal(await dev.getId(), 'SCAN-SERIAL-42');
        assert.equal(dev.info.serial, 'SCAN-SERIAL-42');
        assert.ok(dev.info.designator !== undefined && dev.info.designator.length > 0);
        assert.ok(dev.info.commands16);
        assert.deepEqual(
          dev.info.luns.map((l) => [l.target, l.lun, l.deviceType]),
          [[3, 5, 0]],
        );
        // The LUN at the scanned address takes I/O.
        const data = Buffer.alloc(4096, 0x77);
        await dev.write(data, 8192);
        assert.ok((await dev.read(8192, 4096)).equals(data));
      } finally {
        await dev.close();
      }
      // An explicit address with no LUN behind it is a clear error, and openDevice routes by type.
      await assert.rejects(openScsiDevice(sock, { target: 2, lun: 0 }), UnsupportedError);
      await assert.rejects(openScsiDevice(sock, { target: 3, lun: 4 }), UnsupportedError);
      const again = await openDevice(sock, { type: 'scsi', target: 3, lun: 5 });
      assert.equal(again.size, 4 * MiB);
      await again.close();
    },
  );
});

test('sense data becomes typed errors: read past the end, unknown opcode, write-protected LUN', async () => {
  await withScsi({ fileSize: 1 * MiB }, async (sock) => {
    const dev = await openScsiDevice(sock);
    try {
      const blocks = dev.size / dev.blockSize;
      const past = await dev
        .scsiCommand(read16(blocks, 1), { dataIn: 512 })
        .catch((e: unknown) => e);
      assert.ok(past instanceof ScsiSenseError, String(past));
      assert.equal(past.senseKey, SenseKey.ILLEGAL_REQUEST);
      assert.equal(past.senseKeyName, 'ILLEGAL REQUEST');
      assert.equal(past.asc, 0x21);
      assert.equal(past.ascq, 0x00);
      assert.equal(past.code, 'VHOST_USER_ERR_SCSI_SENSE');
      assert.match(past.message, /ILLEGAL REQUEST/);

      const unknown = await dev
        .scsiCommand(Uint8Array.of(0xc7, 0, 0, 0, 0, 0))
        .catch((e: unknown) => e);
      assert.ok(unknown instanceof ScsiSenseError, String(unknown));
      assert.equal(unknown.senseKey, SenseKey.ILLEGAL_REQUEST);
      assert.equal(unknown.asc, 0x20);

      // A good command through the same path: data and residual come back.
      const inquiry = await dev.scsiCommand(Uint8Array.of(ScsiOp.INQUIRY, 0, 0, 0, 96, 0), {
        dataIn: 96,
      });
      assert.equal(inquiry.status, ScsiStatus.GOOD);
      assert.equal(inquiry.data.length + inquiry.residual, 96);
      assert.equal(inquiry.data[0], 0); // a connected disk
      const sync = dev.scsiCommandSync(read16(0, 1), { dataIn: 512 });
      assert.equal(sync.data.length, 512);
    } finally {
      await dev.close();
    }
  });

  await withScsi({ fileSize: 1 * MiB, readOnly: true }, async (sock) => {
    const dev = await openScsiDevice(sock);
    try {
      assert.equal(dev.readOnly, true, 'MODE SENSE WP bit');
      await assert.rejects(dev.write(Buffer.alloc(512), 0), { code: 'VHOST_USER_ERR_READ_ONLY' });
      const err = await dev
        .scsiCommand(write16(0, 1), { dataOut: Buffer.alloc(512) })
        .catch((e: unknown) => e);
      assert.ok(err instanceof ScsiSenseError, String(err));
      assert.equal(err.senseKey, SenseKey.DATA_PROTECT);
      assert.equal(err.asc, 0x27);
    } finally {
      await dev.close();
    }
  });

  await withScsi({ fileSize: 1 * MiB, faults: { hideWriteProtect: true } }, async (sock) => {
    const dev = await openScsiDevice(sock);
    try {
      assert.equal(dev.readOnly, false);
      const err = await dev.write(Buffer.alloc(4096, 1), 4096).catch((e: unknown) => e);
      assert.ok(err instanceof ScsiSenseError, String(err));
      assert.equal(err.senseKey, SenseKey.DATA_PROTECT);
      assert.equal(err.operation, 'write');
      assert.equal(err.position, 4096);
    } finally {
      await dev.close();
    }
  });
});

test('BUSY, TASK SET FULL, UNIT ATTENTION, virtio BUSY and TRANSPORT_FAILURE are retried; data still verifies', async () => {
  const faults = [
    { scsiBusyEvery: 3 },
    { taskSetFullEvery: 4 },
    { unitAttentionEvery: 5 },
    { virtioBusyEvery: 3 },
    { transportFailureEvery: 4 },
  ];
  for (const fault of faults) {
    await withScsi({ fileSize: 2 * MiB, faults: fault }, async (sock, image) => {
      const dev = await openScsiDevice(sock);
      try {
        const rand = prng(99);
        const data = randomBytes(rand, 256 * 1024);
        await Promise.all(
          Array.from({ length: 32 }, (_, i) =>
            dev.write(data.subarray(i * 8192, (i + 1) * 8192), i * 8192 + 3),
          ),
        );
        const back = await dev.read(3, data.length);
        assert.ok(back.equals(data), `data after ${JSON.stringify(fault)}`);
        await dev.flush();
        assert.ok(fileBytes(image, 3, data.length).equals(data));
        assert.ok(dev.stats.retries > 0, `no retries with ${JSON.stringify(fault)}`);
      } finally {
        await dev.close();
      }
    });
  }
});

test('retries are bounded: a LUN that is always busy or always failing gives the typed error', async () => {
  const cases = [
    {
      fault: { scsiBusyEvery: 1 },
      check: (e: unknown) => e instanceof ScsiStatusError && e.status === ScsiStatus.BUSY,
    },
    {
      fault: { transportFailureEvery: 1 },
      check: (e: unknown) =>
        e instanceof VirtioScsiResponseError &&
        e.response === VirtioScsiResponse.VIRTIO_SCSI_S_TRANSPORT_FAILURE,
    },
  ];
  for (const { fault, check } of cases) {
    await withScsi({ fileSize: 1 * MiB, faults: fault }, async (sock) => {
      const started = Date.now();
      const err = await openScsiDevice(sock).catch((e: unknown) => e);
      assert.ok(check(err), `got ${String(err)}`);
      // 8 attempts with backoff from 1 ms, capped: well under a second.
      assert.ok(Date.now() - started < 3000);
    });
  }
});

test('a short read (non-zero residual) is a ShortTransferError, never a silent success', async () => {
  await withScsi({ fileSize: 1 * MiB, faults: { shortReadEvery: 1 } }, async (sock) => {
    // Identification reads with INQUIRY / READ CAPACITY, not READ: the device opens.
    const dev = await openScsiDevice(sock);
    try {
      const err = await dev.read(0, 8192).catch((e: unknown) => e);
      assert.ok(err instanceof ShortTransferError, String(err));
      assert.equal(err.expected, 8192);
      assert.equal(err.residual, 4096);
      assert.equal(err.code, 'VHOST_USER_ERR_SHORT_TRANSFER');
    } finally {
      await dev.close();
    }
  });
});

test('a request that times out gets ABORT TASK by its tag: the device returns it at once, I/O goes on', async () => {
  await withScsi(
    { fileSize: 1 * MiB, faults: { delayCompletionsMs: 300 } },
    async (sock, _image, backend) => {
      const dev = await openScsiDevice(sock, { target: 0, lun: 0, requestTimeout: 10_000 });
      try {
        const started = Date.now();
        const err = await dev.read(0, 4096, { timeout: 50 }).catch((e: unknown) => e);
        assert.ok(err instanceof TimeoutError, String(err));
        assert.equal(dev.stats.taskAborts, 1);
        // The device found the command by its tag and returned it ABORTED, long before the 300 ms
        // it would otherwise have held it.
        await allReturned(dev, 2000);
        assert.ok(Date.now() - started < 220, `returned after ${Date.now() - started} ms`);
        const stats = await backend.stats();
        assert.equal(stats.tmfAbortTask, 1);
        assert.equal(stats.tmfAbortMatched, 1);
        assert.equal(dev.stats.lunResets, 0);
        const data = Buffer.alloc(4096, 0x42);
        await dev.write(data, 4096);
        assert.ok((await dev.read(4096, 4096)).equals(data));
      } finally {
        await dev.close();
      }
    },
  );
});

test('an ABORT TASK the device refuses escalates to LOGICAL UNIT RESET; the unit attention after it is absorbed', async () => {
  await withScsi(
    { fileSize: 1 * MiB, faults: { delayCompletionsMs: 200, rejectAbortTask: true } },
    async (sock, _image, backend) => {
      const dev = await openScsiDevice(sock, { target: 0, lun: 0, requestTimeout: 10_000 });
      try {
        const err = await dev
          .write(Buffer.alloc(4096, 7), 0, { timeout: 50 })
          .catch((e: unknown) => e);
        assert.ok(err instanceof TimeoutError, String(err));
        await allReturned(dev, 2000);
        assert.equal(dev.stats.taskAborts, 1);
        assert.equal(dev.stats.lunResets, 1);
        const stats = await backend.stats();
        assert.equal(stats.tmfAbortTask, 1);
        assert.equal(stats.tmfAbortMatched, 0);
        assert.equal(stats.tmfLunReset, 1);
        // The reset ended the write (RESET response): its caller had been answered, so it was not
        // sent again.
        const retries = dev.stats.retries;
        assert.equal(retries, 0);
        // The next command meets UNIT ATTENTION (power on / reset) and is retried at once.
        const data = Buffer.alloc(4096, 0x24);
        await dev.write(data, 8192);
        assert.ok((await dev.read(8192, 4096)).equals(data));
        assert.ok(dev.stats.retries > retries, 'the unit attention was not retried');
      } finally {
        await dev.close();
      }
    },
  );
});

test('a LUN that refuses both ABORT TASK and LOGICAL UNIT RESET fails the device with a typed error', async () => {
  await withScsi(
    {
      fileSize: 1 * MiB,
      faults: { delayCompletionsMs: 150, rejectAbortTask: true, rejectLunReset: true },
    },
    async (sock, _image, backend) => {
      const dev = await openScsiDevice(sock, { target: 0, lun: 0 });
      const failed = new Promise<Error>((resolve) => dev.once('error', resolve));
      const err = await dev.read(0, 4096, { timeout: 50 }).catch((e: unknown) => e);
      assert.ok(err instanceof TimeoutError, String(err));
      const failure = await failed;
      assert.ok(failure instanceof VirtioScsiResponseError, String(failure));
      assert.equal(failure.responseName, 'VIRTIO_SCSI_S_FUNCTION_REJECTED');
      assert.equal(failure.operation, 'LOGICAL UNIT RESET');
      const stats = await backend.stats();
      assert.equal(stats.tmfAbortTask, 1);
      assert.equal(stats.tmfLunReset, 1);
      await assert.rejects(dev.read(0, 512), VirtioScsiResponseError);
      assert.equal(dev.closed, true);
    },
  );
});

test('task management that is never answered fails the device with TimeoutError; nothing hangs', async () => {
  await withScsi(
    { fileSize: 1 * MiB, faults: { delayCompletionsMs: 150, ignoreTaskManagement: true } },
    async (sock) => {
      // `timeout` (the handshake step timeout) also bounds each task management function.
      const dev = await openScsiDevice(sock, { target: 0, lun: 0, timeout: 300 });
      const failed = new Promise<Error>((resolve) => dev.once('error', resolve));
      const started = Date.now();
      const pending = dev.read(0, 4096); // in flight when the device fails
      const err = await dev.read(4096, 4096, { timeout: 50 }).catch((e: unknown) => e);
      assert.ok(err instanceof TimeoutError, String(err));
      // ABORT TASK unanswered for 300 ms, then LOGICAL UNIT RESET unanswered for 300 ms.
      const failure = await failed;
      assert.ok(failure instanceof TimeoutError, String(failure));
      assert.equal(failure.operation, 'LOGICAL UNIT RESET');
      const elapsed = Date.now() - started;
      assert.ok(elapsed >= 550 && elapsed < 2000, `failed after ${elapsed} ms`);
      assert.equal(dev.stats.taskAborts, 1);
      assert.equal(dev.stats.lunResets, 1);
      // Every caller is answered: the read that was in flight settled (it completed after 150 ms,
      // before the failure), and later calls fail with the device's error.
      await pending;
      await assert.rejects(dev.read(0, 512), TimeoutError);
      assert.equal(dev.closed, true);
    },
  );
});

test('task management for a request given up on does not keep the process alive', async () => {
  // The 200th request is held 30 s (past the open's own): the script reads until one times out
  // after 100 ms, and falls off its end without closing the device. The ABORT TASK sent for it,
  // then the LOGICAL UNIT RESET, are never answered: their timers (3 s each here) kept the
  // process alive until both had run out.
  const faults = { delayEvery: 200, delayCompletionsMs: 30_000, ignoreTaskManagement: true };
  await withScsi({ fileSize: 1 * MiB, faults }, async (sock) => {
    const script = [
      `const { openScsiDevice, TimeoutError } = await import(${JSON.stringify(LIBRARY_ENTRY)});`,
      `const dev = await openScsiDevice(${JSON.stringify(sock)}, { timeout: 3000 });`,
      'let err;',
      'for (let i = 0; i < 200 && !(err instanceof TimeoutError); i++) {',
      '  err = await dev.read(0, 4096, { timeout: 100 }).catch((e) => e);',
      '}',
      "if (!(err instanceof TimeoutError)) throw new Error('expected a TimeoutError, got ' + err);",
      'console.log(dev.stats.taskAborts);',
    ].join('\n');
    const started = performance.now();
    const { code, signal, out } = await runScript(script, 20_000);
    const took = performance.now() - started;
    assert.deepEqual({ code, signal }, { code: 0, signal: null });
    assert.equal(out.trim(), '1', 'the read was given up on with an ABORT TASK');
    assert.ok(took < 2500, `the process lived ${took.toFixed(0)} ms`);
  });
});

test('event queue: transport reset and parameter change events reach dev.on("event")', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'vhost-user-scsi-events-'));
  const server = createBlockServer({
    type: 'scsi',
    socketPath: join(dir, 'sock'),
    size: 1 * MiB,
  });
  await server.listen();
  try {
    const dev = await openScsiDevice(join(dir, 'sock'));
    try {
      const seen: ScsiEvent[] = [];
      const two = new Promise<void>((resolve) => {
        dev.on('event', (e) => {
          seen.push(e);
          if (seen.length === 2) resolve();
        });
      });
      assert.ok(
        server.raiseEvent({
          event: VirtioScsiEventType.VIRTIO_SCSI_T_PARAM_CHANGE,
          target: 0,
          lun: 0,
          reason: 0x2a | (0x09 << 8),
        }),
      );
      assert.ok(
        server.raiseEvent({
          event: VirtioScsiEventType.VIRTIO_SCSI_T_TRANSPORT_RESET,
          target: 0,
          lun: 0,
          reason: VIRTIO_SCSI_EVT_RESET_REMOVED,
        }),
      );
      await two;
      assert.equal(seen[0]!.type, 'param-change');
      assert.equal(seen[0]!.asc, 0x2a);
      assert.equal(seen[0]!.ascq, 0x09);
      assert.equal(seen[1]!.type, 'transport-reset');
      assert.equal(seen[1]!.reason, VIRTIO_SCSI_EVT_RESET_REMOVED);
      assert.equal(seen[1]!.target, 0);
      assert.equal(seen[1]!.lun, 0);
      // Buffers were put back: more events than the eight posted still arrive.
      let count = 0;
      const many = new Promise<void>((resolve) => {
        dev.on('event', () => {
          if (++count === 12) resolve();
        });
      });
      for (let i = 0; i < 12; i++) {
        server.raiseEvent({
          event: VirtioScsiEventType.VIRTIO_SCSI_T_PARAM_CHANGE,
          target: 0,
          lun: 0,
          reason: 0x2a,
        });
        await new Promise((r) => setTimeout(r, 5));
      }
      await many;
    } finally {
      await dev.close();
    }
  } finally {
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('transfers above 65,535 blocks go whole in READ(16)/WRITE(16), never truncated', async () => {
  const size = 64 * MiB;
  await withScsi({ fileSize: size, maxSectors: 0x30000 }, async (sock, image) => {
    const dev = await openScsiDevice(sock, { memorySize: 128 * MiB });
    try {
      const bytes = 40 * MiB; // 81,920 blocks: more than READ(10) can carry
      const buf = dev.allocBuffer(bytes);
      const rand = prng(3);
      randomBytes(rand, 1 * MiB).copy(buf, 0);
      for (let at = MiB; at < bytes; at += MiB) buf.copy(buf, at, 0, MiB);
      buf.writeUInt32BE(0xdeadbeef, bytes - 4);
      const before = dev.stats.requests;
      assert.equal(await dev.write(buf, 8 * MiB), bytes);
      assert.equal(dev.stats.requests - before, 1, 'one WRITE(16) for 40 MiB');
      await dev.flush();
      assert.equal(fileBytes(image, 8 * MiB + bytes - 4, 4).readUInt32BE(0), 0xdeadbeef);
      const into = dev.allocBuffer(bytes);
      const r0 = dev.stats.requests;
      await dev.readInto(into, 8 * MiB);
      assert.equal(dev.stats.requests - r0, 1);
      assert.ok(into.equals(buf));
    } finally {
      await dev.close();
    }
  });
});
