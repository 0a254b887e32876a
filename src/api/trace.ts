import type { TraceDirection } from '../protocol/frontend.js';

/** DEBUG=vhost-user (or a list containing it, or '*') turns protocol tracing on, as with `debug`. */
export function traceFromEnv(): boolean {
  const debug = process.env.DEBUG ?? '';
  return debug
    .split(/[\s,]+/)
    .some((name) => name === 'vhost-user' || name === 'vhost-user:*' || name === '*');
}

export function describeTrace(
  log: boolean | ((line: string) => void),
): ((direction: TraceDirection, summary: string) => void) | undefined {
  if (log === false) return undefined;
  const write = log === true ? (line: string) => process.stderr.write(`${line}\n`) : log;
  return (direction, summary) =>
    write(`vhost-user ${direction === 'send' ? '->' : '<-'} ${summary}`);
}
