/** The embedded vhost-user-blk backend (device side), for tests, demos and local use. */
export { createBlockServer, type BlockServer } from './server.js';
export type { BlockServerOptions, BlockServerFaults } from './options.js';
export type { ServerStats } from './stats.js';
