import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RunQueue } from '../../src/block/run-queue.js';
import { SlotSet } from '../../src/block/slot-set.js';
import { mulberry32 } from '../../src/util/prng.js';

/** Whole numbers in [0, 2^32) from a seeded generator. */
const seeded = (seed: number) => {
  const next = mulberry32(seed);
  return { next: () => Math.floor(next() * 4294967296) };
};

const contents = <T>(q: RunQueue<T>): T[] => Array.from({ length: q.length }, (_, i) => q.at(i));

test('RunQueue keeps FIFO order across wrap-around and growth, with items added at the front', () => {
  const q = new RunQueue<number>();
  const model: number[] = [];
  const rng = seeded(7);
  let next = 0;
  for (let step = 0; step < 20_000; step++) {
    const r = rng.next() % 10;
    if (r < 4) {
      q.push(next);
      model.push(next++);
    } else if (r < 5) {
      q.unshift(next);
      model.unshift(next++);
    } else if (model.length > 0) {
      // Mostly the front, as the engine's pump takes them; now and then one further back.
      const i = r < 9 ? 0 : rng.next() % model.length;
      assert.equal(q.at(i), model[i]);
      q.removeAt(i);
      model.splice(i, 1);
    }
    assert.equal(q.length, model.length);
  }
  assert.deepEqual(contents(q), model);
  assert.equal(q.indexOf(model.at(-1)!), model.length - 1);
  assert.equal(q.indexOf(-1), -1);
  assert.deepEqual(q.clear(), model);
  assert.equal(q.length, 0);
  q.push(1);
  assert.deepEqual(contents(q), [1]);
});

test('RunQueue holds a backlog larger than its first capacity, in order', () => {
  const q = new RunQueue<number>();
  for (let i = 0; i < 100; i++) q.push(i);
  for (let i = 0; i < 50; i++) q.removeAt(0);
  for (let i = 100; i < 180; i++) q.push(i);
  q.unshift(-1);
  assert.deepEqual(contents(q), [-1, ...Array.from({ length: 130 }, (_, i) => i + 50)]);
});

test('SlotSet adds and deletes in any order; each member knows its slot', () => {
  const set = new SlotSet<{ slot: number; id: number }>();
  const members = Array.from({ length: 50 }, (_, id) => ({ slot: -1, id }));
  const inSet = new Set<number>();
  const rng = seeded(11);
  for (let step = 0; step < 20_000; step++) {
    const m = members[rng.next() % members.length]!;
    if (rng.next() % 2 === 0) {
      set.add(m);
      inSet.add(m.id);
    } else {
      set.delete(m);
      inSet.delete(m.id);
      assert.equal(m.slot, -1);
    }
    assert.equal(set.size, inSet.size);
  }
  const snapshot = set.snapshot();
  assert.deepEqual(
    snapshot.map((m) => m.id).sort((a, b) => a - b),
    [...inSet].sort((a, b) => a - b),
  );
  snapshot.forEach((m, i) => assert.equal(m.slot, i));
  // Adding a member twice keeps one entry; deleting one that is not in the set changes nothing.
  const outside = members.find((m) => m.slot === -1)!;
  set.delete(outside);
  set.add(snapshot[0]!);
  assert.equal(set.size, inSet.size);
  // Deleting while going through a snapshot visits every member once.
  let visited = 0;
  for (const m of set.snapshot()) {
    set.delete(m);
    visited++;
  }
  assert.equal(visited, inSet.size);
  assert.equal(set.size, 0);
});
