import { bit, VhostFeature, VirtioFeature } from '../../virtio/features.js';
import { VirtioBlkFeature } from './spec.js';

/**
 * The feature bits this driver implements. Negotiation offers the backend exactly
 * (offered & BLK_DRIVER_FEATURES): never NOTIFY_ON_EMPTY or LOG_ALL, which it does not implement.
 */
export const BLK_DRIVER_FEATURES =
  bit(VirtioFeature.VIRTIO_F_VERSION_1) |
  bit(VirtioFeature.VIRTIO_RING_F_INDIRECT_DESC) |
  bit(VirtioFeature.VIRTIO_RING_F_EVENT_IDX) |
  bit(VhostFeature.VHOST_USER_F_PROTOCOL_FEATURES) |
  bit(VirtioBlkFeature.VIRTIO_BLK_F_SIZE_MAX) |
  bit(VirtioBlkFeature.VIRTIO_BLK_F_SEG_MAX) |
  bit(VirtioBlkFeature.VIRTIO_BLK_F_GEOMETRY) |
  bit(VirtioBlkFeature.VIRTIO_BLK_F_RO) |
  bit(VirtioBlkFeature.VIRTIO_BLK_F_BLK_SIZE) |
  bit(VirtioBlkFeature.VIRTIO_BLK_F_FLUSH) |
  bit(VirtioBlkFeature.VIRTIO_BLK_F_TOPOLOGY) |
  bit(VirtioBlkFeature.VIRTIO_BLK_F_CONFIG_WCE) |
  bit(VirtioBlkFeature.VIRTIO_BLK_F_MQ) |
  bit(VirtioBlkFeature.VIRTIO_BLK_F_DISCARD) |
  bit(VirtioBlkFeature.VIRTIO_BLK_F_WRITE_ZEROES);
