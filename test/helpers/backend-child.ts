/**
 * Child-process entry for the embedded backend: `node backend-child.js '<BlockServerOptions JSON>'`
 * (blk, or scsi with `"type": "scsi"`). Prints `READY` once accepting; `STATS <json>` on SIGUSR2
 * and before exiting; `EVENT <name> [message]` for connection, disconnect, protocol-error and
 * error. A stdin line `RAISE <ScsiEvent JSON>` raises a virtio-scsi event and answers `RAISED
 * true|false` (or `RAISED <error>`). SIGTERM closes cleanly. VHOST_USER_BACKEND_TAMPER (JSON,
 * see BackendTamper) makes virtio-blk completions lie in ways the fault options cannot.
 */
import { createInterface } from 'node:readline';
import {
  createBlockServer,
  type BlockServerOptions,
  type ScsiEvent,
} from '../../src/backend/index.js';
import { BlkDevice } from '../../src/backend/blk-device.js';
import type { DeviceChain } from '../../src/backend/device-queue.js';
import { VIRTIO_BLK_S_OK } from '../../src/devices/blk/spec.js';

/** How virtio-blk completions lie, for the frontend's misbehaviour tests. */
export interface BackendTamper {
  /** Successful reads leave their data unwritten (0xee) and report len 1 (status byte only). */
  readsWriteNothing?: boolean;
  /** Successful reads report the data alone, the status byte left out of len (cloud-hypervisor's way). */
  lenWithoutStatus?: boolean;
}

if (process.env.VHOST_USER_BACKEND_TAMPER) {
  const tamper = JSON.parse(process.env.VHOST_USER_BACKEND_TAMPER) as BackendTamper;
  const execute = BlkDevice.prototype.execute;
  BlkDevice.prototype.execute = function (this: BlkDevice, chain: DeviceChain, ...rest) {
    const result = execute.call(this, chain, ...rest);
    // Reads (and GET_ID, which the tests here do not send) are the requests whose chain has
    // data to write besides the status byte.
    const read = result.status === VIRTIO_BLK_S_OK && result.len === chain.writableBytes;
    if (!read || result.len <= 1) return result;
    if (tamper.readsWriteNothing === true) {
      for (const segment of chain.writable) segment.buf.fill(0xee);
      chain.status[0] = VIRTIO_BLK_S_OK;
      return { ...result, len: 1 };
    }
    if (tamper.lenWithoutStatus === true) return { ...result, len: result.len - 1 };
    return result;
  };
}

const options = JSON.parse(process.argv[2] ?? '{}') as BlockServerOptions;
if (process.env.VHOST_USER_BACKEND_TRACE) {
  options.trace = (line) => process.stderr.write(`${line}\n`);
}
const server = createBlockServer(options);

function line(text: string): void {
  process.stdout.write(`${text}\n`);
}
const stats = (): void => line(`STATS ${JSON.stringify(server.stats)}`);

server.on('connection', () => line('EVENT connection'));
server.on('disconnect', (err?: Error) => line(`EVENT disconnect${err ? ` ${err.message}` : ''}`));
server.on('protocol-error', (err: Error) => line(`EVENT protocol-error ${err.message}`));
server.on('error', (err: Error) => line(`EVENT error ${err.message}`));

process.on('SIGUSR2', stats);
// stdin is a pipe only when the parent gives one; EOF there is not a reason to stop.
createInterface({ input: process.stdin }).on('line', (text) => {
  if (!text.startsWith('RAISE ')) return;
  try {
    line(`RAISED ${String(server.raiseEvent(JSON.parse(text.slice(6)) as ScsiEvent))}`);
  } catch (err) {
    line(`RAISED ${(err as Error).message}`);
  }
});
process.on('SIGTERM', () => {
  void server.close().then(() => {
    stats();
    process.exit(0);
  });
});

try {
  await server.listen();
  line(`READY ${server.storageKind ?? ''}`);
} catch (err) {
  process.stderr.write(`backend-child: ${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
}
