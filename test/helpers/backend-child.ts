/**
 * Child-process entry for the embedded backend: `node backend-child.js '<BlockServerOptions JSON>'`
 * (blk, or scsi with `"type": "scsi"`). Prints `READY` once accepting; `STATS <json>` on SIGUSR2
 * and before exiting; `EVENT <name> [message]` for connection, disconnect, protocol-error and
 * error. A stdin line `RAISE <ScsiEvent JSON>` raises a virtio-scsi event and answers `RAISED
 * true|false` (or `RAISED <error>`). SIGTERM closes cleanly.
 */
import { createInterface } from 'node:readline';
import {
  createBlockServer,
  type BlockServerOptions,
  type ScsiEvent,
} from '../../src/backend/index.js';

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
