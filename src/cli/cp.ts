import {
  createReadStream as fileReadStream,
  createWriteStream as fileWriteStream,
  fstatSync,
} from 'node:fs';
import { open, stat } from 'node:fs/promises';
import { pipeline } from 'node:stream/promises';
import { OutOfRangeError, type BlockDevice } from '../index.js';
import { createReadStream, createWriteStream } from '../api/streams.js';
import {
  expectPositionals,
  flag,
  stringOption,
  type CommandSpec,
  type ParsedArgs,
} from './args.js';
import { withDevice } from './device.js';
import { EXIT_INTERRUPTED, ReportedFailure, UsageError } from './errors.js';
import { toJson } from './output.js';
import { ProgressLine, transferLine } from './progress.js';
import { formatSize, parseCount, parseSize } from './size.js';

export const spec: CommandSpec = {
  name: 'cp',
  usage: '<file> <socket>[@offset] | <socket>[@offset] <file> [options]',
  summary:
    'Import a disk image into the device, or export the device (from offset, --length bytes, ' +
    'default to the end) into a file, with pipelined I/O.',
  details: `The argument that is a Unix socket (or carries @offset) is the device.
--verify reads the device range back and compares it with the file.
An export to /dev/stdout leaves stdout to the data: the summary goes to stderr.
Ctrl-C (SIGINT) stops the copy once the requests in flight finish and says how many bytes were
copied, with exit code 130; a second one kills.`,
  options: {
    length: { type: 'string', short: 'l', arg: 'BYTES', help: 'bytes to copy (default: all)' },
    verify: { type: 'boolean', help: 'read back and compare after copying' },
    'chunk-size': { type: 'string', arg: 'BYTES', help: 'bytes per request (default 1M)' },
    depth: { type: 'string', arg: 'N', help: 'requests in flight (default 8)' },
  },
  json: true,
  device: true,
};

interface Endpoint {
  path: string;
  offset: number;
}

async function isSocket(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isSocket();
  } catch {
    return false;
  }
}

/** Whether `path` is our stdout: /dev/stdout, /proc/self/fd/1, or the file it is redirected to. */
async function isStdout(path: string): Promise<boolean> {
  try {
    const [file, out] = [await stat(path), fstatSync(1)];
    return file.dev === out.dev && file.ino === out.ino;
  } catch {
    return false;
  }
}

/** `path@offset` split at its last '@', the offset still text: a file's name may hold an '@'. */
function splitAt(arg: string): { path: string; offset: string } | undefined {
  const at = arg.lastIndexOf('@');
  if (at <= 0) return undefined;
  return { path: arg.slice(0, at), offset: arg.slice(at + 1) };
}

function splitOffset(arg: string): Endpoint | undefined {
  const split = splitAt(arg);
  if (!split) return undefined;
  return { path: split.path, offset: parseSize(split.offset, `offset in '${arg}'`) };
}

/**
 * Which argument is the device: a socket with @offset wins (the other may be a socket too:
 * /dev/stdout under a parent that gave us a socket pair), then an existing socket, then the one
 * with @offset.
 */
async function classify(
  a: string,
  b: string,
): Promise<{ device: Endpoint; file: string; importing: boolean }> {
  const sides = [
    [b, a, true],
    [a, b, false],
  ] as const;
  for (const [arg, other, importing] of sides) {
    const split = splitAt(arg);
    if (split && (await isSocket(split.path))) {
      return { device: splitOffset(arg)!, file: other, importing };
    }
  }
  for (const [arg, other, importing] of sides) {
    if (await isSocket(arg)) return { device: { path: arg, offset: 0 }, file: other, importing };
  }
  const aSplit = a.includes('@');
  const bSplit = b.includes('@');
  // Neither exists as a socket: let the connect fail with a clear ConnectError on the likely one.
  if (bSplit !== aSplit) {
    return bSplit
      ? { device: splitOffset(b) ?? { path: b, offset: 0 }, file: a, importing: true }
      : { device: splitOffset(a) ?? { path: a, offset: 0 }, file: b, importing: false };
  }
  throw new UsageError(
    `cp: cannot tell which of '${a}' and '${b}' is the vhost-user socket (none is a socket; add @0 to it)`,
  );
}

