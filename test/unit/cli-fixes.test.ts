import { test } from 'node:test';
import assert from 'node:assert/strict';
import { resolveBenchOptions } from '../../src/bench/index.js';

test('bench options: verify on a workload that writes nothing is refused, not "0 blocks checked, all good"', () => {
  for (const o of [
    { rw: 'read' as const },
    { rw: 'randread' as const },
    { rw: 'randrw' as const, rwmixread: 100 },
  ]) {
    assert.throws(
      () => resolveBenchOptions({ socket: '/s', verify: 'crc32c', ...o }, 1 << 20),
      (err: unknown) =>
        err instanceof RangeError && /^bench: verify=crc32c .*writes nothing/.test(err.message),
      JSON.stringify(o),
    );
  }
  for (const o of [
    { rw: 'write' as const },
    { rw: 'randrw' as const, rwmixread: 99 },
    { rw: 'read' as const, verify: 'none' as const },
  ]) {
    assert.doesNotThrow(() => resolveBenchOptions({ socket: '/s', verify: 'crc32c', ...o }));
  }
});
