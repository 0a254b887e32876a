/**
 * The shared-memory layer on its own: the range allocator against a model under random
 * alloc / free sequences, and memfd regions (fds, mappings) across many create / close cycles.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RangeAllocator } from '../../src/memory/allocator.js';
import { GuestMemory } from '../../src/memory/guest-memory.js';
import { SharedRegion } from '../../src/memory/region.js';
import { prng, randomInt } from '../helpers/random.js';
import { memfdMappings, openFds } from '../helpers/process-resources.js';

const KiB = 1024;

/** Checks the allocator's answers against the blocks the test holds. */
function checkAgainstModel(a: RangeAllocator, held: Map<number, number>): void {
  const blocks = [...held].sort((x, y) => x[0] - y[0]);
  let used = 0;
  let end = 0;
  let largestGap = 0;
  for (const [offset, size] of blocks) {
    assert.ok(offset >= end, `block at ${offset} overlaps the one ending at ${end}`);
    assert.equal(offset % a.granule, 0, `block at ${offset} is not granule-aligned`);
    assert.equal(a.sizeOf(offset), size);
    largestGap = Math.max(largestGap, offset - end);
    end = offset + size;
    used += size;
  }
  assert.ok(end <= a.size, `a block ends at ${end}, past the region (${a.size})`);
  largestGap = Math.max(largestGap, a.size - end);
  assert.equal(a.freeBytes, a.size - used);
  assert.equal(a.allocatedCount, held.size);
  // Coalescing: the largest free extent is the largest gap between held blocks.
  assert.equal(a.largestFree, largestGap);
}

test('random alloc / free sequences: no overlap, granule-aligned, coalesced, whole region usable again', () => {
  for (const seed of [1, 2, 3, 4, 5]) {
    const rand = prng(seed);
    const granule = seed % 2 === 0 ? 4096 : 512;
    const a = new RangeAllocator(256 * KiB + 123, granule);
    assert.equal(a.size % granule, 0);
    const held = new Map<number, number>();
    for (let step = 0; step < 3000; step++) {
      if (held.size > 0 && rand() < 0.45) {
        const offsets = [...held.keys()];
        const offset = offsets[randomInt(rand, 0, offsets.length - 1)]!;
        a.free(offset);
        held.delete(offset);
      } else {
        const bytes = randomInt(rand, 1, 40 * KiB);
        const largest = a.largestFree;
        const offset = a.alloc(bytes);
        const need = Math.ceil(bytes / granule) * granule;
        if (offset < 0) {
          assert.ok(
            largest < need,
            `seed ${seed}: ${bytes} refused with ${largest} free in one piece`,
          );
          continue;
        }
        assert.ok(a.sizeOf(offset)! >= bytes);
        assert.equal(a.sizeOf(offset), need);
        held.set(offset, need);
      }
      checkAgainstModel(a, held);
    }
    for (const offset of held.keys()) a.free(offset);
    held.clear();
    checkAgainstModel(a, held);
    // Everything merged back into one extent: the whole region is one block again.
    assert.equal(a.alloc(a.size), 0, `seed ${seed}`);
  }
});

test('frees of offsets never allocated, inside a block, or twice throw and change nothing', () => {
  const a = new RangeAllocator(64 * KiB);
  const first = a.alloc(8 * KiB);
  const second = a.alloc(4 * KiB);
  const held = new Map([
    [first, 8 * KiB],
    [second, 4 * KiB],
  ]);
  for (const bad of [first + 4096, 60 * KiB, -4096, 1.5, NaN]) {
    assert.throws(() => a.free(bad), /not allocated/, String(bad));
    checkAgainstModel(a, held);
  }
  a.free(second);
  held.delete(second);
  assert.throws(() => a.free(second), /not allocated/);
  checkAgainstModel(a, held);
});

test('a region smaller than one granule has nothing to give, and says so', () => {
  const a = new RangeAllocator(3000);
  assert.equal(a.size, 0);
  assert.equal(a.freeBytes, 0);
  assert.equal(a.largestFree, 0);
  assert.equal(a.alloc(1), -1);
});

function gcNow(): void {
  const gc = (globalThis as { gc?: () => void }).gc;
  assert.ok(gc, 'run with --expose-gc');
  gc();
}

test('200 GuestMemory create / close cycles leave no fd and no memfd mapping behind', () => {
  gcNow();
  const fds = openFds();
  const mappings = memfdMappings();
  for (let i = 0; i < 200; i++) {
    const memory = new GuestMemory({
      controlSize: 5000, // not a page multiple
      dataSize: 64 * KiB + 1,
      hugepages: false,
    });
    assert.equal(memory.data.size % 4096, 0);
    assert.ok(memory.data.size >= 64 * KiB + 1);
    assert.equal(memory.allocator.size, memory.data.size);
    const view = memory.dataBytes;
    view[view.length - 1] = 1;
    memory.close();
    assert.equal(view.length, 0, 'the data view is detached at close');
    memory.close(); // idempotent
  }
  // The rings' SharedArrayBuffer keeps an anonymous range until it is collected, never the memfd.
  assert.equal(memfdMappings(), mappings);
  gcNow();
  assert.equal(openFds(), fds);
});

test('a data region that cannot be mapped closes the control region it made first', () => {
  const fds = openFds();
  const mappings = memfdMappings();
  // Past the address space: mmap fails (ENOMEM), after the control region was created.
  assert.throws(() => new GuestMemory({ controlSize: 4096, dataSize: 2 ** 52, hugepages: false }), {
    code: 'VHOST_USER_ERR_SYSTEM',
  });
  assert.equal(openFds(), fds);
  assert.equal(memfdMappings(), mappings);
  assert.throws(
    () => SharedRegion.create({ name: 'x', size: 2 ** 52, hugepages: false, view: 'plain' }),
    { code: 'VHOST_USER_ERR_SYSTEM' },
  );
  assert.equal(openFds(), fds);
});
