/** Runs a short ES module in a child Node process, for tests of what keeps a process alive. */
import { spawn } from 'node:child_process';

/** The library's entry, for a script's `await import(...)`. */
export const LIBRARY_ENTRY = new URL('../../src/index.js', import.meta.url).href;

/** Runs an ES module `script` in a child Node, killed after `ms`: how it ended, and its stdout. */
export function runScript(
  script: string,
  ms: number,
): Promise<{ code: number | null; signal: NodeJS.Signals | null; out: string }> {
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let out = '';
  child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), ms);
    child.on('error', reject);
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, out });
    });
  });
}

/** runScript for a script whose last act is printing one JSON line: how it ended, and that line. */
export async function runScriptJson(
  script: string,
  ms: number,
): Promise<{ code: number | null; signal: NodeJS.Signals | null; result: unknown }> {
  const { code, signal, out } = await runScript(script, ms);
  try {
    return { code, signal, result: JSON.parse(out.trim() || 'null') as unknown };
  } catch {
    // Not JSON (a crash's output): the whole of it, with how the script ended, for the assertion.
    return { code, signal, result: { notJson: out } };
  }
}
