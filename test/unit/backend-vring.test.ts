/**
 * The notifier guards behind the SET_VRING_* eventfd check: a kick or call fd that fails at run
 * time breaks the queue through the host, never throws into the event loop.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, openSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { native } from '../../src/native.js';
import { isEventfd, Vring } from '../../src/backend/vring.js';
import { RequestPump } from '../../src/backend/request-pump.js';
import { FaultPlan } from '../../src/backend/faults.js';
import { newServerStats } from '../../src/backend/stats.js';
import type { BlkDevice } from '../../src/backend/blk-device.js';
import type { DeviceQueue } from '../../src/backend/device-queue.js';

let dir: string;

before(() => {
  dir = mkdtempSync(join(tmpdir(), 'vhost-user-vring-unit-'));
});

after(() => {
  rmSync(dir, { recursive: true, force: true });
});

test('isEventfd tells eventfds from FIFOs, files and memfds', () => {
  const efd = native.eventfd();
  const mfd = native.memfdCreate('not-an-eventfd', 0);
  const devNull = openSync('/dev/null', 'r');
  try {
    assert.equal(isEventfd(efd), true);
    assert.equal(isEventfd(mfd), false);
    assert.equal(isEventfd(devNull), false);
  } finally {
    for (const fd of [efd, mfd, devNull]) native.close(fd);
  }
});

test('a kick fd that cannot be read as an eventfd stops its watch and reports, no throw', async () => {
  const fifo = join(dir, 'kick-fifo');
  execFileSync('mkfifo', [fifo]);
  const fd = openSync(fifo, 'r+');
  const ring = new Vring(0);
  const reasons: string[] = [];
  ring.setKick(
    fd,
    () => assert.fail('not a kick'),
    (reason) => reasons.push(reason),
  );
  writeFileSync(fifo, 'abc'); // 3 bytes: a read of 8 fails with EINVAL
  for (let i = 0; i < 100 && reasons.length === 0; i++) {
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  assert.equal(reasons.length, 1);
  assert.match(reasons[0]!, /^kick fd: /);
  // Watch stopped and fd closed: closing the ring does not touch it again.
  await new Promise((resolve) => setTimeout(resolve, 50));
  assert.equal(reasons.length, 1);
  ring.close();
});

test('a call fd that cannot be written reports notifierFailed instead of throwing', () => {
  const ring = new Vring(0);
  ring.setCall(openSync('/dev/null', 'r')); // write: EBADF
  // Just enough of a queue for one interrupt decision.
  const queue = {
    broken: undefined,
    pop: () => undefined,
    enableKicks: () => false,
    needsInterrupt: () => true,
  } as unknown as DeviceQueue;
  ring.queue = queue;
  const failed: string[] = [];
  const stats = newServerStats();
  const pump = new RequestPump(
    {
      rings: [ring],
      polling: false,
      isRunning: () => true,
      drop: () => assert.fail('no drop'),
      queueBroken: () => assert.fail('not broken by the driver'),
      notifierFailed: (_ring, reason) => failed.push(reason),
      internalError: (err) => assert.fail(String(err)),
    },
    {} as BlkDevice,
    new FaultPlan({}),
    stats,
  );
  assert.doesNotThrow(() => pump.process(ring));
  assert.equal(failed.length, 1);
  assert.match(failed[0]!, /^call fd: write: /);
  assert.equal(stats.callsSent, 0);
  pump.stop();
  ring.close();
});
