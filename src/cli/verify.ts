import { randomBytes } from 'node:crypto';
import type { BlockDevice } from '../index.js';
import {
  expectPositionals,
  flag,
  stringOption,
  type CommandSpec,
  type ParsedArgs,
} from './args.js';
import { withDevice } from './device.js';
import { ReportedFailure, UsageError } from './errors.js';
import { printJson } from './output.js';
import { parseCount, parseSize } from './size.js';

export const spec: CommandSpec = {
  name: 'verify',
  usage: '<socket> -i N -S STEP [--async] [--size BYTES] [options]',
  summary:
    'N write-read iterations with random data, iteration k at offset + k * STEP, each read back ' +
    'and compared. Exit code 0 when every byte matches, 1 on a mismatch (printed).',
  details: `--async submits every iteration at once (the device sees up to N requests in
flight); without it each write and read is a blocking call, one after another.`,
  options: {
    iterations: { type: 'string', short: 'i', arg: 'N', help: 'iterations (required)' },
    step: {
      type: 'string',
      short: 'S',
      arg: 'BYTES',
      help: 'distance between iterations (required)',
    },
    size: { type: 'string', short: 's', arg: 'BYTES', help: 'bytes per write (default STEP)' },
    offset: { type: 'string', arg: 'BYTES', help: 'position of the first iteration (default 0)' },
    async: { type: 'boolean', short: 'a', help: 'run all iterations concurrently (Promise API)' },
  },
  json: true,
  device: true,
};

export interface VerifyOptions {
  iterations: number;
  step: number;
  size: number;
  offset: number;
  async: boolean;
  /** Sees every buffer written, e.g. to check the backing file afterwards. */
  onWritten?: (position: number, data: Buffer) => void;
}

export interface Mismatch {
  iteration: number;
  position: number;
  wrote: number;
  read: number;
}

export interface VerifyResult {
  ok: boolean;
  iterations: number;
  bytes: number;
  elapsedMs: number;
  opsPerSecond: number;
  mismatches: Mismatch[];
}

function compare(
  iteration: number,
  position: number,
  wrote: Buffer,
  read: Buffer,
): Mismatch | undefined {
  if (wrote.equals(read)) return undefined;
  let i = 0;
  while (wrote[i] === read[i]) i++;
  return { iteration, position: position + i, wrote: wrote[i]!, read: read[i]! };
}

/** Throws (a runtime error, exit 1) when the last iteration would run past the device (or they would overlap under --async). */
export function checkVerifyRange(options: VerifyOptions, deviceSize: number): void {
  const last = options.offset + (options.iterations - 1) * options.step + options.size;
  if (last > deviceSize) {
    throw new Error(
      `verify: ${options.iterations} iterations of ${options.size} bytes every ${options.step} ` +
        `need ${last} bytes, the device has ${deviceSize}`,
    );
  }
  if (options.async && options.size > options.step && options.iterations > 1) {
    throw new UsageError(
      'verify: with --async, --size larger than --step would overlap writes in flight',
    );
  }
}

export async function runVerify(dev: BlockDevice, options: VerifyOptions): Promise<VerifyResult> {
  checkVerifyRange(options, dev.size);
  const mismatches: Mismatch[] = [];
  const one = async (k: number): Promise<void> => {
    const position = options.offset + k * options.step;
    const data = randomBytes(options.size);
    await dev.write(data, position);
    const back = await dev.read(position, options.size);
    options.onWritten?.(position, data);
    const bad = compare(k, position, data, back);
    if (bad) mismatches.push(bad);
  };
  const started = process.hrtime.bigint();
  if (options.async) {
    await Promise.all(Array.from({ length: options.iterations }, (_, k) => one(k)));
  } else {
    const back = Buffer.allocUnsafe(options.size);
    for (let k = 0; k < options.iterations; k++) {
      const position = options.offset + k * options.step;
      const data = randomBytes(options.size);
      dev.writeSync(data, position);
      dev.readSync(back, position);
      options.onWritten?.(position, data);
      const bad = compare(k, position, data, back);
      if (bad) mismatches.push(bad);
    }
  }
  const elapsedMs = Number(process.hrtime.bigint() - started) / 1e6;
  mismatches.sort((a, b) => a.iteration - b.iteration);
  return {
    ok: mismatches.length === 0,
    iterations: options.iterations,
    bytes: options.iterations * options.size,
    elapsedMs,
    opsPerSecond: (options.iterations * 2) / Math.max(elapsedMs / 1000, 1e-9),
    mismatches,
  };
}

export function verifySummary(result: VerifyResult, mode: string): string {
  return (
    `verify: ${result.iterations} iterations ${result.ok ? 'OK' : 'FAILED'} (${mode}): ` +
    `${result.bytes} bytes written and read back in ${(result.elapsedMs / 1000).toFixed(3)} s, ` +
    `${result.opsPerSecond.toFixed(0)} ops/s`
  );
}

export async function run({ values, positionals }: ParsedArgs): Promise<number> {
  expectPositionals(spec, positionals, 1);
  const iterations = stringOption(values, 'iterations');
  const step = stringOption(values, 'step');
  if (iterations === undefined || step === undefined) {
    throw new UsageError("verify: -i N and -S STEP are required (see 'vhost-user verify --help')");
  }
  const stepBytes = parseCount(step, '--step');
  const sizeText = stringOption(values, 'size');
  const options: VerifyOptions = {
    iterations: parseCount(iterations, '--iterations'),
    step: stepBytes,
    size: sizeText === undefined ? stepBytes : parseCount(sizeText, '--size'),
    offset: parseSize(stringOption(values, 'offset') ?? '0', '--offset'),
    async: flag(values, 'async'),
  };
  const mode = options.async ? 'async' : 'sync';
  const result = await withDevice(positionals[0]!, values, (dev) => runVerify(dev, options));
  if (flag(values, 'json')) {
    printJson({ ...result, mode, step: options.step, size: options.size, offset: options.offset });
  } else {
    for (const bad of result.mismatches.slice(0, 10)) {
      process.stdout.write(
        `verify: iteration ${bad.iteration}: mismatch at device offset ${bad.position}: ` +
          `wrote 0x${bad.wrote.toString(16).padStart(2, '0')}, read 0x${bad.read.toString(16).padStart(2, '0')}\n`,
      );
    }
    if (result.mismatches.length > 10) {
      process.stdout.write(
        `verify: ... ${result.mismatches.length - 10} more mismatching iterations\n`,
      );
    }
    process.stdout.write(`${verifySummary(result, mode)}\n`);
  }
  if (!result.ok) throw new ReportedFailure();
  return 0;
}
