/**
 * Eventfds and sockets that a peer shares with us and can turn against us. An eventfd passed over
 * the socket is the same open file for both sides, O_NONBLOCK included: the peer can make it
 * blocking whenever it likes, and fill or empty its counter. The embedded backend may then block
 * in neither read(2) nor write(2), nor the frontend in read(2): a blocked JavaScript thread serves
 * nothing again. (The frontend's kick is a plain write, for speed: see native/eventfd.cc.)
 * Whatever could hang runs in a child process, killed after a generous bound.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { native } from '../../src/native.js';
import {
  U64,
  VHOST_USER_NEED_REPLY_MASK,
  VHOST_USER_VERSION,
  encodeMemoryTable,
  encodeVringFd,
  VhostUserVringAddr,
  VhostUserVringState,
} from '../../src/protocol/messages.js';
import {
  splitRingLayout,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
} from '../../src/virtqueue/layout.js';
import { VirtioBlkType } from '../../src/devices/blk/spec.js';
import { startEmbedded } from '../helpers/embedded-backend.js';
import { withServer } from '../helpers/in-process-server.js';
import { runScript } from '../helpers/run-script.js';
import { within } from '../helpers/within.js';
import { RawFrontend, type RequestName } from '../helpers/raw-frontend.js';

const V = VHOST_USER_VERSION;
const ACK = V | VHOST_USER_NEED_REPLY_MASK;

/** The largest count an eventfd holds: a write of 1 then waits (or fails EAGAIN). */
const FULL = 0xffff_ffff_ffff_fffen;
const O_NONBLOCK = 0o4000;
const NATIVE_ENTRY = new URL('../../src/native.js', import.meta.url).href;

/**
 * Does what a hostile peer holding `fd` can do: empties the counter, sets it to `count`, and
 * clears O_NONBLOCK on the file both sides share (python3 gets the fd as its fd 3).
 */
const HOSTILE_PEER = `
import fcntl, os, sys
try:
    os.read(3, 8)
except BlockingIOError:
    pass
count = int(sys.argv[1])
if count:
    os.write(3, count.to_bytes(8, 'little'))
fcntl.fcntl(3, fcntl.F_SETFL, fcntl.fcntl(3, fcntl.F_GETFL) & ~os.O_NONBLOCK)
`;

function makeHostile(fd: number, count: bigint): void {
  const r = spawnSync('python3', ['-c', HOSTILE_PEER, count.toString()], {
    stdio: ['ignore', 'ignore', 'pipe', fd],
  });
  assert.equal(r.status, 0, `python3: ${r.error?.message ?? r.stderr.toString()}`);
}

/** An eventfd's count and whether it is non-blocking, from /proc (as the peer left them). */
function eventfdState(fd: number): { count: bigint; nonblocking: boolean } {
  const info = readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8');
  const flags = /^flags:\s+([0-7]+)$/m.exec(info);
  const count = /^eventfd-count:\s+([0-9a-f]+)$/m.exec(info);
  assert.ok(flags && count, info);
  return {
    count: BigInt(`0x${count[1]!}`),
    nonblocking: (parseInt(flags[1]!, 8) & O_NONBLOCK) !== 0,
  };
}

test('the test can make a blocking, full eventfd (what the other tests rely on)', () => {
  const fd = native.eventfd();
  try {
    assert.deepEqual(eventfdState(fd), { count: 0n, nonblocking: true });
    makeHostile(fd, FULL);
    assert.deepEqual(eventfdState(fd), { count: FULL, nonblocking: false });
  } finally {
    native.close(fd);
  }
});

/** Runs `body` (an ES module's statements, with `native` and `makeHostile` bound) in a child. */
async function inChild(body: string, ms = 20_000): Promise<string> {
  const script = `
    import { spawnSync } from 'node:child_process';
    const { native } = await import(${JSON.stringify(NATIVE_ENTRY)});
    const makeHostile = (fd, count) => {
      const r = spawnSync('python3', ['-c', ${JSON.stringify(HOSTILE_PEER)}, String(count)], {
        stdio: ['ignore', 'ignore', 'inherit', fd],
      });
      if (r.status !== 0) throw new Error('python3 failed');
    };
    ${body}
  `;
  const { code, signal, out } = await runScript(script, ms);
  assert.equal(signal, null, `the child hung (killed after ${ms} ms); it printed: ${out}`);
  assert.equal(code, 0, out);
  return out;
}

test('eventfdSignal returns at once on a blocking eventfd whose counter is full', async () => {
  const out = await inChild(`
    const fd = native.eventfd();
    makeHostile(fd, ${FULL}n);
    native.eventfdSignal(fd);
    native.eventfdSignal(fd);
    console.log('count', native.eventfdRead(fd) === 2 ** 64 - 2 ? 'full' : 'changed');
    native.eventfdSignal(fd);
    console.log('then', native.eventfdRead(fd));
  `);
  // Skipped while full (the peer is signalled already); an ordinary write once there is room.
  assert.equal(out, 'count full\nthen 1\n');
});