/**
 * The chunks of `source` until `signal` fires: the copy then ends as if the source had, so the
 * writes in flight finish (and an import's flush runs) before the pipeline resolves.
 */
async function* untilAborted(
  source: AsyncIterable<Buffer> | Iterable<Buffer>,
  signal: AbortSignal,
): AsyncIterable<Buffer> {
  for await (const data of source) {
    if (signal.aborted) return;
    yield data;
  }
}

/** Compares device bytes [offset, offset + length) with file bytes [0, length). */
async function compareWithFile(
  dev: BlockDevice,
  file: string,
  offset: number,
  length: number,
  chunk: number,
  depth: number,
  progress: ProgressLine,
  signal: AbortSignal,
): Promise<number | undefined> {
  if (length === 0) return undefined;
  const handle = await open(file, 'r');
  const started = Date.now();
  try {
    let done = 0;
    let fileChunk = Buffer.allocUnsafe(chunk);
    const stream = createReadStream(dev, {
      start: offset,
      end: offset + length - 1,
      highWaterMark: chunk,
      depth,
    });
    for await (const data of stream as AsyncIterable<Buffer>) {
      if (signal.aborted) break;
      // The iterator hands over everything buffered at once, which can exceed one chunk.
      if (data.length > fileChunk.length) fileChunk = Buffer.allocUnsafe(data.length);
      const { bytesRead } = await handle.read(fileChunk, 0, data.length, done);
      const expected = fileChunk.subarray(0, bytesRead);
      if (bytesRead !== data.length || !expected.equals(data)) {
        let i = 0;
        while (i < bytesRead && expected[i] === data[i]) i++;
        stream.destroy();
        return done + i;
      }
      done += data.length;
      progress.update(() => `verify ${transferLine(done, length, started)}`);
    }
    return undefined;
  } finally {
    await handle.close();
  }
}

