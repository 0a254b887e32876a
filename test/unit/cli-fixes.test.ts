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

test('job file: include reads key=value lines into the section it is in; a section in the included file is an error', () => {
  const files: Record<string, string> = {
    'common.fio': '; shared\nrw=randread\nbs=64k\n',
    'sections.fio': 'bs=8k\n[other]\n',
    'nested.fio': 'include common.fio\n',
  };
  const include = (name: string): string => {
    const text = files[name];
    if (text === undefined) throw new Error(`ENOENT: ${name}`);
    return text;
  };
  const parsed = parseJobFile('[global]\ninclude common.fio\n[job]\niodepth=4\n', include);
  assert.equal(parsed.options.rw, 'randread');
  assert.equal(parsed.options.bs, 65536);
  assert.equal(parsed.options.iodepth, 4);
  // A later line overrides an included one, as in fio (lines apply in order).
  assert.equal(parseJobFile('[job]\ninclude common.fio\nbs=4k\n', include).options.bs, 4096);
  for (const [text, pattern] of [
    ['[job]\ninclude sections.fio\n', /sections\.fio line 2: .*\[other\].*included file/],
    ['[job]\ninclude missing.fio\n', /line 2: .*missing\.fio.*ENOENT/],
    ['[job]\ninclude nested.fio\n', /nested\.fio line 1: .*include/],
    ['include common.fio\n[job]\n', /line 1: .*outside any \[section\]/],
  ] as const) {
    assert.throws(
      () => parseJobFile(text, include),
      (err: unknown) => err instanceof JobFileError && pattern.test(err.message),
      text,
    );
  }
  // An unknown key in the included file names that file and its line.
  files['bad.fio'] = 'rw=read\nnot_a_key=1\n';
  assert.throws(
    () => parseJobFile('[job]\ninclude bad.fio\n', include),
    /bad\.fio line 2: 'not_a_key' is not a fio option/,
  );
});
