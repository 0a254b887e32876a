/**
 * Scripts the answers of the embedded vhost-user-scsi backend running in this process, so a test
 * of the frontend can make it misbehave in exactly one way: importing this module patches the
 * backend's prototypes (ScsiTarget.execute, ScsiDevice.execute and control, FaultPlan.delayMs)
 * to consult `script`, which resetScript() empties (call it after each test).
 */
import type { BlockServerOptions } from '../../src/index.js';
import { ScsiTarget, type ScsiCommand, type ScsiOutcome } from '../../src/backend/scsi-target.js';
import { ScsiDevice } from '../../src/backend/scsi-device.js';
import { FaultPlan } from '../../src/backend/faults.js';
import type { DeviceChain } from '../../src/backend/device-queue.js';
import type { HeldRequests, RequestResult } from '../../src/backend/device-model.js';
import type { BlockServer } from '../../src/backend/index.js';
import { VirtioScsiCmdReqHeader, VirtioScsiCtrlType } from '../../src/devices/scsi/spec.js';
import { copyFromSegments } from '../../src/backend/storage.js';
import { withServer } from './in-process-server.js';

export const script: {
  /** Answers a command instead of the target (undefined: the target runs it). */
  target: ((cmd: ScsiCommand) => ScsiOutcome | undefined) | undefined;
  /** Rewrites what the device answered (the chain holds the response it wrote). */
  device: ((chain: DeviceChain, result: RequestResult) => RequestResult) | undefined;
  /** Requests taken from now on are held this long before they complete (0: not held). */
  holdMs: number;
  /**
   * Task management functions the device answers FUNCTION_COMPLETE without ending the commands
   * they name: the commands stay held.
   */
  loseCommandsOn: Set<number>;
} = { target: undefined, device: undefined, holdMs: 0, loseCommandsOn: new Set() };

export function resetScript(): void {
  script.target = undefined;
  script.device = undefined;
  script.holdMs = 0;
  script.loseCommandsOn = new Set();
}

const targetExecute = ScsiTarget.prototype.execute;
ScsiTarget.prototype.execute = function (this: ScsiTarget, cmd, hooks) {
  return script.target?.(cmd) ?? targetExecute.call(this, cmd, hooks);
};
const deviceExecute = ScsiDevice.prototype.execute;
ScsiDevice.prototype.execute = function (this: ScsiDevice, chain, fault, hooks) {
  const result = deviceExecute.call(this, chain, fault, hooks);
  return script.device === undefined ? result : script.device(chain, result);
};
const deviceControl = ScsiDevice.prototype.control;
ScsiDevice.prototype.control = function (this: ScsiDevice, chain, held) {
  // virtio_scsi_ctrl_tmf_req: type, then subtype (both le32).
  const head = Buffer.alloc(8);
  copyFromSegments(chain.readable, 0, head);
  const tmf = head.readUInt32LE(0) === VirtioScsiCtrlType.VIRTIO_SCSI_T_TMF;
  if (!tmf || !script.loseCommandsOn.has(head.readUInt32LE(4))) {
    return deviceControl.call(this, chain, held);
  }
  const keeping: HeldRequests = { complete: () => 0, has: (match) => held.has(match) };
  return deviceControl.call(this, chain, keeping);
};
const delayMs = FaultPlan.prototype.delayMs;
FaultPlan.prototype.delayMs = function (this: FaultPlan) {
  return script.holdMs > 0 ? script.holdMs : delayMs.call(this);
};

/** The CDB's operation code: the CDB follows the request header in the readable part. */
export function opcodeOf(chain: DeviceChain): number {
  const head = Buffer.alloc(VirtioScsiCmdReqHeader.size + 1);
  copyFromSegments(chain.readable, 0, head);
  return head[VirtioScsiCmdReqHeader.size]!;
}

/** An in-process scsi server (1 MiB RAM disk unless `options` say otherwise) for `body`. */
export async function withScsiServer(
  options: Partial<Omit<BlockServerOptions, 'socketPath'>>,
  body: (socketPath: string, server: BlockServer) => Promise<void>,
): Promise<void> {
  await withServer({ type: 'scsi', size: 1024 * 1024, ...options }, body);
}
