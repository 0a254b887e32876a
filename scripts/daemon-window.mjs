#!/usr/bin/env node
// How the daemon's depth-1 service time depends on the frontend's turnaround (the time from
// seeing a completion to putting the next request on the ring). refbench (a tight C frontend,
// ../shared/tools/refbench.c or $REFBENCH_SRC) is compiled with a busy delay of DELAY_NS
// (environment) inserted before each resubmission, and run at depth 1 in poll mode against
// qemu-storage-daemon for a series of delays. Its latency is measured from the submission, so
// the delay itself is not in it: what moves is the daemon's answer. Prints a Markdown table.
// With --kick-only the request goes on the ring at once and only its kick (the eventfd write)
// waits DELAY_NS, which tells the two apart; the wait is then inside the measured latency.
//
//   node scripts/daemon-window.mjs [--backend null|file] [--seconds 2] [--qsd-cpu 0] [--fe-cpu 1]
//     [--delays 0,500,1000,1500,2000,4000,8000] [--kick-only]
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import process from 'node:process';
import { parseArgs } from 'node:util';
import { startQsd } from './lib/qsd.mjs';
import { REFBENCH_SRC } from './lib/refbench.mjs';

/** refbench's resubmission in its measuring loop; the delay goes right before it. */
const ANCHOR = '        submit(done, n, t, 1);\n    }';
const BUSY_DELAY = `        {
            static long long delay = -1;
            if (delay < 0) delay = getenv("DELAY_NS") ? atoll(getenv("DELAY_NS")) : 0;
            if (delay > 0) {
                uint64_t until = now_ns() + (uint64_t)delay;
                while (now_ns() < until) cpu_relax();
            }
        }
`;
const DELAYED = `${BUSY_DELAY}        submit(done, n, now_ns(), 1);
    }`;
/**
 * refbench's kick (--kick-only delays it), after its check of VRING_USED_F_NO_NOTIFY, which is
 * then as old as the delay (qemu-storage-daemon never sets the flag).
 */
const KICK_ANCHOR = '    uint64_t one = 1;\n    if (write(kick_fd,';
const KICK_DELAYED = `${BUSY_DELAY}    uint64_t one = 1;\n    if (write(kick_fd,`;

const print = (line = '') => process.stdout.write(`${line}\n`);

const { values: o } = parseArgs({
  options: {
    backend: { type: 'string', default: 'null' },
    seconds: { type: 'string', default: '2' },
    'qsd-cpu': { type: 'string', default: '0' },
    'fe-cpu': { type: 'string', default: '1' },
    delays: { type: 'string', default: '0,500,1000,1500,2000,4000,8000' },
    'kick-only': { type: 'boolean', default: false },
  },
});
const delays = o.delays.split(',').map((d) => (d.trim() === '' ? NaN : Number(d)));
if (delays.some((d) => !Number.isInteger(d) || d < 0)) throw new Error('--delays: integers >= 0');
if (!(Number(o.seconds) > 0)) throw new Error('--seconds: a number > 0');
for (const key of ['qsd-cpu', 'fe-cpu']) {
  if (!/^\d+$/.test(o[key])) throw new Error(`--${key}: a CPU number`);
}

const dir = mkdtempSync(join(tmpdir(), 'vhost-user-daemon-window-'));
let qsd;
let cleaned;
const cleanup = () => {
  cleaned ??= (async () => {
    await qsd?.stop().catch(() => {});
    rmSync(dir, { recursive: true, force: true });
  })();
  return cleaned;
};
for (const [signal, code] of [
  ['SIGINT', 130],
  ['SIGTERM', 143],
]) {
  process.once(signal, () => {
    cleanup().finally(() => process.exit(code));
  });
}
try {
  const source = readFileSync(REFBENCH_SRC, 'utf8');
  const [anchor, delayed, what] = o['kick-only']
    ? [KICK_ANCHOR, KICK_DELAYED, 'kick']
    : [ANCHOR, DELAYED, 'resubmission'];
  if (source.split(anchor).length !== 2) {
    throw new Error(`${REFBENCH_SRC}: the ${what} this script delays was not found once`);
  }
  writeFileSync(join(dir, 'refbench.c'), source.replace(anchor, delayed));
  const bin = join(dir, 'refbench');
  execFileSync('gcc', ['-O2', '-o', bin, join(dir, 'refbench.c')], { stdio: 'inherit' });
  qsd = await startQsd(o.backend, dir, Number(o['qsd-cpu']));
  const rows = [];
  // Each delay twice, the second pass in reverse, so drift shows as a difference between them.
  for (const delay of [...delays, ...[...delays].reverse()]) {
    const args = [bin, qsd.sock, '--qd', '1', '--seconds', o.seconds, '--mode', 'poll'];
    const out = execFileSync('taskset', ['-c', o['fe-cpu'], ...args, '--no-verify', '--quiet'], {
      env: { ...process.env, DELAY_NS: String(delay) },
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const r = JSON.parse(out.trim().split('\n').pop());
    rows.push({ delay, iops: r.iops, p50: r.lat_us.p50, p99: r.lat_us.p99 });
  }
  print(`- backend: \`${qsd.shownCmd}\`; refbench on CPU ${o['fe-cpu']}`);
  print(`- command: \`node scripts/daemon-window.mjs ${process.argv.slice(2).join(' ')}\``);
  print();
  const column = o['kick-only']
    ? 'delay before the kick (request already on the ring)'
    : 'delay before resubmitting';
  print(`| ${column}, ns | IOPS | p50 µs | p99 µs | p50 µs, second pass |`);
  print('|---:|---:|---:|---:|---:|');
  for (let i = 0; i < delays.length; i++) {
    const a = rows[i];
    const b = rows[rows.length - 1 - i];
    print(`| ${a.delay} | ${Math.round(a.iops)} | ${a.p50} | ${a.p99} | ${b.p50} |`);
  }
} finally {
  await cleanup();
}
