/**
 * Bad input from a caller or a backend gets a clear, typed error, and nothing hangs: cases found
 * by hunting around blocking waits, teardown and argument checks. Peers: the embedded backend
 * (in this process where nothing must complete during a blocking wait, in a child process where
 * something must) and the scripted backend (never answers virtio requests).
 */
import { spawn } from 'node:child_process';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { constants as bufferConstants } from 'node:buffer';
import {
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  truncateSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  DisconnectedError,
  InvalidArgumentError,
  openBlockDevice,
  openScsiDevice,
  QueueBrokenError,
  TimeoutError,
} from '../../src/index.js';
import { native } from '../../src/native.js';
import { VhostUserRequest } from '../../src/protocol/messages.js';
import { startEmbedded } from '../helpers/embedded-backend.js';
import { startScriptedBackend } from '../helpers/scripted-backend.js';
import { withServer } from '../helpers/in-process-server.js';
import { within } from '../helpers/within.js';

/** This process's eventfds by kernel id (a dup shares its id), each with one fd number. */
function eventfdsById(): Map<number, number> {
  const byId = new Map<number, number>();
  for (const name of readdirSync('/proc/self/fd')) {
    try {
      if (readlinkSync(`/proc/self/fd/${name}`) !== 'anon_inode:[eventfd]') continue;
      const id = /^eventfd-id:\s*(\d+)$/m.exec(readFileSync(`/proc/self/fdinfo/${name}`, 'utf8'));
      if (id !== null && !byId.has(Number(id[1]))) byId.set(Number(id[1]), Number(name));
    } catch {
      // closed meanwhile (the directory's own fd, say)
    }
  }
  return byId;
}

// ---- blocking waits ----

for (const type of ['blk', 'scsi'] as const) {
  // A blocking wait sleeps on every queue's call and error eventfds and the socket: 33 fds for
  // 16 virtio-blk queues, 33 for 14 virtio-scsi request queues (plus control and event).
  const queues = type === 'blk' ? 16 : 14;
  test(`${type}: blocking calls work on a device with ${queues} queues (more than 31 fds to wait on)`, async () => {
    const backend = await startEmbedded({ type, queues, fileSize: 1024 * 1024 });
    try {
      const open = type === 'blk' ? openBlockDevice : openScsiDevice;
      const dev = await open(backend.socketPath, { queues });
      try {
        const data = Buffer.alloc(4096, 0x5a);
        // Every queue once: requests are spread round-robin.
        for (let i = 0; i < queues; i++) {
          assert.equal(dev.writeSync(data, i * 4096, { timeout: 5000 }), 4096);
          const back = Buffer.alloc(4096);
          assert.equal(dev.readSync(back, i * 4096, { timeout: 5000 }), 4096);
          assert.deepEqual(back, data);
        }
      } finally {
        await dev.close();
      }
    } finally {
      await backend.stop();
    }
  });
}

test("blk, 32 queues: a blocking call's wake-up on a call eventfd past the wait mask's last bit is read and counted", async () => {
  // Call eventfds 30 and 31 share the mask's last bit with the error eventfds and the socket.
  // Each completion is held 20 ms, so every call sleeps and is woken by its queue's eventfd: an
  // eventfd the wait did not read would leave poll(2) returning at once (a busy loop), uncounted.
  const queues = 32;
  const backend = await startEmbedded({
    queues,
    fileSize: 1024 * 1024,
    faults: { delayCompletionsMs: 20 },
  });
  try {
    const dev = await openBlockDevice(backend.socketPath, { queues, completion: 'event' });
    try {
      const back = Buffer.alloc(4096);
      // Requests are spread round-robin: the i-th goes to queue i.
      for (let i = 0; i < queues; i++) {
        const calls = dev.stats.calls;
        assert.equal(dev.readSync(back, i * 4096, { timeout: 5000 }), 4096);
        assert.ok(dev.stats.calls > calls, `queue ${i}: the wake-up was not read`);
      }
    } finally {
      await dev.close();
    }
  } finally {
    await backend.stop();
  }
});

