/**
 * Child-process entry: `node depth-one-child.js SOCKET MODE BLOCKS READS [COMPLETION_OPTIONS_JSON]`,
 * outside the test runner (whose hooks make each await cost microseconds). At depth 1: writes
 * random data to BLOCKS blocks and reads each back (exits 1 on a mismatch), then READS reads of
 * those blocks in a bare closed loop, as a benchmark makes them. Prints `STATS <json>`: the
 * device's stats and the sha256 of the data written.
 */
import { createHash, randomBytes } from 'node:crypto';
import { openBlockDevice } from '../../src/index.js';
import type { CompletionMode, CompletionOptions } from '../../src/completion/index.js';

const [socket, mode, blocksArg, readsArg, optionsArg] = process.argv.slice(2);
const blocks = Number(blocksArg);
const dev = await openBlockDevice(socket!, {
  completion: mode as CompletionMode,
  completionOptions: JSON.parse(optionsArg ?? '{}') as CompletionOptions,
});
const buffer = dev.allocBuffer(4096);
const data = randomBytes(blocks * 4096);
for (let block = 0; block < blocks; block++) {
  buffer.set(data.subarray(block * 4096, (block + 1) * 4096));
  await dev.write(buffer, block * 4096);
}
for (let block = 0; block < blocks; block++) {
  await dev.readInto(buffer, block * 4096);
  if (!buffer.equals(data.subarray(block * 4096, (block + 1) * 4096))) {
    process.stderr.write(`block ${block} differs\n`);
    process.exit(1);
  }
}
const reads = Number(readsArg);
for (let i = 0; i < reads; i++) await dev.readInto(buffer, (i % blocks) * 4096);
const stats = dev.stats;
await dev.close();
process.stdout.write(`STATS ${JSON.stringify({ stats, sha: sha256(data) })}\n`);

function sha256(bytes: Buffer): string {
  return createHash('sha256').update(bytes).digest('hex');
}
