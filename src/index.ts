export { openBlockDevice, type OpenOptions } from './api/open.js';
export {
  BlockDevice,
  type IoOptions,
  type SyncIoOptions,
  type BlockDeviceEvents,
} from './api/block-device.js';
export type { BlkDeviceInfo } from './devices/blk/driver.js';
export type { DeviceStats } from './devices/stats.js';
export type { HugePages } from './memory/region.js';
export * from './errors.js';