test('blk: a backend dying during a blocking wait with 16 queues (its socket past the last bit of the mask) is a DisconnectedError at once', async () => {
  const backend = await startEmbedded({
    queues: 16,
    size: 1024 * 1024,
    faults: { delayCompletionsMs: 30_000 },
  });
  try {
    const dev = await openBlockDevice(backend.socketPath, { queues: 16 });
    dev.on('error', () => {});
    try {
      // Killed while the read waits (a blocking call lets no timer of this process run).
      spawn('sh', ['-c', `sleep 0.2; kill -9 ${backend.process.pid}`], { stdio: 'ignore' });
      const started = Date.now();
      assert.throws(
        () => dev.readSync(Buffer.alloc(512), 0, { timeout: 10_000 }),
        DisconnectedError,
      );
      assert.ok(Date.now() - started < 5000, `threw after ${Date.now() - started} ms`);
      assert.ok(dev.closed);
    } finally {
      await dev.close();
    }
  } finally {
    await backend.stop();
  }
});

test('two queues signalling an error in the same wake: the blocking call throws QueueBrokenError', () =>
  withServer({ size: 1024 * 1024, queues: 2 }, async (socketPath) => {
    const before = eventfdsById();
    const dev = await openBlockDevice(socketPath, { queues: 2 });
    try {
      // The device's eventfds, in the order it made them: kick, call, error per ring.
      const made = [...eventfdsById()]
        .filter(([id]) => !before.has(id))
        .sort((a, b) => a[0] - b[0]);
      assert.equal(made.length, 6);
      // Both error eventfds are readable when the blocking wait first sleeps (the backend in
      // this process cannot answer the read meanwhile): the first fails the device, which
      // closes every fd, the second must not be read after that.
      native.eventfdWrite(made[2]![1]);
      native.eventfdWrite(made[5]![1]);
      assert.throws(() => dev.readSync(Buffer.alloc(512), 0, { timeout: 5000 }), QueueBrokenError);
      assert.ok(dev.closed);
    } finally {
      await dev.close();
    }
  }));

// ---- close ----

test('a backend hanging up at close (GET_VRING_BASE) is no failure: one close event, no error event', async () => {
  const backend = await startScriptedBackend((request) =>
    request === VhostUserRequest.VHOST_USER_GET_VRING_BASE
      ? { kind: 'close' }
      : { kind: 'default' },
  );
  try {
    const dev = await openBlockDevice(backend.socketPath);
    const events: string[] = [];
    dev.on('error', (err) => events.push(`error: ${err.message}`));
    dev.on('close', () => events.push('close'));
    await within(dev.close(), 5000, 'close');
    // Anything the hang-up would still report arrives within a few turns.
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.deepEqual(events, ['close']);
    assert.ok(dev.closed);
  } finally {
    await backend.stop();
  }
});

test('close() waits for the calls still awaited, not for a request a timeout already answered', async () => {
  // Every second request is held 5 s: the first read is not, the second is (its caller gives up
  // after 50 ms), the third completes at once. close(), called with the third still awaited,
  // waits for it alone.
  const faults = { delayEvery: 2, delayCompletionsMs: 5000 };
  await withServer({ size: 1024 * 1024, faults }, async (socketPath, server) => {
    const dev = await openBlockDevice(socketPath);
    let closing: Promise<void> | undefined;
    try {
      const opened = server.stats.requests;
      await dev.read(0, 512);
      assert.equal(server.stats.requests, opened + 1);
      assert.equal(opened % 2, 0, 'the held read is the second after open');
      await assert.rejects(dev.read(0, 512, { timeout: 50 }), TimeoutError);
      const third = dev.read(512, 512);
      const started = performance.now();
      closing = dev.close({ timeout: 10_000 });
      await third;
      await within(closing, 2000, 'close');
      assert.ok(performance.now() - started < 2000);
    } finally {
      // Before, close waited for the held read (5 s): let it end before the server closes.
      await closing?.catch(() => undefined);
    }
  });
});

test('close() stops every ring within one handshake timeout, however slowly each answers', async () => {
  // Each GET_VRING_BASE is answered just within the 200 ms timeout: ring by ring, eight of them
  // held close() for 8 x 150 ms.
  const backend = await startScriptedBackend(
    (request) =>
      request === VhostUserRequest.VHOST_USER_GET_VRING_BASE
        ? { kind: 'delay', ms: 150 }
        : { kind: 'default' },
    { queues: 8 },
  );
  try {
    const dev = await openBlockDevice(backend.socketPath, { queues: 8, timeout: 200 });
    const started = performance.now();
    await within(dev.close(), 5000, 'close');
    const took = performance.now() - started;
    assert.ok(took < 500, `close took ${took.toFixed(0)} ms`);
    assert.ok(dev.closed);
    const stops = backend.received.filter((name) => name === 'VHOST_USER_GET_VRING_BASE');
    assert.ok(stops.length >= 1 && stops.length < 8, `${stops.length} rings asked to stop`);
  } finally {
    await backend.stop();
  }
});

