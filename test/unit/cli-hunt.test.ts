import { test } from 'node:test';
import assert from 'node:assert/strict';
import { JobFileError, parseJobFile, resolveBenchOptions } from '../../src/bench/index.js';

test('bench options: time_based without a runtime is dropped, as fio drops it (it would never end)', () => {
  const o = resolveBenchOptions({ socket: '/s', runtime: 0, time_based: true }, 1 << 20);
  assert.equal(o.time_based, false);
  assert.equal(resolveBenchOptions({ socket: '/s', runtime: 0 }, 1 << 20).time_based, false);
  assert.equal(resolveBenchOptions({ socket: '/s', runtime: 1 }, 1 << 20).time_based, true);
  const off = resolveBenchOptions({ socket: '/s', runtime: 1, time_based: false }, 1 << 20);
  assert.equal(off.time_based, false);
});

test('job file: a comment after a value or a [section] ends the line, as fio reads it', () => {
  const parsed = parseJobFile(
    [
      '[global] ; shared options',
      'bs=4k ; block size',
      'rw=read # sequential',
      'iodepth = 8;no space before it',
      '[job-a] # the one job',
      'rwmixread=70#',
      '  ; an indented comment',
      '',
    ].join('\r\n'),
  );
  assert.equal(parsed.name, 'job-a');
  assert.deepEqual(parsed.warnings, []);
  assert.equal(parsed.options.bs, 4096);
  assert.equal(parsed.options.rw, 'read');
  assert.equal(parsed.options.iodepth, 8);
  assert.equal(parsed.options.rwmixread, 70);
});

test('job file: an include directive is a clear error, not a malformed line', () => {
  assert.throws(
    () => parseJobFile('[job]\ninclude common.fio\n'),
    (err: unknown) =>
      err instanceof JobFileError &&
      /line 2: .*include directives are not implemented/.test(err.message),
  );
});

test('job file: an integer key without a value is an error, not 0', () => {
  for (const line of [
    'rwmixread',
    'rwmixread=',
    'rwmixwrite=',
    'randseed=',
    'numjobs',
    'iodepth=',
  ]) {
    assert.throws(
      () => parseJobFile(`[job]\nrw=randrw\n${line}\n`),
      (err: unknown) =>
        err instanceof JobFileError && /line 3: expected an integer/.test(err.message),
      line,
    );
  }
});
