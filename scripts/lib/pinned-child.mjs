// Runs `taskset ARGS...` (a child pinned to a CPU) and resolves its stdout; stderr passes
// through. Rejects if it exits non-zero.
import { spawn } from 'node:child_process';
import process from 'node:process';

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

/**
 * Runs `script --child SOCKET ...argv` in node pinned to `cpu` (the scripts' child mode, on a
 * running daemon's socket); `nodeFlags` go to node. Resolves its stdout.
 */
export function runScriptChild(cpu, script, socket, argv, nodeFlags = []) {
  return runPinnedChild([
    '-c',
    String(cpu),
    process.execPath,
    ...nodeFlags,
    script,
    '--child',
    socket,
    ...argv,
  ]);
}