test('close() with bad options rejects with InvalidArgumentError (no throw); null is no options', async () => {
  const backend = await startScriptedBackend();
  try {
    const dev = await openBlockDevice(backend.socketPath);
    let closing: Promise<void> | undefined;
    assert.doesNotThrow(() => {
      closing = dev.close({ timeout: -1 });
    });
    await assert.rejects(closing!, InvalidArgumentError);
    assert.ok(!dev.closed);
    await within(dev.close(null as unknown as undefined), 5000, 'close(null)');
    assert.ok(dev.closed);
  } finally {
    await backend.stop();
  }
});

// ---- argument checks ----

test('a timeout longer than a timer can wait is an InvalidArgumentError, not a 1 ms timeout', async () => {
  const backend = await startScriptedBackend();
  try {
    const dev = await openBlockDevice(backend.socketPath);
    try {
      const huge = 2 ** 31;
      // The scripted backend never answers: before, the read timed out after 1 ms.
      await assert.rejects(
        within(dev.read(0, 512, { timeout: huge }), 2000, 'read'),
        InvalidArgumentError,
      );
      assert.throws(
        () => dev.readSync(Buffer.alloc(512), 0, { timeout: huge }),
        InvalidArgumentError,
      );
      await assert.rejects(dev.close({ timeout: huge }), InvalidArgumentError);
      await assert.rejects(
        openBlockDevice(backend.socketPath, { timeout: huge }),
        InvalidArgumentError,
      );
      // The largest a timer takes is still fine.
      const pending = dev.read(0, 512, { timeout: 2 ** 31 - 1 });
      const outcome = await within(
        pending.then(
          () => 'resolved',
          (err: unknown) => err,
        ),
        100,
        'read',
      ).catch(() => 'pending');
      assert.equal(outcome, 'pending');
    } finally {
      await dev.close({ timeout: 100 });
    }
  } finally {
    await backend.stop();
  }
});

test('read() of more than one Buffer holds rejects with InvalidArgumentError (no throw)', async () => {
  if (bufferConstants.MAX_LENGTH >= Number.MAX_SAFE_INTEGER) {
    // Node.js 22 and later: one Buffer holds any length checkRange lets through (safe integers),
    // so the limit cannot be reached; what it would be is unit-tested (api-validate.test.ts).
    assert.ok(bufferConstants.MAX_LENGTH >= Number.MAX_SAFE_INTEGER);
    return;
  }
  // Node.js 20: 4 GiB. A sparse device larger than that, read whole past the limit.
  const length = bufferConstants.MAX_LENGTH + 4096;
  const dir = mkdtempSync(join(tmpdir(), 'vhost-user-hunt-'));
  const image = join(dir, 'big.img');
  try {
    writeFileSync(image, '');
    truncateSync(image, 2 * length);
    await withServer({ file: image }, async (socketPath) => {
      const dev = await openBlockDevice(socketPath);
      try {
        let reading: Promise<Buffer> | undefined;
        assert.doesNotThrow(() => {
          reading = dev.read(0, length);
        });
        await assert.rejects(reading!, InvalidArgumentError);
      } finally {
        await dev.close();
      }
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('freeBuffer() of something not a buffer is an InvalidArgumentError', async () => {
  const backend = await startScriptedBackend();
  try {
    const dev = await openBlockDevice(backend.socketPath);
    try {
      for (const bad of [undefined, null, 42, 'buffer', {}]) {
        assert.throws(() => dev.freeBuffer(bad as unknown as Buffer), InvalidArgumentError);
      }
    } finally {
      await dev.close();
    }
  } finally {
    await backend.stop();
  }
});

test('a signal that is not an AbortSignal rejects with InvalidArgumentError (no throw)', async () => {
  const backend = await startScriptedBackend();
  try {
    const dev = await openBlockDevice(backend.socketPath);
    try {
      for (const signal of [{}, 'abort', null, { aborted: false }]) {
        const options = { signal } as unknown as { signal: AbortSignal };
        for (const call of [
          () => dev.read(0, 512, options),
          () => dev.write(Buffer.alloc(512), 0, options),
          () => dev.flush(options),
        ]) {
          let pending: Promise<unknown> | undefined;
          assert.doesNotThrow(() => {
            pending = call();
          });
          await assert.rejects(pending!, InvalidArgumentError);
        }
      }
      // Nothing went to the device: close finds nothing in flight.
      assert.equal(dev.stats.requests, 0);
    } finally {
      await dev.close({ timeout: 100 });
    }
  } finally {
    await backend.stop();
  }
});
