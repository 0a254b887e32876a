import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RangeLock, type RangeLockEntry } from '../../src/block/range-lock.js';

/** A lock whose whole range 0-100 is held exclusively, and the order its entries are told in. */
function heldWhole(): { lock: RangeLock; order: string[]; holder: RangeLockEntry } {
  const lock = new RangeLock();
  const order: string[] = [];
  const holder = lock.acquire(0, 100, true, () => order.push('holder'));
  return { lock, order, holder };
}

test('exclusive ranges exclude overlapping ones; shared ranges share', () => {
  const lock = new RangeLock();
  const order: string[] = [];
  const a = lock.acquire(0, 10, true, () => order.push('a'));
  const b = lock.acquire(5, 15, false, () => order.push('b'));
  const c = lock.acquire(20, 30, false, () => order.push('c'));
  const d = lock.acquire(22, 25, false, () => order.push('d'));
  assert.equal(a.granted, true);
  assert.equal(b.granted, false);
  assert.equal(c.granted, true);
  assert.equal(d.granted, true, 'shared ranges may overlap');
  lock.release(a);
  assert.deepEqual(order, ['b']);
  assert.equal(b.granted, true);
});

test('FIFO: a later request does not overtake an earlier conflicting one', () => {
  const lock = new RangeLock();
  const order: string[] = [];
  const first = lock.acquire(0, 10, true, () => order.push('first'));
  const waiter = lock.acquire(0, 10, true, () => order.push('waiter'));
  // Shared and overlapping the waiter: must wait behind it even once `first` is gone.
  const late = lock.acquire(8, 12, false, () => order.push('late'));
  assert.equal(late.granted, false);
  lock.release(first);
  assert.deepEqual(order, ['waiter']);
  lock.release(waiter);
  assert.deepEqual(order, ['waiter', 'late']);
});

test('withdrawing a waiter lets the ones behind it go', () => {
  const lock = new RangeLock();
  const order: string[] = [];
  const held = lock.acquire(0, 10, false, () => order.push('held'));
  const blocked = lock.acquire(5, 15, true, () => order.push('blocked'));
  const behind = lock.acquire(12, 20, true, () => order.push('behind'));
  assert.equal(behind.granted, false);
  lock.release(blocked); // aborted while waiting
  assert.deepEqual(order, ['behind']);
  lock.release(held);
  lock.release(behind);
});

test('a chain of thousands of dependent writes is granted in linear-ish time', () => {
  const lock = new RangeLock();
  const n = 5000;
  const entries: RangeLockEntry[] = [];
  let granted = 0;
  // Each write overlaps its neighbour (like unaligned writes sharing edge blocks).
  for (let i = 0; i < n; i++)
    entries.push(lock.acquire(i * 10, i * 10 + 15, true, () => granted++));
  const started = process.hrtime.bigint();
  for (let i = 0; i < n; i++) {
    const e = entries[i]!;
    assert.equal(e.granted, true, `entry ${i} should be granted by now`);
    lock.release(e);
  }
  const ms = Number(process.hrtime.bigint() - started) / 1e6;
  assert.ok(granted > 0);
  assert.equal(lock.heldCount + lock.waitingCount, 0);
  assert.ok(ms < 2000, `${ms} ms for ${n} releases`);
});

test('several granted at once are told in order, and an onGranted may release and grant again', () => {
  const { lock, order, holder } = heldWhole();
  // Three disjoint waiters behind the holder, and two behind the first of them.
  const first = lock.acquire(0, 10, true, () => {
    order.push('first');
    // Released at once inside its own grant: the two waiting behind it go now, nested, while
    // two of the outer pass are still to be told.
    lock.release(first);
  });
  const second = lock.acquire(20, 30, true, () => order.push('second'));
  const third = lock.acquire(40, 50, true, () => order.push('third'));
  const b1 = lock.acquire(0, 3, true, () => order.push('b1'));
  const b2 = lock.acquire(5, 8, true, () => order.push('b2'));
  assert.equal(lock.waitingCount, 5);
  lock.release(holder);
  assert.deepEqual(order, ['first', 'b1', 'b2', 'second', 'third']);
  assert.equal(lock.waitingCount, 0);
  assert.equal(lock.heldCount, 4);
  for (const e of [second, third, b1, b2]) lock.release(e);
  assert.equal(lock.heldCount, 0);
  // An entry is reusable once released.
  const again = lock.acquireEntry(first);
  assert.equal(again.granted, true);
  assert.equal(lock.heldCount, 1);
});

test('an entry granted in a pass but released before it is told is never told', () => {
  const { lock, order, holder } = heldWhole();
  const later: { b?: RangeLockEntry } = {};
  lock.acquire(0, 10, true, () => {
    order.push('a');
    lock.release(later.b!); // b was granted with a, and is given up (its operation failed)
  });
  later.b = lock.acquire(20, 30, true, () => order.push('b'));
  lock.release(holder);
  assert.deepEqual(order, ['a']);
  assert.equal(lock.heldCount, 1);
});

test('an onGranted that throws leaves the others told, and its error comes out', () => {
  const { lock, order, holder } = heldWhole();
  lock.acquire(0, 10, true, () => {
    throw new Error('a failed');
  });
  lock.acquire(20, 30, true, () => order.push('b'));
  assert.throws(() => lock.release(holder), /a failed/);
  assert.deepEqual(order, ['b']);
  assert.equal(lock.heldCount, 2);
});

test('a release leaves the other waiters in their order, and counts what it holds', () => {
  const lock = new RangeLock();
  const order: string[] = [];
  const a = lock.acquire(0, 10, true, () => order.push('a'));
  const b = lock.acquire(0, 10, true, () => order.push('b'));
  const c = lock.acquire(0, 10, true, () => order.push('c'));
  const d = lock.acquire(0, 10, true, () => order.push('d'));
  lock.release(c); // a waiter withdrawn from the middle
  assert.equal(lock.waitingCount, 2);
  lock.release(a);
  lock.release(b);
  assert.deepEqual(order, ['b', 'd']);
  assert.throws(() => lock.release(c), /neither held nor waiting/);
  lock.release(d);
  assert.equal(lock.heldCount + lock.waitingCount, 0);
});
