/**
 * Kicks made outside a burst's own calls and tick, counted exactly: by a drain that puts chains
 * on the ring itself (a virtio-scsi retry that waited for descriptors), by a blocking wait (a
 * kick that fails there), and at the end of a strategy's callback (a polling turn's run of looks,
 * a call eventfd's wake-up) whose continuations made a burst (kickPending, settleInBurst). Where requests
 * must complete, the peer is the embedded backend in this process with EVENT_IDX left out: it
 * never sets VRING_USED_F_NO_NOTIFY unless polling, so every kick the frontend decides on is
 * made, and it cannot run between the frontend's synchronous steps. Where nothing may complete,
 * the peer is the scripted backend (burst-kicks.test.ts).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, openSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { setImmediate as nextTurn } from 'node:timers/promises';
import {
  openBlockDevice,
  openScsiDevice,
  SystemError,
  type BlockDevice,
  type OpenOptions,
  type ScsiOpenOptions,
} from '../../src/index.js';
import { COMPLETION_MODES } from '../../src/completion/index.js';
import { burst } from '../helpers/burst.js';
import { withServer } from '../helpers/in-process-server.js';
import { withScriptedDevice } from '../helpers/scripted-device.js';

const MiB = 1024 * 1024;

/** Resolves to the device's kick count when the next process.nextTick callback runs. */
function kicksAtNextTick(dev: BlockDevice): Promise<number> {
  return new Promise((resolve) => process.nextTick(() => resolve(dev.stats.kicks)));
}

// ---- 1. a drain kicks the chains it put on the ring itself ----

/** Ring of 4 without indirect descriptors: one 3-descriptor command at a time. */
const SCSI_OPTIONS: ScsiOpenOptions = {
  queueSize: 4,
  disableFeatures: { eventIdx: true, indirect: true },
  completionOptions: { kickAhead: false },
};

/** How many requests the backend takes while the device opens (identification). */
async function requestsToOpen(): Promise<number> {
  let taken = -1;
  await withServer({ type: 'scsi', size: 1 * MiB }, async (socketPath, server) => {
    const dev = await openScsiDevice(socketPath, SCSI_OPTIONS);
    taken = server.stats.requests;
    await dev.close();
  });
  return taken;
}

for (const mode of COMPLETION_MODES) {
  test(`${mode}: a virtio-scsi retry that waited for descriptors is kicked by the drain that puts it on the ring`, async () => {
    const opened = await requestsToOpen();
    assert.ok(opened >= 2, `${opened} requests to open`);
    // The first read (A) meets BUSY and waits 1 ms to be retried; the second (B), which went on
    // the ring in A's place meanwhile, is held 20 ms; the retry then waits for B's descriptors.
    // (Should A's backoff pass within the drain that took A, that drain puts the retry on the
    // ring and B waits instead: three kicks by B's continuation all the same.)
    const faults = { scsiBusyEvery: opened + 1, delayEvery: opened + 2, delayCompletionsMs: 20 };
    await withServer({ type: 'scsi', size: 1 * MiB, faults }, async (socketPath, server) => {
      const dev = await openScsiDevice(socketPath, { ...SCSI_OPTIONS, completion: mode });
      let failed = true;
      try {
        const before = dev.stats.kicks;
        const a = dev.read(0, 512);
        const b = dev.read(512, 512);
        await b;
        // B's continuation runs right after the drain that took B and put A's retry on the ring
        // (no timer runs in between): A's kick was made in that drain. Before, it was made by the
        // retry timer (armed again every ~1 ms while A waited), after this point.
        assert.equal(dev.stats.retries, 1);
        assert.equal(
          dev.stats.kicks - before,
          3,
          "A's kick in its call, B's when it went on the ring, the retry's in the drain",
        );
        await a;
        assert.equal(dev.stats.kicks - before, 3, 'no kick after the drain');
        assert.equal(server.stats.requests, opened + 3);
        failed = false;
      } finally {
        await dev.close().catch((err: unknown) => {
          if (!failed) throw err;
        });
      }
    });
  });
}

