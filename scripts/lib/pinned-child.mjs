// Runs `taskset ARGS...` (a child pinned to a CPU) and resolves its stdout; stderr passes
// through. Rejects if it exits non-zero.
import { spawn } from 'node:child_process';

export function runPinnedChild(args) {
  return new Promise((resolveRun, reject) => {
    const child = spawn('taskset', args, { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.on('error', reject);
    child.on('close', (code) =>
      code === 0 ? resolveRun(out) : reject(new Error(`child exited ${code}`)),
    );
  });
}
