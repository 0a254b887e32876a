import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';

/** A backend running in a child process. */
export interface ChildBackend {
  name: string;
  socketPath: string;
  process: ChildProcess;
  /** SIGTERM, then SIGKILL after 3 s; resolves to the exit code (null when killed by a signal). */
  stop(): Promise<number | null>;
}

const START_TIMEOUT_MS = 10_000;
const MAIN = fileURLToPath(new URL('./main.js', import.meta.url));

function exited(child: ChildProcess): Promise<number | null> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(child.exitCode);
  return new Promise((resolve) => child.once('exit', (code) => resolve(code)));
}

function stopper(child: ChildProcess): () => Promise<number | null> {
  return async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 3000);
    const code = await exited(child);
    clearTimeout(timer);
    return code;
  };
}

function collect(child: ChildProcess): () => string {
  let text = '';
  child.stderr?.on('data', (chunk: Buffer) => {
    text = (text + chunk.toString()).slice(-4000);
  });
  return () => text.trim();
}

/**
 * This CLI's own `serve` in a child process (a separate thread of control from the frontend,
 * whose blocking calls would otherwise starve it). Ready when it prints "listening on".
 */
export async function spawnEmbedded(image: string, socketPath: string): Promise<ChildBackend> {
  const child = spawn(
    process.execPath,
    [MAIN, 'serve', '--file', image, '--socket-path', socketPath],
    {
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  const stderr = collect(child);
  await new Promise<void>((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => fail('did not start in time'), START_TIMEOUT_MS);
    function fail(why: string): void {
      clearTimeout(timer);
      child.kill('SIGKILL');
      reject(new Error(`embedded backend ${why}${stderr() ? `: ${stderr()}` : ''}`));
    }
    child.once('error', (err) => fail(`could not be spawned (${err.message})`));
    child.once('exit', (code) => fail(`exited with code ${code}`));
    child.stdout?.on('data', (chunk: Buffer) => {
      out += chunk.toString();
      if (out.includes('listening on')) {
        clearTimeout(timer);
        child.removeAllListeners('exit');
        resolve();
      }
    });
  });
  return { name: 'embedded (vhost-user serve)', socketPath, process: child, stop: stopper(child) };
}

/** qemu-storage-daemon exporting a raw file, spawned as test/helpers/qsd.ts does. */
export async function spawnQsd(image: string, socketPath: string): Promise<ChildBackend> {
  const binary = process.env.QEMU_STORAGE_DAEMON ?? 'qemu-storage-daemon';
  const child = spawn(
    binary,
    [
      '--blockdev',
      `driver=file,node-name=disk,filename=${image}`,
      '--export',
      `type=vhost-user-blk,id=export0,node-name=disk,addr.type=unix,addr.path=${socketPath},writable=on`,
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  const stderr = collect(child);
  let spawnError: Error | undefined;
  child.once('error', (err) => (spawnError = err));
  const deadline = Date.now() + START_TIMEOUT_MS;
  while (!existsSync(socketPath)) {
    if (spawnError) throw new Error(`cannot start ${binary}: ${spawnError.message}`);
    if (child.exitCode !== null || Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`${binary} did not create its socket${stderr() ? `: ${stderr()}` : ''}`);
    }
    await sleep(20);
  }
  return { name: 'qemu-storage-daemon', socketPath, process: child, stop: stopper(child) };
}
