import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  DisconnectedError,
  openBlockDevice,
  QueueBrokenError,
  type BlockDevice,
} from '../../src/index.js';
import type { BlockServerFaults } from '../../src/backend/index.js';
import { startEmbedded, type Embedded } from '../helpers/embedded-backend.js';

const SIZE = 4 * 1024 * 1024;

async function withFault(
  faults: BlockServerFaults,
  body: (backend: Embedded) => Promise<void>,
): Promise<void> {
  const backend = await startEmbedded({ size: SIZE, faults });
  try {
    await body(backend);
  } finally {
    await backend.stop();
  }
}

for (const [fault, code] of [
  ['wrongReplyCode', 'VHOST_USER_ERR_PROTOCOL'],
  ['wrongReplySize', 'VHOST_USER_ERR_PROTOCOL'],
  ['truncatedReply', 'VHOST_USER_ERR_TIMEOUT'],
] as const) {
  for (const request of ['VHOST_USER_GET_FEATURES', 'VHOST_USER_GET_CONFIG']) {
    test(`${fault} on ${request} fails open with ${code}`, async () => {
      await withFault({ [fault]: request }, async (backend) => {
        const started = Date.now();
        await assert.rejects(openBlockDevice(backend.socketPath, { timeout: 300 }), { code });
        assert.ok(Date.now() - started < 1500);
      });
    });
  }
}

/**
 * Starts `count` reads at once (the fault fires among them) and records how each settled, and how
 * long after the submission: the latest settlement bounds the time from the fault to every pending
 * request learning about it.
 */
async function readsSettling(
  dev: BlockDevice,
  count: number,
): Promise<{ ok: number; errors: unknown[]; latestMs: number }> {
  const submitted = performance.now();
  let latest = 0;
  const results = await Promise.allSettled(
    Array.from({ length: count }, (_, i) =>
      dev.read(i * 4096, 4096).finally(() => {
        latest = Math.max(latest, performance.now() - submitted);
      }),
    ),
  );
  const errors = results.flatMap((r) => (r.status === 'rejected' ? [r.reason as unknown] : []));
  return { ok: results.length - errors.length, errors, latestMs: latest };
}

/** Every error is exactly `type` with `code`. */
function assertAll(errors: unknown[], type: new (...args: never[]) => Error, code: string): void {
  for (const err of errors) {
    assert.ok(err instanceof type, `${String(err)} is not a ${type.name}`);
    assert.equal((err as { code?: unknown }).code, code);
  }
}

test('ioErrorEvery: every third request is a DeviceIoError, the rest succeed', async () => {
  await withFault({ ioErrorEvery: 3 }, async (backend) => {
    const dev = await openBlockDevice(backend.socketPath);
    try {
      const outcomes: string[] = [];
      for (let i = 0; i < 9; i++) {
        outcomes.push(
          await dev.read(i * 512, 512).then(
            () => 'ok',
            (err: { code: string }) => err.code,
          ),
        );
      }
      assert.deepEqual(outcomes, [
        ...['ok', 'ok', 'VHOST_USER_ERR_IO'],
        ...['ok', 'ok', 'VHOST_USER_ERR_IO'],
        ...['ok', 'ok', 'VHOST_USER_ERR_IO'],
      ]);
    } finally {
      await dev.close();
    }
  });
});