// ---- 2. a kick that fails inside a blocking wait fails the device at once ----

/** The eventfds this process holds, with their counters (/proc/self/fdinfo). */
function eventfdCounters(): Map<number, number> {
  const counters = new Map<number, number>();
  for (const name of readdirSync('/proc/self/fd')) {
    const fd = Number(name);
    let target: string;
    let info: string;
    try {
      target = readlinkSync(`/proc/self/fd/${name}`);
      if (target !== 'anon_inode:[eventfd]') continue;
      info = readFileSync(`/proc/self/fdinfo/${name}`, 'utf8');
    } catch {
      continue; // closed meanwhile (the directory's own fd, say)
    }
    const count = /^eventfd-count:\s*([0-9a-f]+)$/m.exec(info);
    if (count !== null) counters.set(fd, parseInt(count[1]!, 16));
  }
  return counters;
}

/**
 * Puts /dev/null, opened read-only, at `fd`'s number: a write to it then fails (EBADF), and the
 * device's own close of the number at teardown still closes an open fd. (The kernel gives out
 * the lowest free number: the ones below it that were free are taken and handed back.)
 */
function makeUnwritable(fd: number): void {
  closeSync(fd);
  const lower: number[] = [];
  try {
    for (let i = 0; i <= fd; i++) {
      const got = openSync('/dev/null', 'r');
      if (got === fd) return;
      lower.push(got);
    }
    throw new Error(`fd ${fd} was not given out again`);
  } finally {
    for (const other of lower) closeSync(other);
  }
}

// The blocking call's request joins a burst two async reads opened, whose kick (at the tick's
// end) no tick will make: its wait kicks it. Or, after one read kicked in its call, the call's own
// submission opens a burst and is kicked at once, outside the wait: that kick fails where failing
// the device must wait for a tick, and the wait must act on it.
const KICK_FAILS = [
  { where: 'in the wait', reads: 2 },
  { where: "in the call's submission", reads: 1 },
] as const;

for (const mode of COMPLETION_MODES) {
  for (const { where, reads } of KICK_FAILS) {
    test(`${mode}: a kick that fails ${where} of a blocking call fails the device at once; the call throws its typed error`, async () => {
      let thrown: unknown;
      const outcomes = await withScriptedDevice(
        { completion: mode, timeout: 2000 },
        ({ dev, signal, pending }) => {
          const errors: Error[] = [];
          dev.on('error', (err) => errors.push(err));
          // The first read is kicked in its call; a second opens a burst (kicked at once).
          const counters = eventfdCounters();
          const kicks = dev.stats.kicks;
          for (let i = 0; i < reads; i++) pending.push(dev.read(512 * i, 512, { signal }));
          assert.equal(dev.stats.kicks - kicks, reads);
          // The device's kick eventfd is the one those kicks were written to (the backend never
          // reads it: node:net dropped it).
          const kickFds = [...eventfdCounters()]
            .filter(([fd, count]) => count - (counters.get(fd) ?? count) === reads)
            .map(([fd]) => fd);
          assert.equal(kickFds.length, 1, `kick eventfd candidates: ${kickFds.join(', ')}`);
          makeUnwritable(kickFds[0]!);

          // Without the failure at once, the call would wait for its timeout (no tick runs in
          // the wait to fail the device) and throw TimeoutError; without a timeout, for good.
          try {
            dev.readSync(Buffer.alloc(512), 1024, { timeout: 5000 });
          } catch (err) {
            thrown = err;
          }
          assert.ok(thrown instanceof SystemError, `readSync threw ${String(thrown)}`);
          assert.equal(thrown.code, 'VHOST_USER_ERR_SYSTEM');
          assert.equal(thrown.errno, 'EBADF');
          assert.equal(thrown.syscall, 'write');
          // The device failed with it, at once: closed, told once, later calls refused with it.
          assert.equal(dev.closed, true);
          assert.equal(errors.length, 1);
          assert.equal(errors[0], thrown);
          assert.throws(
            () => dev.readSync(Buffer.alloc(512), 0),
            (err: unknown) => err === thrown,
          );
          // (Settled already when the device failed: the cleanup's abort then changes nothing.)
        },
      );
      // The async reads were failed with it too.
      assert.equal(outcomes.length, reads);
      for (const o of outcomes) {
        assert.equal(o.status, 'rejected');
        assert.equal(o.reason, thrown);
      }
    });
  }
}

