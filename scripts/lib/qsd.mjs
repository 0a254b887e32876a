// qemu-storage-daemon for the benchmark scripts: a null-co or a sparse raw file in /dev/shm,
// exported as vhost-user-blk on a socket in `dir`, pinned to `cpu` with taskset.
import { Buffer } from 'node:buffer';
import { spawn } from 'node:child_process';
import { existsSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import process from 'node:process';
import { setTimeout as sleep } from 'node:timers/promises';

export const QSD = process.env.QEMU_STORAGE_DAEMON ?? 'qemu-storage-daemon';
const GiB = 1024 ** 3;

/** Starts the daemon; resolves { kind, sock, pid, cmd, stop } once its socket exists. */
export async function startQsd(kind, dir, cpu) {
  const sock = join(dir, `${kind}.sock`);
  let blockdev;
  let image;
  if (kind === 'null') {
    blockdev = `driver=null-co,node-name=n,size=${GiB}`;
  } else if (kind === 'file') {
    image = join('/dev/shm', `vhost-user-bench-${process.pid}.img`);
    writeFileSync(image, Buffer.alloc(0));
    truncateSync(image, GiB);
    blockdev = `driver=file,node-name=n,filename=${image},cache.direct=off`;
  } else {
    throw new Error(`unknown backend ${kind} (null or file)`);
  }
  const exp = `type=vhost-user-blk,id=e,node-name=n,addr.type=unix,addr.path=${sock},writable=on`;
  const child = spawn(
    'taskset',
    ['-c', String(cpu), QSD, '--blockdev', blockdev, '--export', exp],
    {
      stdio: ['ignore', 'ignore', 'pipe'],
    },
  );
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  const deadline = Date.now() + 10_000;
  while (!existsSync(sock)) {
    if (child.exitCode !== null || Date.now() > deadline) {
      child.kill('SIGKILL');
      if (image) rmSync(image, { force: true });
      throw new Error(`qemu-storage-daemon did not start: ${stderr}`);
    }
    await sleep(20);
  }
  await sleep(100);
  return {
    kind,
    sock,
    pid: child.pid,
    cmd: `taskset -c ${cpu} ${QSD} --blockdev ${blockdev} --export ${exp}`,
    stop: async () => {
      if (child.exitCode === null) {
        const exited = new Promise((r) => child.once('exit', r));
        child.kill('SIGTERM');
        await exited;
      }
      if (image) rmSync(image, { force: true });
    },
  };
}