test('eventfdRead returns 0 at once on a blocking eventfd the peer emptied', async () => {
  // What a kick fd looks like when the frontend drained it between our poll and our read.
  const out = await inChild(`
    const fd = native.eventfd();
    makeHostile(fd, 0n);
    console.log('empty', native.eventfdRead(fd));
    native.eventfdWrite(fd);
    native.eventfdWrite(fd);
    console.log('two', native.eventfdRead(fd));
  `);
  assert.equal(out, 'empty 0\ntwo 2\n');
});

test('eventfdRead, eventfdWrite and eventfdSignal still validate their argument and report a closed fd', () => {
  assert.throws(() => native.eventfdRead(-1), { code: 'ERR_INVALID_ARG_VALUE' });
  for (const write of [native.eventfdWrite, native.eventfdSignal]) {
    assert.throws(() => write(1.5), { code: 'ERR_INVALID_ARG_VALUE' });
    assert.throws(() => write('3' as unknown as number), { code: 'ERR_INVALID_ARG_TYPE' });
  }
  const fd = native.eventfd();
  native.close(fd);
  assert.throws(() => native.eventfdRead(fd), { code: 'EBADF' });
  assert.throws(() => native.eventfdWrite(fd), { code: 'EBADF' });
  assert.throws(() => native.eventfdSignal(fd), { code: 'EBADF' });
});

/** A raw frontend on the backend's socket, whose acks must be 0 (done). */
class Peer extends RawFrontend {
  constructor(socketPath: string) {
    super(socketPath, 5000);
  }

  async ackedDone(name: RequestName, payload?: Uint8Array, fds?: number[]): Promise<void> {
    assert.equal(await this.acked(name, payload, fds), 0n, name);
  }
}

const GPA = 0x1_0000_0000;
const UVA = 0x7e00_0000_0000;
const RING_SIZE = 8;
const MEMORY = 1 << 20;
/** Where the request buffers live, past the ring. */
const BUFFERS = 64 * 1024;

/**
 * Sets up ring 0 of a virtio-blk backend over one memfd region, with the given call fd, and
 * returns how to put a 512-byte read on it and how far the backend has completed.
 */
async function startRing(peer: Peer, callFd: number, kickFd: number) {
  const features = U64.decode(await peer.ask('VHOST_USER_GET_FEATURES')).value;
  const protocol = U64.decode(await peer.ask('VHOST_USER_GET_PROTOCOL_FEATURES')).value;
  peer.tell('VHOST_USER_SET_PROTOCOL_FEATURES', U64.encode({ value: protocol }));
  peer.tell('VHOST_USER_SET_FEATURES', U64.encode({ value: features }));
  peer.tell('VHOST_USER_SET_OWNER');

  const memfd = native.memfdCreate('hostile-fds-guest', 0);
  native.ftruncate(memfd, MEMORY);
  native.memfdSeal(memfd);
  const { handle, buffer } = native.mmap(memfd, MEMORY, 0, 'shared');
  const view = new DataView(buffer);
  const layout = splitRingLayout(RING_SIZE, 0);
  const table = encodeMemoryTable([
    {
      guestPhysAddr: BigInt(GPA),
      memorySize: BigInt(MEMORY),
      userspaceAddr: BigInt(UVA),
      mmapOffset: 0n,
    },
  ]);
  const state = (num: number): Uint8Array => VhostUserVringState.encode({ index: 0, num });
  try {
    await peer.ackedDone('VHOST_USER_SET_MEM_TABLE', table, [memfd]);
  } finally {
    native.close(memfd);
  }
  await peer.ackedDone('VHOST_USER_SET_VRING_NUM', state(RING_SIZE));
  const addr = VhostUserVringAddr.encode({
    index: 0,
    flags: 0,
    descriptor: BigInt(UVA + layout.descOffset),
    available: BigInt(UVA + layout.availOffset),
    used: BigInt(UVA + layout.usedOffset),
    log: 0n,
  });
  await peer.ackedDone('VHOST_USER_SET_VRING_ADDR', addr);
  await peer.ackedDone('VHOST_USER_SET_VRING_BASE', state(0));
  await peer.ackedDone('VHOST_USER_SET_VRING_CALL', encodeVringFd(0, true), [callFd]);
  await peer.ackedDone('VHOST_USER_SET_VRING_KICK', encodeVringFd(0, true), [kickFd]);
  await peer.ackedDone('VHOST_USER_SET_VRING_ENABLE', state(1));

  let availIdx = 0;
  const desc = (i: number, off: number, len: number, flags: number, next: number): void => {
    const d = layout.descOffset + 16 * i;
    view.setBigUint64(d, BigInt(GPA + off), true);
    view.setUint32(d + 8, len, true);
    view.setUint16(d + 12, flags, true);
    view.setUint16(d + 14, next, true);
  };
  return {
    /** A read of sector 0 (three descriptors from 3 * slot), published and kicked. */
    read(slot: number): void {
      const head = 3 * slot;
      const at = BUFFERS + slot * 1024;
      view.setUint32(at, VirtioBlkType.VIRTIO_BLK_T_IN, true);
      view.setBigUint64(at + 8, 0n, true);
      desc(head, at, 16, VIRTQ_DESC_F_NEXT, head + 1);
      desc(head + 1, at + 16, 512, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, head + 2);
      desc(head + 2, at + 528, 1, VIRTQ_DESC_F_WRITE, 0);
      view.setUint16(layout.availOffset + 4 + 2 * (availIdx % RING_SIZE), head, true);
      availIdx = (availIdx + 1) & 0xffff;
      view.setUint16(layout.availOffset + 2, availIdx, true);
      native.eventfdWrite(kickFd);
    },
    usedIdx: (): number => view.getUint16(layout.usedOffset + 2, true),
    close: (): void => native.munmap(handle),
  };
}

