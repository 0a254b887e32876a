/**
 * The virtio-scsi frontend against targets that answer badly or unusually: cases found by
 * hunting around identification, residuals and used lengths. The peer is the embedded backend in
 * this process, its target or its virtio framing rewritten per test through the prototypes (the
 * frontend's own code is untouched), so a test can script exactly one misbehaviour.
 */
import { test, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { openScsiDevice, type BlockServerOptions } from '../../src/index.js';
import { ScsiTarget, type ScsiCommand, type ScsiOutcome } from '../../src/backend/scsi-target.js';
import { ScsiDevice } from '../../src/backend/scsi-device.js';
import type { DeviceChain } from '../../src/backend/device-queue.js';
import type { RequestResult } from '../../src/backend/device-model.js';
import { withServer } from '../helpers/in-process-server.js';

/** Answers a command instead of the target (undefined: the target runs it). */
let scriptTarget: ((cmd: ScsiCommand) => ScsiOutcome | undefined) | undefined;
/** Rewrites what the device answered (the chain holds the response it wrote). */
let scriptDevice: ((chain: DeviceChain, result: RequestResult) => RequestResult) | undefined;

const targetExecute = ScsiTarget.prototype.execute;
ScsiTarget.prototype.execute = function (this: ScsiTarget, cmd, hooks) {
  return scriptTarget?.(cmd) ?? targetExecute.call(this, cmd, hooks);
};
const deviceExecute = ScsiDevice.prototype.execute;
ScsiDevice.prototype.execute = function (this: ScsiDevice, chain, fault, hooks) {
  const result = deviceExecute.call(this, chain, fault, hooks);
  return scriptDevice === undefined ? result : scriptDevice(chain, result);
};

afterEach(() => {
  scriptTarget = undefined;
  scriptDevice = undefined;
});

async function withScsiServer(
  options: Partial<Omit<BlockServerOptions, 'socketPath'>>,
  body: (socketPath: string) => Promise<void>,
): Promise<void> {
  await withServer({ type: 'scsi', size: 1024 * 1024, ...options }, body);
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
