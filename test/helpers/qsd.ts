import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, existsSync, writeFileSync, truncateSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

export interface QsdOptions {
  /** Size of the backing raw file (or the null-co device) in bytes. */
  size?: number;
  /** 'file': a raw file in a temp dir, readable by the test; 'null': null-co (fast, no data). */
  driver?: 'file' | 'null';
  writable?: boolean;
  /** Initial contents of the raw file. */
  contents?: Buffer;
  /** Extra --export properties, e.g. 'num-queues=2'. */
  exportOptions?: string[];
  /** Extra --blockdev properties for the file driver. */
  blockdevOptions?: string[];
  /** A slow device: the export sits on a throttle node capped at this many IOPS. */
  throttleIops?: number;
}

export interface Qsd {
  socketPath: string;
  /** The raw file behind the export (driver 'file'). */
  imagePath: string;
  dir: string;
  process: ChildProcess;
  /** Stops the daemon (SIGTERM, then SIGKILL) and removes the temp dir. */
  stop(): Promise<void>;
  /** Kills it without warning (SIGKILL). */
  kill(): void;
  stderr(): string;
}

const BINARY = process.env.QEMU_STORAGE_DAEMON ?? 'qemu-storage-daemon';

/**
 * Starts qemu-storage-daemon exporting a vhost-user-blk device on a socket in a new temp dir.
 * Fails (never skips) when the daemon is not installed: `.ci/run` installs it.
 */
export async function startQsd(options: QsdOptions = {}): Promise<Qsd> {
  const size = options.size ?? 16 * 1024 * 1024;
  const dir = mkdtempSync(join(tmpdir(), 'vhost-user-qsd-'));
  const socketPath = join(dir, 'vhost.sock');
  const imagePath = join(dir, 'disk.img');
  let blockdev: string;
  if ((options.driver ?? 'file') === 'file') {
    if (options.contents) writeFileSync(imagePath, options.contents);
    else writeFileSync(imagePath, Buffer.alloc(0));
    truncateSync(imagePath, size);
    blockdev = [
      'driver=file',
      'node-name=disk',
      `filename=${imagePath}`,
      ...(options.blockdevOptions ?? []),
    ].join(',');
  } else {
    blockdev = `driver=null-co,node-name=disk,size=${size}`;
  }
  const args: string[] = [];
  let exported = 'disk';
  if (options.throttleIops !== undefined) {
    args.push('--object', `throttle-group,id=tg0,x-iops-total=${options.throttleIops}`);
    args.push('--blockdev', blockdev);
    blockdev = 'driver=throttle,node-name=throttled,throttle-group=tg0,file=disk';
    exported = 'throttled';
  }
  const exportSpec = [
    'type=vhost-user-blk',
    'id=export0',
    `node-name=${exported}`,
    'addr.type=unix',
    `addr.path=${socketPath}`,
    `writable=${options.writable === false ? 'off' : 'on'}`,
    ...(options.exportOptions ?? []),
  ].join(',');
  const child = spawn(BINARY, [...args, '--blockdev', blockdev, '--export', exportSpec], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr?.on('data', (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  const spawnError = new Promise<Error>((resolve) => child.once('error', resolve));
  const deadline = Date.now() + 10_000;
  while (!existsSync(socketPath)) {
    const failed = await Promise.race([spawnError, sleep(20).then(() => undefined)]);
    if (failed) {
      rmSync(dir, { recursive: true, force: true });
      throw new Error(`cannot start ${BINARY} (install qemu-system-common): ${failed.message}`);
    }
    if (child.exitCode !== null || Date.now() > deadline) {
      child.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
      throw new Error(`qemu-storage-daemon did not create its socket: ${stderr}`);
    }
  }
  const exited = new Promise<void>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve();
    else child.once('exit', () => resolve());
  });
  return {
    socketPath,
    imagePath,
    dir,
    process: child,
    stderr: () => stderr,
    kill: () => {
      child.kill('SIGKILL');
    },
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 3000);
        await exited;
        clearTimeout(timer);
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
