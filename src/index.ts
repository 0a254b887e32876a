export {
  openBlockDevice,
  openScsiDevice,
  openDevice,
  type OpenOptions,
  type ScsiOpenOptions,
  type DeviceOpenOptions,
} from './api/open.js';
export {
  BlockDevice,
  type IoOptions,
  type SyncIoOptions,
  type BlockDeviceEvents,
  type DeviceInfo,
  type ScsiCommandOptions,
  type ScsiCommandSyncOptions,
  type ScsiCommandResult,
} from './api/block-device.js';
export type { BlkDeviceInfo } from './devices/blk/driver.js';
export type { ScsiDeviceInfo, ScsiEvent, ScsiLunInfo } from './devices/scsi/driver.js';
export type { DeviceStats } from './devices/stats.js';
export type { CompletionMode, CompletionOptions, AdaptiveOptions } from './completion/index.js';
export type { BatchingMode } from './completion/adaptive-options.js';
export type { HugePages } from './memory/region.js';
export * from './errors.js';
export type {
  BlockReadStream,
  BlockWriteStream,
  ReadStreamOptions,
  WriteStreamOptions,
} from './api/streams.js';
export { createBlockServer, type BlockServer } from './backend/index.js';
export type { BlockServerOptions, BlockServerFaults, ServerStats } from './backend/index.js';
