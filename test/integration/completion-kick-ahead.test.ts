import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { openBlockDevice, type BlockDevice } from '../../src/index.js';
import type { CompletionMode } from '../../src/completion/index.js';
import { startQsd, type Qsd } from '../helpers/qsd.js';
import { prng, randomBytes } from '../helpers/random.js';

/*
 * Kicking ahead against qemu-storage-daemon (which wants a kick for every next request: EVENT_IDX
 * with avail_event at our last index). This file's first test runs before the thread's first
 * preemption sample (256 waits), so nothing can have taken the backend for one on this CPU.
 */

const BLOCKS = 96;
const SIZE = BLOCKS * 4096;

let qsd: Qsd;

before(async () => {
  qsd = await startQsd({ size: SIZE });
});

after(async () => {
  await qsd?.stop();
});

/** Writes then reads back every block at depth 1; returns the device's stats after. */
async function depthOneRound(dev: BlockDevice, seed: number): Promise<BlockDevice['stats']> {
  const data = randomBytes(prng(seed), SIZE);
  const buffer = dev.allocBuffer(4096);
  for (let block = 0; block < BLOCKS; block++) {
    buffer.set(data.subarray(block * 4096, (block + 1) * 4096));
    assert.equal(await dev.write(buffer, block * 4096), 4096);
  }
  for (let block = 0; block < BLOCKS; block++) {
    assert.equal(await dev.readInto(buffer, block * 4096), 4096);
    assert.ok(buffer.equals(data.subarray(block * 4096, (block + 1) * 4096)), `block ${block}`);
  }
  assert.ok(readFileSync(qsd.imagePath).equals(data), 'the bytes on disk');
  return dev.stats;
}

for (const [index, mode] of (['poll', 'adaptive'] as CompletionMode[]).entries()) {
  test(`${mode}: at depth 1 each completion a spin finds is followed by a kick ahead; data intact`, async () => {
    // Adaptive spins here: its closed-loop trial spins every wait for its first 300 ms.
    const dev = await openBlockDevice(qsd.socketPath, { completion: mode });
    try {
      const stats = await depthOneRound(dev, 10 + index);
      assert.equal(stats.completions, 2 * BLOCKS);
      // Each drain that left the device idle kicked ahead, unless the completion came with an
      // interrupt (a wait that blocked).
      assert.ok(stats.kicksAhead > BLOCKS, `${stats.kicksAhead} kicks ahead`);
      assert.ok(
        stats.kicksAhead >= stats.completions - stats.calls - 2,
        `${stats.kicksAhead} kicks ahead, ${stats.calls} calls, ${stats.completions} completions`,
      );
      assert.ok(stats.kicksAhead <= stats.completions);
      // Kicks ahead are not counted as kicks: one kick per request still.
      assert.ok(stats.kicks <= stats.requests, `${stats.kicks} kicks, ${stats.requests} requests`);
    } finally {
      await dev.close();
    }
  });
}

test('kickAhead: false never kicks ahead, and neither do event nor sleep-poll', async () => {
  const configs = [
    { completion: 'poll', completionOptions: { kickAhead: false } },
    { completion: 'adaptive', completionOptions: { kickAhead: false } },
    { completion: 'event' },
    { completion: 'sleep-poll' },
  ] as const;
  for (const [index, config] of configs.entries()) {
    const dev = await openBlockDevice(qsd.socketPath, config);
    try {
      const stats = await depthOneRound(dev, 20 + index);
      assert.equal(stats.completions, 2 * BLOCKS);
      assert.equal(stats.kicksAhead, 0, JSON.stringify(config));
    } finally {
      await dev.close();
    }
  }
});

test('completionOptions.kickAhead must be a boolean', async () => {
  await assert.rejects(
    openBlockDevice(qsd.socketPath, {
      completion: 'poll',
      completionOptions: { kickAhead: 1 as unknown as boolean },
    }),
    /kickAhead must be a boolean/,
  );
});
