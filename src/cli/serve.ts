import { createBlockServer, type BackendType, type BlockServerOptions } from '../backend/index.js';
import { traceFromEnv } from '../api/trace.js';
import {
  expectPositionals,
  flag,
  stringOption,
  type CommandSpec,
  type ParsedArgs,
} from './args.js';
import { UsageError } from './errors.js';
import { asUsageError } from './device.js';
import { parseCount, parseSize } from './size.js';

export const spec: CommandSpec = {
  name: 'serve',
  usage: '--file PATH | --size BYTES  --socket-path PATH | --fd N  [--type blk|scsi] [options]',
  summary:
    'Run the embedded vhost-user-blk (or vhost-user-scsi) backend until SIGTERM or SIGINT (then ' +
    'exit 0): a raw file or a RAM disk, exported on a Unix socket.',
  details: `Follows the vhost-user spec's backend program conventions: --socket-path, --fd (an
inherited listening socket) and --print-capabilities. Prints "listening on <socket>" on stdout
once clients can connect. On SIGUSR2, and at exit with --verbose, prints the backend's counters
as one line "stats <json>" on stderr (connections, requests, kicksReceived, callsSent, rejected).

--type scsi exports a virtio-scsi host with one disk LUN (--target, --lun; other targets answer
BAD_TARGET) that answers INQUIRY (with VPD pages), READ CAPACITY, READ/WRITE(6/10/16), UNMAP,
WRITE SAME, SYNCHRONIZE CACHE, MODE SENSE, REPORT LUNS and task management; --read-only sets
the write-protect bit of MODE SENSE. Example, for QEMU's vhost-user-scsi-pci:
  vhost-user serve --type scsi --file disk.img --socket-path /tmp/scsi.sock`,
  options: {
    type: { type: 'string', arg: 'blk|scsi', help: 'device to export (default blk)' },
    target: { type: 'string', arg: 'N', help: 'scsi: target id of the LUN (default 0)' },
    lun: { type: 'string', arg: 'N', help: 'scsi: LUN number (default 0)' },
    'max-sectors': {
      type: 'string',
      arg: 'N',
      help: 'scsi: max_sectors, 512-byte units per command (default 65535)',
    },
    file: { type: 'string', arg: 'PATH', help: 'backing raw file (the disk has its size)' },
    'blk-file': { type: 'string', arg: 'PATH', help: 'same as --file (vhost-user convention)' },
    size: { type: 'string', arg: 'BYTES', help: 'RAM disk of this size instead of a file' },
    'socket-path': { type: 'string', arg: 'PATH', help: 'listen on this Unix socket path' },
    socket: { type: 'string', arg: 'PATH', help: 'same as --socket-path' },
    fd: { type: 'string', arg: 'N', help: 'use this inherited listening socket fd' },
    'read-only': {
      type: 'boolean',
      help: 'export read-only (blk: VIRTIO_BLK_F_RO; scsi: MODE SENSE WP)',
    },
    'block-size': { type: 'string', arg: 'N', help: 'logical block size (default 512)' },
    queues: { type: 'string', arg: 'N', help: 'request queues (default 1)' },
    'queue-size': { type: 'string', arg: 'N', help: 'largest ring accepted (default 1024)' },
    'size-max': {
      type: 'string',
      arg: 'N',
      help: 'blk: size_max, bytes per segment (0 = no limit)',
    },
    'seg-max': { type: 'string', arg: 'N', help: 'seg_max: segments per request (default 126)' },
    polling: { type: 'boolean', help: 'ask the frontend for no kicks; poll the rings' },
    serial: {
      type: 'string',
      arg: 'S',
      help: 'GET_ID (blk) / VPD 0x80 (scsi) answer, at most 20 bytes',
    },
    'print-capabilities': {
      type: 'boolean',
      help: 'print the backend capabilities as JSON and exit',
    },
    trace: {
      type: 'boolean',
      help: 'log every vhost-user message on stderr (also DEBUG=vhost-user)',
    },
    verbose: {
      type: 'boolean',
      help: 'log connections and disconnections on stderr, and the final stats line',
    },
  },
};

/**
 * docs/interop/vhost-user.json: VHostUserBackendCapabilitiesBlock for blk; the scsi type
 * defines no features.
 */
const CAPABILITIES = {
  blk: { type: 'block', features: ['read-only', 'blk-file'] },
  scsi: { type: 'scsi' },
} as const;

function backendType(values: ParsedArgs['values']): BackendType {
  const type = stringOption(values, 'type') ?? 'blk';
  if (type !== 'blk' && type !== 'scsi') {
    throw new UsageError(`serve: --type must be blk or scsi, got ${type}`);
  }
  return type;
}

function optionalCount(value: string | undefined, name: string, min = 1): number | undefined {
  return value === undefined ? undefined : parseCount(value, name, min);
}

