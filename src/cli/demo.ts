import {
  closeSync,
  mkdtempSync,
  openSync,
  readSync,
  rmSync,
  truncateSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { openBlockDevice, type BlockDevice } from '../index.js';
import {
  flag,
  expectPositionals,
  stringOption,
  type CommandSpec,
  type ParsedArgs,
} from './args.js';
import { spawnEmbedded, spawnQsd, type ChildBackend } from './backends.js';
import { ReportedFailure, UsageError } from './errors.js';
import { runLoad, type LoadResult } from './load.js';
import { printJson, wrapList } from './output.js';
import { formatSize, parseCount } from './size.js';
import { runVerify, verifySummary, type VerifyResult } from './verify.js';

export const spec: CommandSpec = {
  name: 'demo',
  usage: '[--backend embedded|qsd] [--seconds N] [options]',
  summary:
    'Start a backend in a child process on a temp file, verify unaligned random writes ' +
    '(async), run a random 4 KiB read/write load, check the file on disk, clean up.',
  details: `--backend embedded (default) runs this package's own backend ('vhost-user serve');
--backend qsd runs qemu-storage-daemon instead.`,
  options: {
    backend: { type: 'string', short: 'b', arg: 'NAME', help: "'embedded' (default) or 'qsd'" },
    seconds: {
      type: 'string',
      short: 't',
      arg: 'N',
      help: 'length of the random load (default 5)',
    },
    iterations: { type: 'string', short: 'i', arg: 'N', help: 'verify iterations (default 2000)' },
    step: { type: 'string', short: 'S', arg: 'BYTES', help: 'verify step (default 4097)' },
    depth: { type: 'string', arg: 'N', help: 'requests in flight during the load (default 32)' },
    'disk-size': { type: 'string', arg: 'BYTES', help: 'temp disk size (default 64M)' },
    trace: { type: 'boolean', help: 'log every vhost-user message on stderr' },
  },
  json: true,
};

const IO_SIZE = 4096;

/** Compares what verify wrote with the raw file, bypassing the device entirely. */
function checkFile(image: string, written: Map<number, Buffer>): number | undefined {
  const fd = openSync(image, 'r');
  try {
    for (const [position, data] of written) {
      const onDisk = Buffer.alloc(data.length);
      readSync(fd, onDisk, 0, data.length, position);
      if (!onDisk.equals(data)) {
        let i = 0;
        while (onDisk[i] === data[i]) i++;
        return position + i;
      }
    }
    return undefined;
  } finally {
    closeSync(fd);
  }
}

/** qemu-storage-daemon may create its socket a moment before it accepts: retry refusals briefly. */
async function connect(socketPath: string, trace: boolean): Promise<BlockDevice> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await openBlockDevice(socketPath, trace ? { trace: true } : {});
    } catch (err) {
      if ((err as { code?: unknown }).code !== 'VHOST_USER_ERR_CONNECT' || attempt >= 50) throw err;
      await sleep(20);
    }
  }
}

interface DemoReport {
  backend: string;
  features: string[];
  protocolFeatures: string[];
  verify: VerifyResult;
  load: LoadResult;
  stats: Record<string, number>;
  fileCheck: { ranges: number; mismatchAt: number | null };
  backendExitCode: number | null;
}

function printReport(report: DemoReport): void {
  const { verify, load, stats } = report;
  const out = (line: string): boolean => process.stdout.write(`${line}\n`);
  out(`demo: backend ${report.backend}`);
  out(`  features     ${wrapList(report.features, 15)}`);
  out(`  protocol     ${wrapList(report.protocolFeatures, 15)}`);
  out(`  ${verifySummary(verify, 'async')}`);
  out(
    `  load: ${load.ops} ops (${load.reads} reads, ${load.writes} writes of ${IO_SIZE} bytes) in ` +
      `${(load.elapsedMs / 1000).toFixed(2)} s: ${load.iops.toFixed(0)} IOPS, ` +
      `${formatSize(Math.round(load.bytesPerSecond))}/s, latency p50 ${load.p50Ms.toFixed(3)} ms, ` +
      `p99 ${load.p99Ms.toFixed(3)} ms, max ${load.maxMs.toFixed(3)} ms`,
  );
  out(
    `  requests ${stats.requests}, kicks ${stats.kicks}, calls ${stats.calls}, ` +
      `read-modify-writes ${stats.readModifyWrites}, bytes bounced ${stats.bytesBounced}`,
  );
  out(
    `  raw file: ${report.fileCheck.ranges} verify ranges ` +
      (report.fileCheck.mismatchAt === null
        ? 'match byte for byte'
        : `DIFFER at byte ${report.fileCheck.mismatchAt}`),
  );
  out(`demo: ${verify.ok && report.fileCheck.mismatchAt === null ? 'OK' : 'FAILED'}`);
}

