/**
 * settleInBurst: a strategy's callback settles requests, runs their continuations itself and
 * has the host end each burst (the drain's own, then the continuations'), so no burst waits for
 * a process.nextTick and none is left open.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { CompletionHost } from '../../src/completion/strategy.js';
import { settleInBurst } from '../../src/completion/strategy.js';

function recordingHost(log: string[]): CompletionHost {
  return {
    queues: [],
    drain: () => 0,
    countCall: () => {},
    beginBurst: () => log.push('begin'),
    endBurst: () => log.push('end'),
  };
}

test('settleInBurst: the drain ends its own burst, then the continuations run and end theirs', async () => {
  const log: string[] = [];
  // From a callback of the event loop, as the strategies' are (inside a microtask, running the
  // microtasks would do nothing).
  await new Promise<void>((resolve) => {
    setImmediate(() => {
      settleInBurst(recordingHost(log), () => {
        log.push('work');
        void Promise.resolve().then(() => log.push('continuation'));
      });
      log.push('returned');
      resolve();
    });
  });
  assert.deepEqual(log, ['begin', 'work', 'end', 'begin', 'continuation', 'end', 'returned']);
});

test('settleInBurst: a callback that throws still ends the burst', () => {
  const log: string[] = [];
  assert.throws(
    () =>
      settleInBurst(recordingHost(log), () => {
        log.push('work');
        throw new Error('drain failed');
      }),
    /drain failed/,
  );
  assert.deepEqual(log, ['begin', 'work', 'end']);
});
