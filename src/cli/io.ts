import { readFile, writeFile } from 'node:fs/promises';
import type { BlockDevice } from '../index.js';
import {
  expectPositionals,
  flag,
  stringOption,
  type CommandSpec,
  type OptionValues,
  type ParsedArgs,
} from './args.js';
import { withDevice } from './device.js';
import { UsageError } from './errors.js';
import { hexdump } from './hexdump.js';
import { printJson } from './output.js';
import { parseSize } from './size.js';

export const spec: CommandSpec = {
  name: 'io',
  usage: '<socket> <operation> [arguments] [options]',
  summary: 'One I/O operation on the device, qemu-io style.',
  details: `operations:
  read <offset> <length>          hexdump (or --raw / -o FILE)
  write <offset> <length>         write a byte pattern (--pattern, default 0xcd)
  write <offset> --file PATH      write a file's bytes (optionally only <length> of them)
  discard <offset> <length>       discard the whole blocks inside the range
  write-zeroes <offset> <length>  zero the range
  flush                           flush the device's write cache
  get-id                          print the device serial

Offsets and lengths accept suffixes: 512, 4k, 1M, 1G, 0x1000.`,
  options: {
    pattern: { type: 'string', short: 'P', arg: 'BYTE', help: 'write: fill byte (default 0xcd)' },
    file: { type: 'string', short: 'f', arg: 'PATH', help: 'write: take the data from a file' },
    raw: { type: 'boolean', help: 'read: write the bytes to stdout instead of a hexdump' },
    output: { type: 'string', short: 'o', arg: 'FILE', help: 'read: write the bytes to FILE' },
    verbose: { type: 'boolean', short: 'v', help: 'read: show repeated hexdump lines too' },
  },
  json: true,
  device: true,
};

interface Result {
  op: string;
  [key: string]: unknown;
}

function ms(started: bigint): number {
  return Number(process.hrtime.bigint() - started) / 1e6;
}

function parsePattern(text: string | undefined): number {
  if (text === undefined) return 0xcd;
  // Number() alone takes '' (and blanks) for 0, and 1e2 or 0b11 for bytes the help never offers.
  const value = /^\s*(?:0x[0-9a-f]+|\d+)\s*$/i.test(text) ? Number(text) : NaN;
  if (!Number.isInteger(value) || value < 0 || value > 255) {
    throw new UsageError(`--pattern: not a byte value: '${text}' (0..255 or 0x00..0xff)`);
  }
  return value;
}

async function read(dev: BlockDevice, args: string[], values: OptionValues): Promise<Result> {
  const offset = parseSize(args[0], 'read: offset');
  const length = parseSize(args[1], 'read: length');
  const started = process.hrtime.bigint();
  const data = await dev.read(offset, length);
  const elapsedMs = ms(started);
  const output = stringOption(values, 'output');
  if (output !== undefined) await writeFile(output, data);
  if (flag(values, 'raw')) {
    process.stdout.write(data);
    return { op: 'read', offset, length, elapsedMs, quiet: true };
  }
  const result: Result = { op: 'read', offset, length, elapsedMs };
  if (output !== undefined) result.file = output;
  else if (flag(values, 'json')) result.hex = data.toString('hex');
  else process.stdout.write(hexdump(data, offset, flag(values, 'verbose')));
  return result;
}

async function write(dev: BlockDevice, args: string[], values: OptionValues): Promise<Result> {
  const offset = parseSize(args[0], 'write: offset');
  const file = stringOption(values, 'file');
  let data: Buffer;
  if (file !== undefined) {
    if (stringOption(values, 'pattern') !== undefined) {
      throw new UsageError('write: --file and --pattern cannot be combined');
    }
    data = await readFile(file);
    if (args[1] !== undefined) {
      const length = parseSize(args[1], 'write: length');
      if (length > data.length) {
        throw new UsageError(`write: ${file} has only ${data.length} bytes, ${length} asked`);
      }
      data = data.subarray(0, length);
    }
  } else {
    data = Buffer.alloc(
      parseSize(args[1], 'write: length'),
      parsePattern(stringOption(values, 'pattern')),
    );
  }
  const started = process.hrtime.bigint();
  const written = await dev.write(data, offset);
  await dev.flush();
  return { op: 'write', offset, length: written, elapsedMs: ms(started) };
}

async function rangeOp(
  op: 'discard' | 'write-zeroes',
  dev: BlockDevice,
  args: string[],
): Promise<Result> {
  const offset = parseSize(args[0], `${op}: offset`);
  const length = parseSize(args[1], `${op}: length`);
  const started = process.hrtime.bigint();
  const done =
    op === 'discard' ? await dev.discard(offset, length) : await dev.writeZeroes(offset, length);
  await dev.flush();
  return { op, offset, length, bytes: done, elapsedMs: ms(started) };
}

const ARITY: Record<string, [number, number]> = {
  read: [2, 2],
  write: [1, 2],
  discard: [2, 2],
  'write-zeroes': [2, 2],
  flush: [0, 0],
  'get-id': [0, 0],
};

function describe(result: Result): string {
  const time = `(${(result.elapsedMs as number).toFixed(3)} ms)`;
  switch (result.op) {
    case 'read':
      return `read ${result.length} bytes at offset ${result.offset}${result.file ? ` to ${result.file}` : ''} ${time}`;
    case 'write':
      return `wrote ${result.length} bytes at offset ${result.offset} ${time}`;
    case 'discard':
      return `discarded ${result.bytes} of ${result.length} bytes at offset ${result.offset} (whole blocks only) ${time}`;
    case 'write-zeroes':
      return `zeroed ${result.bytes} bytes at offset ${result.offset} ${time}`;
    case 'flush':
      return `flushed ${time}`;
    default:
      return String(result.id);
  }
}

export async function run({ values, positionals }: ParsedArgs): Promise<number> {
  expectPositionals(spec, positionals, 2, 4);
  const [socket, op, ...args] = positionals as [string, string, ...string[]];
  const arity = ARITY[op];
  if (!arity) {
    throw new UsageError(`io: unknown operation '${op}' (one of ${Object.keys(ARITY).join(', ')})`);
  }
  if (args.length < arity[0] || args.length > arity[1]) {
    throw new UsageError(`io ${op}: wrong number of arguments (see 'vhost-user io --help')`);
  }
  if (flag(values, 'raw') && flag(values, 'json')) {
    throw new UsageError('io: --raw and --json cannot be combined');
  }
  // Parse sizes before connecting, so usage errors never depend on the backend.
  for (const arg of args) parseSize(arg, `${op}: argument`);
  const result = await withDevice(socket, values, async (dev): Promise<Result> => {
    switch (op) {
      case 'read':
        return read(dev, args, values);
      case 'write':
        return write(dev, args, values);
      case 'discard':
      case 'write-zeroes':
        return rangeOp(op, dev, args);
      case 'flush': {
        const started = process.hrtime.bigint();
        await dev.flush();
        return { op, elapsedMs: ms(started) };
      }
      default: {
        const started = process.hrtime.bigint();
        const id = await dev.getId();
        return { op, id, elapsedMs: ms(started) };
      }
    }
  });
  if (result.quiet) return 0;
  if (flag(values, 'json')) printJson(result);
  else if (result.op === 'read' && result.file === undefined) return 0;
  else process.stdout.write(`${describe(result)}\n`);
  return 0;
}
