/**
 * What the embedded virtio-scsi device offers (virtio spec "SCSI Host Device"): its feature bits,
 * its config space and the limits its one LUN advertises, all derived from the options.
 */

import { bit, VhostFeature, VirtioFeature } from '../virtio/features.js';
import {
  VIRTIO_SCSI_CDB_DEFAULT_SIZE,
  VIRTIO_SCSI_FIRST_REQUESTQ,
  VIRTIO_SCSI_MAX_LUN,
  VIRTIO_SCSI_MAX_TARGET,
  VIRTIO_SCSI_SENSE_DEFAULT_SIZE,
  VirtioScsiConfig,
  VirtioScsiEvent,
  VirtioScsiFeature,
} from '../devices/scsi/spec.js';
import { MAX_CONFIG_BYTES } from './device-model.js';

/** Commands the LUN accepts at once per the config (advertised, like QEMU's default). */
export const CMD_PER_LUN = 128;
/** UNMAP / WRITE SAME limits of the block limits VPD page, in bytes (16 MiB, as blk's discard). */
export const MAX_UNMAP_BYTES = 16 * 1024 * 1024;
export const MAX_UNMAP_DESCRIPTORS = 4;
export const MAX_WRITE_SAME_BYTES = 16 * 1024 * 1024;

export interface ScsiGeometry {
  /** Request queues (num_queues); the device has two more rings (controlq, eventq). */
  queues: number;
  segMax: number;
  maxSectors: number;
}

/** The rings the device has: controlq, eventq, then the request queues (GET_QUEUE_NUM). */
export function scsiRingCount(g: ScsiGeometry): number {
  return VIRTIO_SCSI_FIRST_REQUESTQ + g.queues;
}

/**
 * The virtio feature bits offered in GET_FEATURES. HOTPLUG and CHANGE make eventq events
 * meaningful to the driver; a read-only LUN is reported by MODE SENSE, not by a feature.
 */
export function offeredScsiFeatures(): bigint {
  return (
    bit(VirtioFeature.VIRTIO_F_VERSION_1) |
    bit(VhostFeature.VHOST_USER_F_PROTOCOL_FEATURES) |
    bit(VirtioFeature.VIRTIO_RING_F_INDIRECT_DESC) |
    bit(VirtioFeature.VIRTIO_RING_F_EVENT_IDX) |
    bit(VirtioFeature.VIRTIO_F_NOTIFY_ON_EMPTY) |
    bit(VirtioScsiFeature.VIRTIO_SCSI_F_HOTPLUG) |
    bit(VirtioScsiFeature.VIRTIO_SCSI_F_CHANGE)
  );
}

/** The whole config space (256 bytes): virtio_scsi_config, then zeroes. */
export function scsiConfigSpace(g: ScsiGeometry): Uint8Array {
  const struct = VirtioScsiConfig.encode({
    numQueues: g.queues,
    segMax: g.segMax,
    maxSectors: g.maxSectors,
    cmdPerLun: CMD_PER_LUN,
    eventInfoSize: VirtioScsiEvent.size,
    senseSize: VIRTIO_SCSI_SENSE_DEFAULT_SIZE,
    cdbSize: VIRTIO_SCSI_CDB_DEFAULT_SIZE,
    maxChannel: 0,
    // What Linux and QEMU use: the driver scans every target; absent ones answer BAD_TARGET.
    maxTarget: VIRTIO_SCSI_MAX_TARGET,
    maxLun: VIRTIO_SCSI_MAX_LUN,
  });
  const space = new Uint8Array(MAX_CONFIG_BYTES);
  space.set(struct, 0);
  return space;
}
