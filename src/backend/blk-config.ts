/**
 * What the embedded virtio-blk device offers: its feature bits and its config space, both derived
 * from the options once per server.
 */

import { bit, VhostFeature, VirtioFeature } from '../virtio/features.js';
import { VIRTIO_BLK_SECTOR_SIZE, VirtioBlkConfig, VirtioBlkFeature } from '../devices/blk/spec.js';
import { MAX_CONFIG_BYTES } from './device-model.js';

export { MAX_CONFIG_BYTES, OFFERED_PROTOCOL_FEATURES } from './device-model.js';
/** Per DISCARD / WRITE_ZEROES request: one segment of at most this many sectors (16 MiB). */
export const MAX_DISCARD_SECTORS = 32768;
export const MAX_DISCARD_SEGMENTS = 1;

export interface BlkGeometry {
  /** Bytes the device exposes: whole blocks of the storage. */
  capacity: number;
  blockSize: number;
  readOnly: boolean;
  queues: number;
  sizeMax: number;
  segMax: number;
}

/** The virtio feature bits offered in GET_FEATURES. */
export function offeredFeatures(g: BlkGeometry): bigint {
  let features =
    bit(VirtioFeature.VIRTIO_F_VERSION_1) |
    bit(VhostFeature.VHOST_USER_F_PROTOCOL_FEATURES) |
    bit(VirtioFeature.VIRTIO_RING_F_INDIRECT_DESC) |
    bit(VirtioFeature.VIRTIO_RING_F_EVENT_IDX) |
    bit(VirtioBlkFeature.VIRTIO_BLK_F_SEG_MAX) |
    bit(VirtioBlkFeature.VIRTIO_BLK_F_BLK_SIZE) |
    bit(VirtioBlkFeature.VIRTIO_BLK_F_FLUSH) |
    bit(VirtioBlkFeature.VIRTIO_BLK_F_TOPOLOGY);
  // size_max 0 in the config space would allow no segment at all: no limit means no feature.
  if (g.sizeMax > 0) features |= bit(VirtioBlkFeature.VIRTIO_BLK_F_SIZE_MAX);
  if (g.readOnly) features |= bit(VirtioBlkFeature.VIRTIO_BLK_F_RO);
  else {
    features |=
      bit(VirtioBlkFeature.VIRTIO_BLK_F_DISCARD) | bit(VirtioBlkFeature.VIRTIO_BLK_F_WRITE_ZEROES);
  }
  if (g.queues > 1) features |= bit(VirtioBlkFeature.VIRTIO_BLK_F_MQ);
  return features;
}

/** The whole config space (256 bytes): virtio_blk_config, then zeroes. */
export function configSpace(g: BlkGeometry): Uint8Array {
  const blockSectors = g.blockSize / VIRTIO_BLK_SECTOR_SIZE;
  const struct = VirtioBlkConfig.encode({
    capacity: BigInt(g.capacity / VIRTIO_BLK_SECTOR_SIZE),
    sizeMax: g.sizeMax,
    segMax: g.segMax,
    cylinders: 0,
    heads: 0,
    sectors: 0,
    blkSize: g.blockSize,
    physicalBlockExp: 0,
    alignmentOffset: 0,
    minIoSize: 1,
    optIoSize: 0,
    writeback: 0,
    numQueues: g.queues,
    maxDiscardSectors: g.readOnly ? 0 : MAX_DISCARD_SECTORS,
    maxDiscardSeg: g.readOnly ? 0 : MAX_DISCARD_SEGMENTS,
    discardSectorAlignment: blockSectors,
    maxWriteZeroesSectors: g.readOnly ? 0 : MAX_DISCARD_SECTORS,
    maxWriteZeroesSeg: g.readOnly ? 0 : MAX_DISCARD_SEGMENTS,
    writeZeroesMayUnmap: g.readOnly ? 0 : 1,
  });
  const space = new Uint8Array(MAX_CONFIG_BYTES);
  space.set(struct, 0);
  return space;
}
