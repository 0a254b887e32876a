#!/usr/bin/env node
/**
 * The `vhost-user` command: one subcommand per file in this directory, each exporting its
 * `spec` (options and help) and `run`.
 */
import { helpText, parseCommand, type CommandSpec, type ParsedArgs } from './args.js';
import { EXIT_USAGE, reportError, UsageError } from './errors.js';

interface Command {
  spec: CommandSpec;
  run: (args: ParsedArgs) => Promise<number>;
}

// Loaded on demand so `serve` does not pay for the frontend and the other way round.
const COMMANDS: Record<string, () => Promise<Command>> = {
  info: () => import('./info.js'),
  io: () => import('./io.js'),
  verify: () => import('./verify.js'),
  cp: () => import('./cp.js'),
  serve: () => import('./serve.js'),
  demo: () => import('./demo.js'),
  bench: () => import('./bench.js'),
};

const SUMMARIES: Record<string, string> = {
  info: 'show features, config space and geometry of a vhost-user-blk device',
  io: 'one read/write/flush/discard/write-zeroes/get-id, qemu-io style',
  verify: 'write-read-compare iterations with random data (sync or --async)',
  cp: 'import a disk image into a device, or export a device into a file',
  serve: 'run the embedded vhost-user-blk backend on a file or in memory',
  demo: 'start a backend in a child process, verify it and run a short load',
  bench: 'fio-style benchmark: IOPS, bandwidth, latency percentiles, CPU per I/O',
};

function usage(): string {
  const lines = ['usage: vhost-user <command> [options]', '', 'commands:'];
  for (const [name, summary] of Object.entries(SUMMARIES)) {
    lines.push(`  ${name.padEnd(8)}${summary}`);
  }
  lines.push(
    '',
    "Run 'vhost-user <command> --help' for a command's options.",
    'Set DEBUG=vhost-user (or pass --trace) to log every vhost-user message.',
  );
  return `${lines.join('\n')}\n`;
}

async function main(argv: string[]): Promise<number> {
  const debug = argv.includes('--debug');
  try {
    const [name, ...rest] = argv;
    if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
      if (name === undefined) {
        process.stderr.write(usage());
        return EXIT_USAGE;
      }
      process.stdout.write(usage());
      return 0;
    }
    const load = COMMANDS[name];
    if (!load) throw new UsageError(`unknown command '${name}' (see 'vhost-user --help')`);
    const command = await load();
    const args = parseCommand(command.spec, rest);
    if (args.values.help === true) {
      process.stdout.write(helpText(command.spec));
      return 0;
    }
    return await command.run(args);
  } catch (err) {
    return reportError(err, debug);
  }
}

// `vhost-user io ... | head` closes our stdout early: that is the reader's choice, not an error.
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code === 'EPIPE') process.exit(process.exitCode ?? 0);
  throw err;
});

process.exitCode = await main(process.argv.slice(2));