for (const mode of COMPLETION_MODES) {
  test(`${mode}: a kick that fails outside a blocking call fails the device at the next tick, once, with its typed error`, async () => {
    const errors: Error[] = [];
    let closedInCall = true;
    const outcomes = await withScriptedDevice(
      { completion: mode, timeout: 2000 },
      async ({ dev, signal, pending }) => {
        dev.on('error', (err) => errors.push(err));
        // The first read is kicked in its call: its kick eventfd is the one that counted it.
        const counters = eventfdCounters();
        // Rejected at the failure, before the helper's cleanup settles them: handled from now.
        const track = (read: Promise<Buffer>): void => {
          read.catch(() => undefined);
          pending.push(read);
        };
        track(dev.read(0, 512, { signal }));
        const kickFds = [...eventfdCounters()]
          .filter(([fd, count]) => count - (counters.get(fd) ?? count) === 1)
          .map(([fd]) => fd);
        assert.equal(kickFds.length, 1, `kick eventfd candidates: ${kickFds.join(', ')}`);
        makeUnwritable(kickFds[0]!);
        await nextTurn();
        // The second (the device busy) opens a burst and is kicked at once: that kick fails, in
        // the call, where failing the device (unmapping its rings) waits for the next tick.
        track(dev.read(512, 512, { signal }));
        track(dev.read(1024, 512, { signal }));
        closedInCall = dev.closed;
        await nextTurn();
        assert.equal(dev.closed, true);
      },
    );
    assert.equal(closedInCall, false, 'failed inside the call');
    assert.equal(errors.length, 1);
    const [error] = errors;
    assert.ok(error instanceof SystemError, String(error));
    assert.equal(error.errno, 'EBADF');
    assert.equal(error.syscall, 'write');
    // Every read was failed with it, the one already in flight too.
    assert.equal(outcomes.length, 3);
    for (const o of outcomes) {
      assert.equal(o.status, 'rejected');
      assert.equal(o.reason, error);
    }
  });
}

// ---- 3. kickPending: a polling turn's run of looks kicks the rest of a burst at its end ----

/**
 * A device on the in-process backend without EVENT_IDX (every kick decided is made) for `body`,
 * with a signal and a list for the requests it leaves pending (aborted and awaited after).
 */
async function withExactKicks(
  options: Omit<OpenOptions, 'disableFeatures'>,
  body: (dev: BlockDevice, signal: AbortSignal, pending: Promise<unknown>[]) => Promise<void>,
): Promise<void> {
  await withServer({ size: 1 * MiB }, async (socketPath) => {
    const dev = await openBlockDevice(socketPath, {
      ...options,
      disableFeatures: { eventIdx: true },
    });
    const abort = new AbortController();
    const pending: Promise<unknown>[] = [];
    let failed = true;
    try {
      await body(dev, abort.signal, pending);
      failed = false;
    } finally {
      abort.abort();
      await Promise.allSettled(pending);
      await dev.close().catch((err: unknown) => {
        if (!failed) throw err;
      });
    }
  });
}

// Not against the scripted backend: a run of looks follows a polling turn that settled
// everything in flight, and that backend completes nothing. Only 'poll': 'adaptive' may block
// for a completion, which an interrupt then delivers outside any turn. Against a backend on this
// thread, kickPending and the turn's endBurst (settleInBurst) kick at the same point, before any
// tick, so this holds either way: what it shows is that no burst of a run waits for a tick.