async function until(what: string, ms: number, done: () => boolean): Promise<void> {
  const deadline = Date.now() + ms;
  while (!done()) {
    if (Date.now() > deadline) assert.fail(`${what}: not within ${ms} ms`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

test('a call eventfd the frontend made blocking and full does not hang the backend', async () => {
  const backend = await startEmbedded({ size: 1 << 20 });
  const callFd = native.eventfd();
  const kickFd = native.eventfd();
  const peer = new Peer(backend.socketPath);
  try {
    makeHostile(callFd, FULL);
    const ring = await startRing(peer, callFd, kickFd);
    try {
      // Its completion interrupts through the full call fd: write(2) would wait there for good.
      ring.read(0);
      await until('the first completion', 10_000, () => ring.usedIdx() === 1);
      // The backend still answers the socket and serves the ring.
      const features = await within(peer.ask('VHOST_USER_GET_FEATURES'), 10_000, 'a reply');
      assert.equal(features.length, 8);
      ring.read(1);
      await until('the second completion', 10_000, () => ring.usedIdx() === 2);
      // The counter was left as it was: already signalled.
      assert.deepEqual(eventfdState(callFd), { count: FULL, nonblocking: false });
      assert.deepEqual(backend.events, ['connection']);
    } finally {
      ring.close();
    }
  } finally {
    peer.ep.close();
    native.close(callFd);
    native.close(kickFd);
    await backend.stop();
  }
});

/** An eventfd in semaphore mode (each read takes 1), made by python3: native.eventfd() makes none. */
function semaphoreEventfd(): number {
  const [ours, theirs] = native.socketpair();
  try {
    const script = [
      'import os, socket',
      'fd = os.eventfd(0, os.EFD_SEMAPHORE | os.EFD_NONBLOCK | os.EFD_CLOEXEC)',
      "socket.send_fds(socket.socket(fileno=3), [b'e'], [fd])",
    ].join('\n');
    const r = spawnSync('python3', ['-c', script], { stdio: ['ignore', 'ignore', 'pipe', theirs] });
    assert.equal(r.status, 0, `python3: ${r.error?.message ?? r.stderr.toString()}`);
    const { bytes, fds } = native.recvmsg(ours, Buffer.alloc(1));
    assert.equal(bytes, 1);
    assert.equal(fds.length, 1);
    assert.match(readFileSync(`/proc/self/fdinfo/${fds[0]!}`, 'utf8'), /^eventfd-semaphore:\s+1$/m);
    return fds[0]!;
  } finally {
    native.close(ours);
    native.close(theirs);
  }
}

test('a kick eventfd in semaphore mode is refused: one write would keep the backend busy', async () => {
  // Each read of a semaphore eventfd takes 1 from the count, and the poll stays readable while
  // any is left: a count of 2^64 - 2 would have the backend read 1 and look at the ring on every
  // turn of its loop, for ever, at no cost to the frontend.
  await withServer({ size: 1 << 20 }, async (socketPath, server) => {
    const callFd = native.eventfd();
    const kickFd = native.eventfd();
    const semaphore = semaphoreEventfd();
    const peer = new Peer(socketPath);
    try {
      const ring = await startRing(peer, callFd, kickFd);
      try {
        peer.tell('VHOST_USER_SET_VRING_KICK', encodeVringFd(0, true), ACK, [semaphore]);
        const reply = await peer.ep.receive(5000, 'VHOST_USER_SET_VRING_KICK');
        makeHostile(semaphore, 1_000_000n);
        await new Promise((resolve) => setTimeout(resolve, 300));
        assert.ok(
          server.stats.kicksReceived < 10,
          `${server.stats.kicksReceived} kicks taken from one write`,
        );
        assert.equal(U64.decode(reply.payload).value, 1n, 'SET_VRING_KICK was not refused');
        // The ring it was meant for still runs on its old kick fd.
        ring.read(0);
        await until('a completion', 10_000, () => ring.usedIdx() === 1);
      } finally {
        ring.close();
      }
    } finally {
      peer.ep.close();
      native.close(callFd);
      native.close(kickFd);
      native.close(semaphore);
    }
  });
});
