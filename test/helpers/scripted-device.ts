/**
 * A device on the scripted backend, which answers no request, for tests that count what the
 * frontend does with requests that never complete (kicks, failures).
 */
import { openBlockDevice, type BlockDevice, type OpenOptions } from '../../src/index.js';
import { startScriptedBackend } from './scripted-backend.js';

/** What the body gets: the device, a signal for its requests, and where to put them. */
export interface ScriptedDevice {
  dev: BlockDevice;
  signal: AbortSignal;
  pending: Promise<unknown>[];
}

/**
 * Opens a device on a fresh scripted backend for `body`; then aborts what the body left pending,
 * closes the device and stops the backend (a failing cleanup does not replace the body's own
 * error). Resolves to how the pending requests settled.
 */
export async function withScriptedDevice(
  options: OpenOptions,
  body: (ctx: ScriptedDevice) => Promise<void> | void,
): Promise<PromiseSettledResult<unknown>[]> {
  const backend = await startScriptedBackend();
  const pending: Promise<unknown>[] = [];
  let failed = true;
  const unlessFailed = (err: unknown): void => {
    if (!failed) throw err;
  };
  let outcomes: PromiseSettledResult<unknown>[] = [];
  try {
    const dev = await openBlockDevice(backend.socketPath, options);
    const abort = new AbortController();
    try {
      await body({ dev, signal: abort.signal, pending });
      failed = false;
    } finally {
      abort.abort();
      outcomes = await Promise.allSettled(pending);
      await dev.close({ timeout: 500 }).catch(unlessFailed);
    }
  } finally {
    await backend.stop().catch(unlessFailed);
  }
  return outcomes;
}
