/**
 * Child-process entry for the embedded backend: `node backend-child.js '<BlockServerOptions JSON>'`.
 * Prints `READY` once accepting; `STATS <json>` on SIGUSR2 and before exiting; `EVENT <name>
 * [message]` for connection, disconnect, protocol-error and error. SIGTERM closes cleanly.
 */
import { createBlockServer, type BlockServerOptions } from '../../src/backend/index.js';

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
