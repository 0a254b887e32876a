import { test } from 'node:test';
import assert from 'node:assert/strict';
import { resolveBenchOptions } from '../../src/bench/index.js';

test('bench options: time_based without a runtime is dropped, as fio drops it (it would never end)', () => {
  const o = resolveBenchOptions({ socket: '/s', runtime: 0, time_based: true }, 1 << 20);
  assert.equal(o.time_based, false);
  assert.equal(resolveBenchOptions({ socket: '/s', runtime: 0 }, 1 << 20).time_based, false);
  assert.equal(resolveBenchOptions({ socket: '/s', runtime: 1 }, 1 << 20).time_based, true);
  const off = resolveBenchOptions({ socket: '/s', runtime: 1, time_based: false }, 1 << 20);
  assert.equal(off.time_based, false);
});
