/** Exit codes: 0 success, 1 runtime failure (device, backend, data mismatch), 2 bad usage. */
export const EXIT_RUNTIME = 1;
export const EXIT_USAGE = 2;
/** A run ended early by SIGINT that still reported (bench): 128 + 2, as a shell shows a kill by it. */
export const EXIT_INTERRUPTED = 130;

/** Bad command line: reported in one line with exit code 2. */
export class UsageError extends Error {
  readonly code = 'VHOST_USER_ERR_USAGE';
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

/** A failure already explained to the user (e.g. a verify mismatch): exit 1, nothing more. */
export class ReportedFailure extends Error {
  constructor(message = 'failed') {
    super(message);
    this.name = 'ReportedFailure';
  }
}

function codeOf(err: unknown): string | undefined {
  if (typeof err === 'object' && err !== null && 'code' in err) {
    const code = (err as { code: unknown }).code;
    if (typeof code === 'string') return code;
  }
  return undefined;
}

/**
 * Prints `vhost-user: <message> [<code>]` (the stack only with --debug) and returns the exit
 * code. Library errors carry VHOST_USER_ERR_* codes; Node's system errors carry ENOENT and the like.
 */
export function reportError(err: unknown, debug: boolean): number {
  if (err instanceof ReportedFailure) return EXIT_RUNTIME;
  const message = err instanceof Error ? err.message : String(err);
  const code = codeOf(err);
  const oneLine = message.replace(/\s*\n\s*/g, ' ');
  process.stderr.write(`vhost-user: ${oneLine}${code ? ` [${code}]` : ''}\n`);
  if (debug && err instanceof Error && err.stack) process.stderr.write(`${err.stack}\n`);
  return err instanceof UsageError ? EXIT_USAGE : EXIT_RUNTIME;
}
