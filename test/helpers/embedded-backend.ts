/**
 * Starts the embedded backend in a child process (dist/test/helpers/backend-child.js), like
 * startQsd does for qemu-storage-daemon: a temp dir with the socket and, unless `size` asks for a
 * RAM disk, a raw file the test can read independently. `type: 'scsi'` (with `target`, `lun`)
 * starts the vhost-user-scsi backend instead of vhost-user-blk.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import type { BlockServerOptions, ScsiEvent, ServerStats } from '../../src/backend/index.js';
import type { BackendTamper } from './backend-child.js';

export type EmbeddedOptions = Partial<Omit<BlockServerOptions, 'trace'>> & {
  /** Size of the raw file (default 16 MiB); ignored when `size` makes a RAM disk. */
  fileSize?: number;
  /** Initial contents of the raw file. */
  contents?: Buffer;
  /** Completions that lie (see backend-child.ts). */
  tamper?: BackendTamper;
};

export interface Embedded {
  socketPath: string;
  /** The raw file behind the disk ('' for a RAM disk). */
  imagePath: string;
  dir: string;
  process: ChildProcess;
  /** 'ram', 'direct' or 'buffered': what the backend ended up using. */
  storageKind: string;
  /** EVENT lines printed so far (connection, disconnect, protocol-error, error). */
  events: string[];
  /** Asks the child for its counters (SIGUSR2). */
  stats(): Promise<ServerStats>;
  /**
   * scsi: has the child put an event on the eventq (BlockServer.raiseEvent); resolves true if a
   * buffer took it, false if it was missed.
   */
  raiseEvent(event: ScsiEvent): Promise<boolean>;
  /** Closes the server (SIGTERM, then SIGKILL) and removes the temp dir. */
  stop(): Promise<ServerStats | undefined>;
  kill(): void;
  stderr(): string;
}

const CHILD = join(dirname(fileURLToPath(import.meta.url)), 'backend-child.js');

export async function startEmbedded(options: EmbeddedOptions = {}): Promise<Embedded> {
  const { fileSize, contents, tamper, ...serverOptions } = options;
  const dir = mkdtempSync(join(tmpdir(), 'vhost-user-embedded-'));
  const socketPath = join(dir, 'vhost.sock');
  let imagePath = '';
  if (serverOptions.size === undefined && serverOptions.file === undefined) {
    imagePath = join(dir, 'disk.img');
    writeFileSync(imagePath, contents ?? Buffer.alloc(0));
    truncateSync(imagePath, fileSize ?? 16 * 1024 * 1024);
    serverOptions.file = imagePath;
  }
  serverOptions.socketPath ??= socketPath;
  const child = spawn(process.execPath, [CHILD, JSON.stringify(serverOptions)], {
    stdio: ['pipe', 'pipe', 'pipe'],
    env:
      tamper === undefined
        ? process.env
        : { ...process.env, VHOST_USER_BACKEND_TAMPER: JSON.stringify(tamper) },
  });
  let stderr = '';
  child.stderr!.on('data', (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  const events: string[] = [];
  const statsWaiters: ((s: ServerStats) => void)[] = [];
  const raiseWaiters: ((result: string) => void)[] = [];
  let lastStats: ServerStats | undefined;
  let readyResolve: (kind: string) => void = () => {};
  const ready = new Promise<string>((resolve) => (readyResolve = resolve));
  createInterface({ input: child.stdout! }).on('line', (text) => {
    if (text.startsWith('READY')) readyResolve(text.slice(6));
    else if (text.startsWith('EVENT ')) events.push(text.slice(6));
    else if (text.startsWith('RAISED ')) raiseWaiters.shift()?.(text.slice(7));
    else if (text.startsWith('STATS ')) {
      lastStats = JSON.parse(text.slice(6)) as ServerStats;
      for (const w of statsWaiters.splice(0)) w(lastStats);
    }
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
  const kind = await Promise.race([ready, exited.then(() => undefined)]);
  clearTimeout(timer);
  if (kind === undefined) {
    rmSync(dir, { recursive: true, force: true });
    throw new Error(`embedded backend did not start: ${stderr}`);
  }
  const alive = (): boolean => child.exitCode === null && child.signalCode === null;
  return {
    socketPath: serverOptions.socketPath,
    imagePath,
    dir,
    process: child,
    storageKind: kind,
    events,
    stderr: () => stderr,
    stats: () =>
      new Promise<ServerStats>((resolve, reject) => {
        if (!alive()) {
          if (lastStats) resolve(lastStats);
          else reject(new Error('embedded backend is not running'));
          return;
        }
        statsWaiters.push(resolve);
        child.kill('SIGUSR2');
      }),
    raiseEvent: (event) =>
      new Promise<boolean>((resolve, reject) => {
        if (!alive()) {
          reject(new Error('embedded backend is not running'));
          return;
        }
        raiseWaiters.push((result) => {
          if (result === 'true' || result === 'false') resolve(result === 'true');
          else reject(new Error(`raiseEvent: ${result}`));
        });
        child.stdin!.write(`RAISE ${JSON.stringify(event)}\n`);
      }),
    kill: () => {
      child.kill('SIGKILL');
    },
    stop: async () => {
      if (alive()) {
        child.kill('SIGTERM');
        const killer = setTimeout(() => child.kill('SIGKILL'), 3000);
        await exited;
        clearTimeout(killer);
      }
      rmSync(dir, { recursive: true, force: true });
      return lastStats;
    },
  };
}