test("poll: a burst made in a polling turn's run of looks has its rest kicked when the continuations return, not at a tick", async () => {
  const options: OpenOptions = { completion: 'poll', completionOptions: { kickAhead: false } };
  await withExactKicks(options, async (dev, signal, pending) => {
    // [burst size, kicks in each call, kicks when the turn returns (before any tick)]
    const cases: [number, number[], number][] = [
      // A lone request: kicked in its call (quietKick), nothing pending for kickPending.
      [1, [1], 1],
      // The second opens the burst and is kicked at once: nothing pending either.
      [2, [1, 1], 2],
      // The rest of the burst, one kick when the continuations return, before any tick.
      [3, [1, 1, 0], 3],
      [6, [1, 1, 0, 0, 0, 0], 3],
    ];
    for (const [count, inCalls, atTurnEnd] of cases) {
      // A lone read, drained alone by a polling turn (the backend in this thread cannot answer
      // within a turn's spin): what follows runs in that turn's run of looks, whose
      // process.nextTick callbacks wait for the turn to return.
      await dev.read(0, 512);
      const kicksAtTick = kicksAtNextTick(dev); // runs once the turn has returned
      const made = burst(dev, count, 1, signal, pending);
      assert.deepEqual(made.inCalls, inCalls, `burst of ${count}: kicks in the calls`);
      assert.equal(
        (await kicksAtTick) - made.before,
        atTurnEnd,
        `burst of ${count}: kicks when the turn returned`,
      );
      await nextTurn();
      assert.equal(dev.stats.kicks - made.before, atTurnEnd, `burst of ${count}: no kick later`);
      await Promise.all(pending.splice(0));
    }
  });
});

// ---- 4. settleInBurst: a burst made by the continuations of a strategy's callback ----

/**
 * Called in the continuation of a read a call eventfd's callback settled: a burst of `count`
 * reads has its first kicked in its call (a drain of one is no burst), the second at once (it
 * opens the burst), the rest once, at the callback's end: before any tick, and none later.
 */
async function expectBurstKickedAtCallbackEnd(
  dev: BlockDevice,
  count: number,
  signal: AbortSignal,
  pending: Promise<unknown>[],
): Promise<void> {
  const kicksAtTick = kicksAtNextTick(dev); // runs once the callback has returned
  const made = burst(dev, count, 1, signal, pending);
  const expected = Math.min(count, 3);
  assert.deepEqual(made.inCalls, [1, 1, 0, 0, 0, 0].slice(0, count), `burst of ${count}`);
  assert.equal((await kicksAtTick) - made.before, expected, `burst of ${count}: at its end`);
  await nextTurn();
  assert.equal(dev.stats.kicks - made.before, expected, `burst of ${count}: none later`);
  await Promise.all(pending.splice(0));
}

test("event: a burst made by the continuations of a wake-up has its rest kicked at the callback's end, not at a process.nextTick", async () => {
  await withExactKicks({ completion: 'event' }, async (dev, signal, pending) => {
    for (const count of [1, 2, 3, 6]) {
      // Settled by the call eventfd's callback: what follows is its continuation, run inside it.
      await dev.read(0, 512);
      await expectBurstKickedAtCallbackEnd(dev, count, signal, pending);
    }
  });
});

test("adaptive: a burst made by the continuations of a call eventfd's wake-up has its rest kicked at the callback's end, not at a process.nextTick", async () => {
  // Spins too short to see the answer of a backend on this thread: the engine blocks, and the
  // call eventfd's callback drains and runs the continuations (settleInBurst).
  const options: OpenOptions = {
    completion: 'adaptive',
    completionOptions: { kickAhead: false, adaptive: { maxSpinNs: 1000 } },
  };
  await withExactKicks(options, async (dev, signal, pending) => {
    for (const count of [1, 2, 3, 6]) {
      // A turn's spin may still find a completion (the backend answered in the same loop
      // iteration): then the read is settled by that turn, not a wake-up. Try until a wake-up.
      let woken = false;
      for (let attempt = 0; attempt < 50 && !woken; attempt++) {
        const calls = dev.stats.calls;
        await dev.read(0, 512);
        woken = dev.stats.calls > calls;
        if (woken) await expectBurstKickedAtCallbackEnd(dev, count, signal, pending);
      }
      assert.ok(woken, `burst of ${count}: no read was settled by a wake-up in 50`);
    }
  });
});