export async function run({ values, positionals }: ParsedArgs): Promise<number> {
  expectPositionals(spec, positionals, 2);
  const { device, file, importing } = await classify(positionals[0]!, positionals[1]!);
  const lengthText = stringOption(values, 'length');
  // The device streams' bounds (a request per chunk, of 1 GiB at most; 1024 in flight), checked
  // before connecting and before an export truncates its destination.
  const chunk = parseCount(stringOption(values, 'chunk-size') ?? '1M', '--chunk-size', 1, 1 << 30);
  const depth = parseCount(stringOption(values, 'depth') ?? '8', '--depth', 1, 1024);
  // An export to stdout keeps stdout for the data: the summary goes to stderr.
  const toStdout = !importing && (await isStdout(file));
  const report = toStdout ? process.stderr : process.stdout;
  if (!importing && flag(values, 'verify')) {
    // A pipe or /dev/null reads back nothing: verify would blame the device.
    const target = await stat(file).catch(() => undefined);
    if (toStdout || (target !== undefined && !target.isFile())) {
      throw new UsageError(`cp: --verify cannot read ${file} back (stdout, or not a regular file)`);
    }
  }
  const progress = new ProgressLine();
  // Ctrl-C stops the copy as it stops bench: what was copied is said; a second one kills.
  const interrupt = new AbortController();
  const onSigint = (): void => interrupt.abort();
  const summary = await withDevice(device.path, values, async (dev) => {
    let length: number;
    if (importing) {
      const source = await stat(file);
      // A pipe's or a device's size reads as 0: the copy would "succeed" with nothing copied.
      if (!source.isFile()) {
        throw new UsageError(`cp: ${file} is not a regular file (its size is unknown)`);
      }
      const fileSize = source.size;
      length = lengthText === undefined ? fileSize : parseSize(lengthText, '--length');
      if (length > fileSize) throw new UsageError(`cp: ${file} has only ${fileSize} bytes`);
    } else {
      if (device.offset > dev.size) {
        throw new OutOfRangeError(
          `cp: offset ${device.offset} is past the end of the device (${dev.size} bytes)`,
        );
      }
      length =
        lengthText === undefined ? dev.size - device.offset : parseSize(lengthText, '--length');
    }
    if (device.offset + length > dev.size) {
      throw new OutOfRangeError(
        `cp: ${length} bytes at offset ${device.offset} do not fit the device (${dev.size} bytes)`,
      );
    }
    const started = Date.now();
    let counter: () => number;
    process.once('SIGINT', onSigint);
    if (importing) {
      const sink = createWriteStream(dev, { start: device.offset, highWaterMark: chunk, depth });
      counter = () => sink.bytesWritten;
      const timer = setInterval(
        () => progress.update(() => `import ${transferLine(counter(), length, started)}`),
        100,
      );
      try {
        const source =
          length > 0
            ? fileReadStream(file, { start: 0, end: length - 1, highWaterMark: chunk })
            : [];
        await pipeline(untilAborted(source, interrupt.signal), sink);
      } finally {
        clearInterval(timer);
      }
    } else {
      // The device stream first: one it refuses leaves the destination file as it was.
      const source =
        length > 0
          ? createReadStream(dev, {
              start: device.offset,
              end: device.offset + length - 1,
              highWaterMark: chunk,
              depth,
            })
          : [];
      let copied = 0;
      counter = () => copied;
      const counted = async function* (): AsyncIterable<Buffer> {
        for await (const data of untilAborted(source as AsyncIterable<Buffer>, interrupt.signal)) {
          copied += data.length;
          yield data;
        }
      };
      const timer = setInterval(
        () => progress.update(() => `export ${transferLine(counter(), length, started)}`),
        100,
      );
      try {
        // Stdout is written through fd 1, not reopened: a socket cannot be opened by path, and
        // reopening would truncate a file that `>>` appends to.
        if (toStdout) await pipeline(counted(), process.stdout, { end: false });
        else await pipeline(counted(), fileWriteStream(file));
      } finally {
        clearInterval(timer);
      }
    }
    const elapsedMs = Math.max(1, Date.now() - started);
    const copied = counter();
    progress.done();
    let mismatch: number | undefined;
    if (flag(values, 'verify') && !interrupt.signal.aborted) {
      mismatch = await compareWithFile(
        dev,
        file,
        device.offset,
        length,
        chunk,
        depth,
        progress,
        interrupt.signal,
      );
      progress.done();
    }
    // Set before close: a Ctrl-C that comes while the device closes ends nothing.
    const stopped = interrupt.signal.aborted;
    return { length, copied, elapsedMs, mismatch, stopped };
  }).finally(() => process.off('SIGINT', onSigint));
  const arrow = importing
    ? `${file} -> ${device.path}@${device.offset}`
    : `${device.path}@${device.offset} -> ${file}`;
  if (summary.stopped) {
    process.stderr.write(
      summary.copied < summary.length
        ? `vhost-user: cp: interrupted: the first ${summary.copied} bytes of ${summary.length} ` +
            `were copied (${arrow})\n`
        : `vhost-user: cp: interrupted: all ${summary.length} bytes were copied` +
            `${flag(values, 'verify') ? ', not verified' : ''} (${arrow})\n`,
    );
    return EXIT_INTERRUPTED;
  }
  const result = {
    direction: importing ? 'import' : 'export',
    file,
    socket: device.path,
    offset: device.offset,
    bytes: summary.length,
    elapsedMs: summary.elapsedMs,
    bytesPerSecond: Math.round((summary.length / summary.elapsedMs) * 1000),
    verified: flag(values, 'verify') ? summary.mismatch === undefined : null,
    mismatchAt: summary.mismatch ?? null,
  };
  if (flag(values, 'json')) {
    report.write(`${toJson(result)}\n`);
  } else {
    report.write(
      `cp: ${arrow}: ${summary.length} bytes (${formatSize(summary.length)}) in ` +
        `${(summary.elapsedMs / 1000).toFixed(3)} s, ${formatSize(result.bytesPerSecond)}/s` +
        `${result.verified === true ? ', verified' : ''}\n`,
    );
    if (summary.mismatch !== undefined) {
      report.write(
        `cp: verify FAILED: device and file differ at byte ${summary.mismatch} of the copy ` +
          `(device offset ${device.offset + summary.mismatch})\n`,
      );
    }
  }
  if (summary.mismatch !== undefined) throw new ReportedFailure();
  return 0;
}
