import { test } from 'node:test';
import assert from 'node:assert/strict';
import { checkCompletionOptions, COMPLETION_MODES } from '../../src/completion/index.js';
import { measureSleepFloor } from '../../src/completion/sleep-poll.js';

const BAD = { code: 'VHOST_USER_ERR_INVALID_ARGUMENT' };

test('every mode with default options is accepted', () => {
  for (const mode of COMPLETION_MODES) checkCompletionOptions(mode);
  assert.deepEqual([...COMPLETION_MODES], ['event', 'poll', 'sleep-poll', 'adaptive']);
});

test('a spin slice or a sleep leaves room in the 1 ms the event loop may be held', () => {
  checkCompletionOptions('poll', { spinSliceNs: 700_000 });
  checkCompletionOptions('sleep-poll', { sleepIntervalNs: 700_000 });
  // 0.9 ms sleeps overshot 1 ms in 17% of turns (BENCHMARKS.md).
  assert.throws(() => checkCompletionOptions('poll', { spinSliceNs: 900_000 }), {
    ...BAD,
    message: /spinSliceNs must be a number in 0\.\.700000/,
  });
  assert.throws(() => checkCompletionOptions('sleep-poll', { sleepIntervalNs: 900_000 }), {
    ...BAD,
    message: /sleepIntervalNs must be an integer in 1\.\.700000/,
  });
});

test('bad modes and options are InvalidArgumentErrors naming the option', () => {
  assert.throws(() => checkCompletionOptions('busy'), BAD);
  assert.throws(() => checkCompletionOptions('poll', { spinSliceNs: 2_000_000 }), {
    ...BAD,
    message: /spinSliceNs/,
  });
  assert.throws(() => checkCompletionOptions('sleep-poll', { sleepIntervalNs: 0 }), {
    ...BAD,
    message: /sleepIntervalNs/,
  });
  assert.throws(() => checkCompletionOptions('adaptive', { adaptive: { maxSpinNs: -5 } }), {
    ...BAD,
    message: /adaptive\.maxSpinNs/,
  });
  // A misspelt knob would otherwise keep its default without a word.
  assert.throws(() => checkCompletionOptions('poll', { spinSlice: 5 } as object), {
    ...BAD,
    message: /completionOptions\.spinSlice is not an option/,
  });
  assert.throws(
    () => checkCompletionOptions('adaptive', { adaptive: { yieldHold: 5 } } as object),
    {
      ...BAD,
      message: /completionOptions\.adaptive\.yieldHold is not an option/,
    },
  );
  assert.throws(() => checkCompletionOptions('adaptive', { adaptive: 'fast' } as object), BAD);
  for (const microLookNs of [-1, 1.5, 2_000_000]) {
    assert.throws(() => checkCompletionOptions('poll', { microLookNs }), {
      ...BAD,
      message: /microLookNs/,
    });
  }
  checkCompletionOptions('adaptive', { microLookNs: 20_000 });
});

test('the native sleep floor is measurable (and well above 1 µs on a VM)', () => {
  const floor = measureSleepFloor(1000, 20);
  assert.equal(floor.samples, 20);
  assert.ok(floor.min >= 1000 && floor.min <= floor.p50 && floor.p50 <= floor.max);
});
