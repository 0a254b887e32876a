/** The embedded vhost-user-blk / vhost-user-scsi backend (device side), for tests, demos and local use. */
export { createBlockServer, type BlockServer } from './server.js';
export type { BackendType, BlockServerOptions, BlockServerFaults } from './options.js';
export type { ScsiEvent } from './scsi-device.js';
export type { ServerStats } from './stats.js';