test('dropConnectionAfterRequests: pending requests fail with DisconnectedError at once', async () => {
  await withFault({ dropConnectionAfterRequests: 5 }, async (backend) => {
    const dev = await openBlockDevice(backend.socketPath);
    dev.on('error', () => {});
    try {
      const { ok, errors, latestMs } = await readsSettling(dev, 32);
      // At most the first five complete (the frontend may see the hang-up before their interrupt).
      assert.ok(ok <= 5, `${ok} reads succeeded`);
      assert.equal(errors.length, 32 - ok);
      assertAll(errors, DisconnectedError, 'VHOST_USER_ERR_DISCONNECTED');
      // The drop comes 10 ms after the fifth completion, so all of this is fault -> settlement.
      assert.ok(
        latestMs < 1000,
        `the last read settled ${latestMs.toFixed(0)} ms after submission`,
      );
    } finally {
      await dev.close();
    }
    // The child reports on its stdout, which may lag the socket by a moment.
    for (let i = 0; i < 100 && !backend.events.some((e) => e.startsWith('disconnect')); i++) {
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    assert.ok(
      backend.events.some((e) => e.startsWith('disconnect')),
      backend.events.join(', '),
    );
  });
});

test('delayCompletionsMs: completions are held, then arrive; a short timeout fires', async () => {
  await withFault({ delayCompletionsMs: 200 }, async (backend) => {
    const dev = await openBlockDevice(backend.socketPath, { requestTimeout: 1000 });
    try {
      const started = Date.now();
      await dev.write(Buffer.alloc(4096, 7), 0);
      assert.ok(Date.now() - started >= 190, 'completion was not delayed');
      await assert.rejects(dev.read(0, 4096, { timeout: 50 }), { code: 'VHOST_USER_ERR_TIMEOUT' });
      assert.ok((await dev.read(0, 4096)).every((b) => b === 7));
    } finally {
      await dev.close();
    }
  });
});

test('requestTimeout: the device-wide deadline fires, neither early nor long after', async () => {
  await withFault({ delayCompletionsMs: 1500 }, async (backend) => {
    const dev = await openBlockDevice(backend.socketPath, { requestTimeout: 300 });
    try {
      const started = performance.now();
      await assert.rejects(dev.read(0, 4096), { code: 'VHOST_USER_ERR_TIMEOUT' });
      const elapsed = performance.now() - started;
      assert.ok(elapsed >= 300, `timed out after ${elapsed.toFixed(0)} ms, before 300`);
      // Due by 800 ms (two watchdog intervals late at most); the rest is slack for a loaded
      // machine's timers. Completions come at 1500 ms, so a deadline that never fired fails too.
      assert.ok(elapsed < 1400, `timed out after ${elapsed.toFixed(0)} ms`);
    } finally {
      await dev.close();
    }
  });
});

test('requestTimeout does not apply to a call with its own, longer timeout', async () => {
  await withFault({ delayCompletionsMs: 1000 }, async (backend) => {
    const dev = await openBlockDevice(backend.socketPath, { requestTimeout: 300 });
    try {
      assert.equal((await dev.read(0, 4096, { timeout: 3000 })).length, 4096);
    } finally {
      await dev.close();
    }
  });
});

/**
 * With completions held 400 ms and a 700 ms timeout: the reads `before` leaves running and one
 * made right after it all succeed, so no deadline came early.
 */
async function expectWholeTimeout(
  before: (dev: BlockDevice) => Promise<Promise<unknown>[]>,
): Promise<void> {
  await withFault({ delayCompletionsMs: 400 }, async (backend) => {
    const dev = await openBlockDevice(backend.socketPath, { requestTimeout: 700 });
    try {
      const running = await before(dev);
      const started = performance.now();
      await Promise.all([...running, dev.read(4096, 4096)]);
      assert.ok(performance.now() - started >= 390, 'completion was not delayed');
    } finally {
      await dev.close();
    }
  });
}

test('requestTimeout 0: no call times out, and close() waits for what is in flight', async () => {
  await withFault({ delayCompletionsMs: 700 }, async (backend) => {
    const dev = await openBlockDevice(backend.socketPath, { requestTimeout: 0 });
    try {
      const read = dev.read(0, 4096);
      await new Promise((resolve) => setTimeout(resolve, 50)); // the request is in flight
      const close = dev.close();
      assert.equal((await read).length, 4096);
      await close;
    } finally {
      await dev.close(); // idempotent
    }
  });
});

test('requestTimeout: a call after an idle spell gets its whole timeout', () =>
  // The watchdog stops while nothing waits; a call must not count from a stale start.
  expectWholeTimeout(async (dev) => {
    await dev.read(0, 4096);
    await new Promise((resolve) => setTimeout(resolve, 1500));
    return [];
  }));

test('requestTimeout: a call made right after the event loop was blocked gets its whole timeout', () =>
  expectWholeTimeout(async (dev) => {
    const first = dev.read(0, 4096); // the watchdog runs from here
    const until = performance.now() + 1500;
    while (performance.now() < until); // no watchdog run can happen meanwhile
    return [first];
  }));

for (const fault of ['badUsedIdAfter', 'badUsedLenAfter', 'duplicateUsedAfter'] as const) {
  test(`${fault}: QueueBrokenError, and every pending request settles within 1 s`, async () => {
    await withFault({ [fault]: 3 }, async (backend) => {
      const dev = await openBlockDevice(backend.socketPath);
      dev.on('error', () => {});
      try {
        for (let i = 0; i < 3; i++) await dev.read(0, 512);
        // The fourth request, the first of these, gets the bad used element.
        const { ok, errors, latestMs } = await readsSettling(dev, 16);
        // A duplicate follows a valid element, which the frontend may drain before the copy lands.
        assert.ok(ok <= (fault === 'duplicateUsedAfter' ? 1 : 0), `${ok} reads succeeded`);
        assert.equal(errors.length, 16 - ok);
        assertAll(errors, QueueBrokenError, 'VHOST_USER_ERR_QUEUE_BROKEN');
        assert.ok(
          latestMs < 1000,
          `the last read settled ${latestMs.toFixed(0)} ms after submission`,
        );
      } finally {
        await dev.close();
      }
    });
  });
}
