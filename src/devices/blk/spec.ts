import { defineStruct, u8, u16, u32, u64 } from '../../protocol/struct.js';

/** virtio-blk feature bits (virtio spec, "Block Device: Feature bits"). */
export const VirtioBlkFeature = {
  VIRTIO_BLK_F_SIZE_MAX: 1,
  VIRTIO_BLK_F_SEG_MAX: 2,
  VIRTIO_BLK_F_GEOMETRY: 4,
  VIRTIO_BLK_F_RO: 5,
  VIRTIO_BLK_F_BLK_SIZE: 6,
  VIRTIO_BLK_F_FLUSH: 9,
  VIRTIO_BLK_F_TOPOLOGY: 10,
  VIRTIO_BLK_F_CONFIG_WCE: 11,
  VIRTIO_BLK_F_MQ: 12,
  VIRTIO_BLK_F_DISCARD: 13,
  VIRTIO_BLK_F_WRITE_ZEROES: 14,
  VIRTIO_BLK_F_LIFETIME: 15,
  VIRTIO_BLK_F_SECURE_ERASE: 16,
} as const;

/** Request types (virtio_blk_outhdr.type). */
export const VirtioBlkType = {
  VIRTIO_BLK_T_IN: 0,
  VIRTIO_BLK_T_OUT: 1,
  VIRTIO_BLK_T_FLUSH: 4,
  VIRTIO_BLK_T_GET_ID: 8,
  VIRTIO_BLK_T_DISCARD: 11,
  VIRTIO_BLK_T_WRITE_ZEROES: 13,
} as const;
export type VirtioBlkRequestType = (typeof VirtioBlkType)[keyof typeof VirtioBlkType];

/** Status byte values the device writes. */
export const VIRTIO_BLK_S_OK = 0;
export const VIRTIO_BLK_S_IOERR = 1;
export const VIRTIO_BLK_S_UNSUPP = 2;
/** Preset before submission: a device never writes it, so an unwritten status is detectable. */
export const STATUS_NOT_WRITTEN = 0xff;

/** Sector units in requests are always 512 bytes, whatever blk_size says. */
export const VIRTIO_BLK_SECTOR_SIZE = 512;
export const VIRTIO_BLK_ID_BYTES = 20;
export const VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP = 1;

/** struct virtio_blk_outhdr: the driver-readable header of every request. */
export const VirtioBlkOutHdr = defineStruct('virtio_blk_outhdr', 16, {
  type: u32(0),
  ioprio: u32(4),
  sector: u64(8),
});

/** struct virtio_blk_discard_write_zeroes: one segment of a DISCARD / WRITE_ZEROES request. */
export const VirtioBlkDiscardWriteZeroes = defineStruct('virtio_blk_discard_write_zeroes', 16, {
  sector: u64(0),
  numSectors: u32(8),
  flags: u32(12),
});

/**
 * struct virtio_blk_config up to write_zeroes_may_unmap and its padding: the fields this library
 * reads. GET_CONFIG asks for exactly this many bytes, because qemu-storage-daemon refuses a
 * request larger than its own struct.
 */
export const VirtioBlkConfig = defineStruct('virtio_blk_config', 60, {
  capacity: u64(0),
  sizeMax: u32(8),
  segMax: u32(12),
  cylinders: u16(16),
  heads: u8(18),
  sectors: u8(19),
  blkSize: u32(20),
  physicalBlockExp: u8(24),
  alignmentOffset: u8(25),
  minIoSize: u16(26),
  optIoSize: u32(28),
  writeback: u8(32),
  numQueues: u16(34),
  maxDiscardSectors: u32(36),
  maxDiscardSeg: u32(40),
  discardSectorAlignment: u32(44),
  maxWriteZeroesSectors: u32(48),
  maxWriteZeroesSeg: u32(52),
  writeZeroesMayUnmap: u8(56),
});
