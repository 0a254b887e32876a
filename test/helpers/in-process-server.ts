/**
 * The embedded backend in the test's own process, on a socket in a temporary folder, for the
 * length of `body`. In-process, it cannot run between the frontend's synchronous steps, which
 * makes counts of kicks and requests exact; startEmbedded (a child process) is for the rest.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createBlockServer, type BlockServer, type BlockServerOptions } from '../../src/index.js';

/** Closes the server after `body`; a failing close does not replace the body's own error. */
export async function withServer(
  options: Omit<BlockServerOptions, 'socketPath'>,
  body: (socketPath: string, server: BlockServer) => Promise<void>,
): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'vhost-user-in-process-'));
  const socketPath = join(dir, 'sock');
  const server = createBlockServer({ ...options, socketPath });
  let failed = true;
  try {
    await server.listen();
    await body(socketPath, server);
    failed = false;
  } finally {
    await server.close().catch((err: unknown) => {
      if (!failed) throw err;
    });
    rmSync(dir, { recursive: true, force: true });
  }
}