export async function run({ values, positionals }: ParsedArgs): Promise<number> {
  expectPositionals(spec, positionals, 0);
  const backendName = stringOption(values, 'backend') ?? 'embedded';
  if (backendName !== 'embedded' && backendName !== 'qsd') {
    throw new UsageError(`demo: --backend must be 'embedded' or 'qsd', got '${backendName}'`);
  }
  const seconds = parseCount(stringOption(values, 'seconds') ?? '5', '--seconds', 0);
  const iterations = parseCount(stringOption(values, 'iterations') ?? '2000', '--iterations');
  const step = parseCount(stringOption(values, 'step') ?? '4097', '--step');
  const depth = parseCount(stringOption(values, 'depth') ?? '32', '--depth');
  const diskSize = parseCount(stringOption(values, 'disk-size') ?? '64M', '--disk-size');
  const verifyEnd = iterations * step;
  const loadStart = Math.ceil(verifyEnd / IO_SIZE) * IO_SIZE;
  if (loadStart + IO_SIZE * depth > diskSize) {
    throw new UsageError(
      `demo: --disk-size ${diskSize} leaves no room for the load after ${verifyEnd} verify bytes`,
    );
  }

  const dir = mkdtempSync(join(tmpdir(), 'vhost-user-demo-'));
  const image = join(dir, 'disk.img');
  const socketPath = join(dir, 'vhost.sock');
  let backend: ChildBackend | undefined;
  let dev: BlockDevice | undefined;
  // Ctrl-C during the demo still removes the temp dir and stops the child.
  const interrupted = (): void => {
    backend?.process.kill('SIGTERM');
    rmSync(dir, { recursive: true, force: true });
    process.exit(130);
  };
  process.once('SIGINT', interrupted);
  try {
    writeFileSync(image, Buffer.alloc(0));
    truncateSync(image, diskSize);
    backend =
      backendName === 'qsd'
        ? await spawnQsd(image, socketPath)
        : await spawnEmbedded(image, socketPath);
    dev = await connect(socketPath, flag(values, 'trace'));
    dev.on('error', () => {}); // reported by the next call
    const written = new Map<number, Buffer>();
    const verify = await runVerify(dev, {
      iterations,
      step,
      size: step,
      offset: 0,
      async: true,
      onWritten: (position, data) => written.set(position, data),
    });
    const load = await runLoad(dev, {
      start: loadStart,
      end: diskSize,
      ioSize: IO_SIZE,
      depth,
      seconds,
    });
    await dev.flush();
    const stats = { ...dev.stats };
    const info = dev.info;
    await dev.close();
    dev = undefined;
    const backendExitCode = await backend.stop();
    const label = backend.name;
    backend = undefined;
    const mismatchAt = checkFile(image, written) ?? null;
    const report: DemoReport = {
      backend: label,
      features: info.features.names,
      protocolFeatures: info.protocolFeatures.names,
      verify,
      load,
      stats,
      fileCheck: { ranges: written.size, mismatchAt },
      backendExitCode,
    };
    if (flag(values, 'json')) printJson(report);
    else printReport(report);
    if (!verify.ok || mismatchAt !== null) throw new ReportedFailure();
    if (backendName === 'embedded' && backendExitCode !== 0) {
      throw new Error(`the backend exited with code ${backendExitCode} on SIGTERM`);
    }
    return 0;
  } finally {
    process.off('SIGINT', interrupted);
    await dev?.close().catch(() => {});
    await backend?.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}