export function serverOptions(values: ParsedArgs['values']): BlockServerOptions {
  const fileOption = stringOption(values, 'file');
  const blkFile = stringOption(values, 'blk-file');
  if (fileOption !== undefined && blkFile !== undefined) {
    throw new UsageError('serve: --file and --blk-file are the same option; give one');
  }
  const file = fileOption ?? blkFile;
  const sizeText = stringOption(values, 'size');
  if ((file === undefined) === (sizeText === undefined)) {
    throw new UsageError(
      "serve: give exactly one of --file PATH and --size BYTES (see 'vhost-user serve --help')",
    );
  }
  const pathOption = stringOption(values, 'socket-path');
  const alias = stringOption(values, 'socket');
  if (pathOption !== undefined && alias !== undefined) {
    throw new UsageError('serve: --socket is an alias of --socket-path; give one');
  }
  const socketPath = pathOption ?? alias;
  const fdText = stringOption(values, 'fd');
  // The spec makes --fd and --socket-path incompatible.
  if ((socketPath === undefined) === (fdText === undefined)) {
    throw new UsageError('serve: give exactly one of --socket-path PATH and --fd N');
  }
  const type = backendType(values);
  const options: BlockServerOptions = {};
  if (type === 'scsi') options.type = type;
  if (socketPath !== undefined) options.socketPath = socketPath;
  if (fdText !== undefined) options.listenFd = parseCount(fdText, '--fd', 0);
  if (file !== undefined) options.file = file;
  if (sizeText !== undefined) options.size = parseSize(sizeText, '--size');
  if (flag(values, 'read-only')) options.readOnly = true;
  if (flag(values, 'polling')) options.polling = true;
  const numbers = {
    blockSize: optionalCount(stringOption(values, 'block-size'), '--block-size'),
    queues: optionalCount(stringOption(values, 'queues'), '--queues'),
    queueSize: optionalCount(stringOption(values, 'queue-size'), '--queue-size'),
    sizeMax: optionalCount(stringOption(values, 'size-max'), '--size-max', 0),
    segMax: optionalCount(stringOption(values, 'seg-max'), '--seg-max'),
    target: optionalCount(stringOption(values, 'target'), '--target', 0),
    lun: optionalCount(stringOption(values, 'lun'), '--lun', 0),
    maxSectors: optionalCount(stringOption(values, 'max-sectors'), '--max-sectors'),
  };
  if (type === 'blk') {
    for (const name of ['target', 'lun', 'max-sectors']) {
      if (stringOption(values, name) !== undefined) {
        throw new UsageError(`serve: --${name} needs --type scsi`);
      }
    }
  } else if (numbers.sizeMax !== undefined) {
    throw new UsageError('serve: --size-max is a blk option (scsi has --max-sectors)');
  }
  for (const [key, value] of Object.entries(numbers) as [
    keyof typeof numbers,
    number | undefined,
  ][]) {
    if (value !== undefined) options[key] = value;
  }
  const serial = stringOption(values, 'serial');
  if (serial !== undefined) options.serial = serial;
  if (flag(values, 'trace') || traceFromEnv()) {
    options.trace = (line: string) => process.stderr.write(`${line}\n`);
  }
  return options;
}

export async function run({ values, positionals }: ParsedArgs): Promise<number> {
  if (flag(values, 'print-capabilities')) {
    // The convention: print, exit successfully, ignore every other option (but the type).
    process.stdout.write(`${JSON.stringify(CAPABILITIES[backendType(values)])}\n`);
    return 0;
  }
  expectPositionals(spec, positionals, 0);
  const options = serverOptions(values);
  const verbose = flag(values, 'verbose');
  let server: ReturnType<typeof createBlockServer>;
  try {
    server = createBlockServer(options);
  } catch (err) {
    throw asUsageError(err); // values the backend refuses (a block size of 1000...)
  }
  let stop: (() => void) | undefined;
  const stopped = new Promise<void>((resolve) => (stop = resolve));
  // Internal errors (a failed accept) are logged; the backend keeps serving.
  server.on('error', (err: Error) => {
    process.stderr.write(`vhost-user serve: ${err.message}\n`);
  });
  server.on('protocol-error', (err: Error) => {
    process.stderr.write(`vhost-user serve: client dropped: ${err.message}\n`);
  });
  if (verbose) {
    server.on('connection', () => process.stderr.write('vhost-user serve: client connected\n'));
    server.on('disconnect', () => process.stderr.write('vhost-user serve: client disconnected\n'));
  }
  const printStats = (): void => {
    process.stderr.write(`stats ${JSON.stringify(server.stats)}\n`);
  };
  const onSignal = (): void => stop?.();
  process.once('SIGTERM', onSignal);
  process.once('SIGINT', onSignal);
  process.on('SIGUSR2', printStats);
  try {
    await server.listen();
    process.stdout.write(`listening on ${server.socketPath ?? `fd ${options.listenFd}`}\n`);
    await stopped;
  } finally {
    process.off('SIGTERM', onSignal);
    process.off('SIGINT', onSignal);
    process.off('SIGUSR2', printStats);
    await server.close();
  }
  if (verbose) printStats();
  // Whatever a client left behind must not keep a terminated backend alive.
  setTimeout(() => process.exit(0), 2000).unref();
  return 0;
}
