// qemu-storage-daemon for the benchmark scripts: a null-co, a sparse raw file in /dev/shm, or
// that file behind a throttle group (a slow device: `throttleIops` I/Os per second), exported as
// vhost-user-blk on a socket in `dir`, pinned to `cpu` with taskset.
import { Buffer } from 'node:buffer';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import process from 'node:process';
import { setTimeout as sleep } from 'node:timers/promises';

export const QSD = process.env.QEMU_STORAGE_DAEMON ?? 'qemu-storage-daemon';
const GiB = 1024 ** 3;

/** Starts the daemon; resolves { kind, sock, pid, cmd, shownCmd, stop } once its socket exists. */
export async function startQsd(kind, dir, cpu, { throttleIops = 4000 } = {}) {
  const sock = join(dir, `${kind}.sock`);
  const args = [];
  let image;
  const newImage = () => {
    image = join('/dev/shm', `vhost-user-bench-${process.pid}.img`);
    writeFileSync(image, Buffer.alloc(0));
    truncateSync(image, GiB);
    return image;
  };
  if (kind === 'null') {
    args.push('--blockdev', `driver=null-co,node-name=n,size=${GiB}`);
  } else if (kind === 'file') {
    args.push('--blockdev', `driver=file,node-name=n,filename=${newImage()},cache.direct=off`);
  } else if (kind === 'throttle') {
    args.push(
      '--object',
      `throttle-group,id=tg,x-iops-total=${throttleIops}`,
      '--blockdev',
      `driver=file,node-name=f,filename=${newImage()},cache.direct=off`,
      '--blockdev',
      'driver=throttle,node-name=n,throttle-group=tg,file=f',
    );
  } else {
    throw new Error(`unknown backend ${kind} (null, file or throttle)`);
  }
  const exp = `type=vhost-user-blk,id=e,node-name=n,addr.type=unix,addr.path=${sock},writable=on`;
  args.push('--export', exp);
  const child = spawn('taskset', ['-c', String(cpu), QSD, ...args], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
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
  const cmd = `taskset -c ${cpu} ${QSD} ${args.join(' ')}`;
  return {
    kind,
    sock,
    pid: child.pid,
    cmd,
    /** The command as a report shows it: no temporary paths. */
    shownCmd: cmd.replace(dir, '$TMP').replace(/\/dev\/shm\/[^,]*/, '/dev/shm/<tmp>.img'),
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

/** Starts the daemon in a new temp dir, resolves fn(qsd), then stops it and removes the dir. */
export async function withQsd(kind, cpu, options, fn) {
  const dir = mkdtempSync(join(tmpdir(), `vhost-user-${kind}-`));
  let qsd;
  try {
    qsd = await startQsd(kind, dir, cpu, options);
    return await fn(qsd);
  } finally {
    await qsd?.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}
