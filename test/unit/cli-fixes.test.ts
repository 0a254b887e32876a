import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  JobFileError,
  parseFioSize,
  parseJobFile,
  resolveBenchOptions,
} from '../../src/bench/index.js';

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

test('job file: sizes fio reads as powers of 10 (4KiB is 4000 at its default kb_base) are refused, saying what to write', () => {
  for (const [line, fio, instead] of [
    ['bs=4KiB', '4000', '4k'],
    ['size=1MiB', '1000000', '1m'],
    ['offset=2gib', '2000000000', '2g'],
  ] as const) {
    assert.throws(
      () => parseJobFile(`[job]\n${line}\n`),
      (err: unknown) =>
        err instanceof JobFileError &&
        err.message.includes('line 2') &&
        err.message.includes(`${fio} bytes`) &&
        err.message.includes(`write ${instead}`),
      line,
    );
  }
  // The spellings fio reads as powers of 2 read the same here.
  const ok = parseJobFile('[job]\nbs=4k\nsize=1M\noffset=8KB\n');
  assert.equal(ok.options.bs, 4096);
  assert.equal(ok.options.size, 1 << 20);
  assert.equal(ok.options.offset, 8192);
  // kb_base=1000 would make k 1000 bytes: refused; 1024 (the default) is accepted silently.
  assert.throws(() => parseJobFile('[job]\nkb_base=1000\nbs=4k\n'), /line 2: kb_base=1000/);
  assert.deepEqual(parseJobFile('[global]\nkb_base=1024\n[job]\nbs=4k\n').warnings, []);
  // On the command line (parseFioSize) KiB stays 1024, as in the other vhost-user commands.
  assert.equal(parseFioSize('4KiB'), 4096);
});
