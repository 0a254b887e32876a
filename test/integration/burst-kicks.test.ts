/**
 * The kicks of a burst, counted exactly: against the scripted backend, which never reads its
 * rings (node:net drops the fds the frontend sends) and offers neither EVENT_IDX nor a
 * VRING_USED_F_NO_NOTIFY, every kick the frontend decides on is made, and nothing completes,
 * so no drain or device timing moves the count. (completion-strategies.test.ts counts the same
 * rule against qemu-storage-daemon, where a daemon still polling its ring asks for no kick.)
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { AbortError, openBlockDevice, type CompletionMode } from '../../src/index.js';
import { startScriptedBackend } from '../helpers/scripted-backend.js';

const MODES: readonly CompletionMode[] = ['event', 'poll', 'sleep-poll', 'adaptive'];

/** What each call of a burst made in one tick added to the kicks, and what its tick's end did. */
function burst(
  dev: Awaited<ReturnType<typeof openBlockDevice>>,
  count: number,
  firstBlock: number,
  signal: AbortSignal,
  pending: Promise<unknown>[],
): { inCalls: number[]; before: number } {
  const before = dev.stats.kicks;
  const inCalls: number[] = [];
  for (let i = 0; i < count; i++) {
    const k = dev.stats.kicks;
    pending.push(dev.read((firstBlock + i) * 512, 512, { signal }));
    inCalls.push(dev.stats.kicks - k);
  }
  return { inCalls, before };
}

for (const mode of MODES) {
  test(`${mode}: a burst's first request is kicked in its call, the rest once at the tick's end`, async () => {
    const backend = await startScriptedBackend();
    const dev = await openBlockDevice(backend.socketPath, {
      completion: mode,
      completionOptions: { kickAhead: false },
      timeout: 2000,
    });
    const abort = new AbortController();
    const pending: Promise<unknown>[] = [];
    try {
      // From idle: a lone request is kicked in its call (quietKick), the second opens the
      // burst and is kicked at once too, the rest once more at the tick's end.
      const idle = burst(dev, 8, 0, abort.signal, pending);
      assert.deepEqual(idle.inCalls, [1, 1, 0, 0, 0, 0, 0, 0]);
      await nextTurn();
      assert.equal(dev.stats.kicks - idle.before, 3, 'the rest kicked once more');

      // A later burst, the device busy (nothing it was given has completed): 1 + 1.
      const busy = burst(dev, 5, 8, abort.signal, pending);
      assert.deepEqual(busy.inCalls, [1, 0, 0, 0, 0]);
      await nextTurn();
      assert.equal(dev.stats.kicks - busy.before, 2);

      // A burst of one: its kick at once is all; the tick's end has nothing left to kick.
      const single = burst(dev, 1, 13, abort.signal, pending);
      assert.deepEqual(single.inCalls, [1]);
      await nextTurn();
      assert.equal(dev.stats.kicks - single.before, 1);

      // Bursts in microtasks of one tick are one burst: its first kicked at once, the rest once.
      const before = dev.stats.kicks;
      let inMicrotasks = -1;
      await new Promise<void>((resolve) => {
        process.nextTick(() => {
          for (let i = 0; i < 3; i++) {
            queueMicrotask(() => {
              pending.push(dev.read((14 + i) * 512, 512, { signal: abort.signal }));
              if (i === 2) {
                inMicrotasks = dev.stats.kicks - before;
                resolve();
              }
            });
          }
        });
      });
      assert.equal(inMicrotasks, 1, 'kicks while the burst was made');
      await nextTurn();
      assert.equal(dev.stats.kicks - before, 2);
      assert.equal(dev.stats.kicksAhead, 0);
    } finally {
      abort.abort();
      const outcomes = await Promise.allSettled(pending);
      for (const o of outcomes) {
        assert.equal(o.status, 'rejected');
        assert.ok(o.reason instanceof AbortError, String(o.reason));
      }
      await dev.close({ timeout: 500 }).catch(() => {});
      await backend.stop();
    }
  });
}
