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
import { AbortError, type BlockDevice } from '../../src/index.js';
import { COMPLETION_MODES } from '../../src/completion/index.js';
import { burst } from '../helpers/burst.js';
import { withScriptedDevice } from '../helpers/scripted-device.js';

/** Reads made in three microtasks of one tick; resolves the kicks made by the last one's end. */
function burstInMicrotasks(
  dev: BlockDevice,
  firstSector: number,
  signal: AbortSignal,
  pending: Promise<unknown>[],
): Promise<number> {
  const before = dev.stats.kicks;
  return new Promise((resolve, reject) => {
    process.nextTick(() => {
      for (let i = 0; i < 3; i++) {
        queueMicrotask(() => {
          try {
            pending.push(dev.read((firstSector + i) * 512, 512, { signal }));
            if (i === 2) resolve(dev.stats.kicks - before);
          } catch (err) {
            reject(err instanceof Error ? err : new Error(String(err)));
          }
        });
      }
    });
  });
}

for (const mode of COMPLETION_MODES) {
  test(`${mode}: a burst's first request is kicked in its call, the rest once at the tick's end`, async () => {
    const outcomes = await withScriptedDevice(
      { completion: mode, timeout: 2000 },
      async ({ dev, signal, pending }) => {
        // From idle: a lone request is kicked in its call (quietKick), the second opens the
        // burst and is kicked at once too, the rest once more at the tick's end.
        const idle = burst(dev, 8, 0, signal, pending);
        assert.deepEqual(idle.inCalls, [1, 1, 0, 0, 0, 0, 0, 0]);
        await nextTurn();
        assert.equal(dev.stats.kicks - idle.before, 3, 'the rest kicked once more');

        // A later burst, the device busy (nothing it was given has completed): 1 + 1.
        const busy = burst(dev, 5, 8, signal, pending);
        assert.deepEqual(busy.inCalls, [1, 0, 0, 0, 0]);
        await nextTurn();
        assert.equal(dev.stats.kicks - busy.before, 2);

        // A burst of one: its kick at once is all; the tick's end has nothing left to kick.
        const single = burst(dev, 1, 13, signal, pending);
        assert.deepEqual(single.inCalls, [1]);
        await nextTurn();
        assert.equal(dev.stats.kicks - single.before, 1);

        // Requests made in microtasks of one tick are one burst: the first kicked at once, the
        // rest once at the tick's end.
        const before = dev.stats.kicks;
        assert.equal(await burstInMicrotasks(dev, 14, signal, pending), 1);
        await nextTurn();
        assert.equal(dev.stats.kicks - before, 2);
        // No kick ahead: nothing completed, so no drain found the device about to be idle.
        assert.equal(dev.stats.kicksAhead, 0);
      },
    );
    // Only when everything above passed: a failed device would reject them otherwise.
    assert.equal(outcomes.length, 17);
    for (const o of outcomes) {
      assert.equal(o.status, 'rejected');
      assert.ok(o.reason instanceof AbortError, String(o.reason));
    }
  });
}
