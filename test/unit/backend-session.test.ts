import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, mkdtempSync, openSync, rmSync, writeFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { native } from '../../src/native.js';
import {
  U64,
  VHOST_USER_NEED_REPLY_MASK,
  VHOST_USER_VERSION,
  VhostUserRequest,
  decodeConfig,
  encodeConfig,
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
import { createBlockServer, type BlockServer } from '../../src/backend/index.js';
import { VirtioBlkConfig, VirtioBlkType } from '../../src/devices/blk/spec.js';
import { RawFrontend } from '../helpers/raw-frontend.js';

const SIZE = 4 * 1024 * 1024;
const V = VHOST_USER_VERSION;
let dir: string;
let server: BlockServer;
const protocolErrors: Error[] = [];
const lines: string[] = [];

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'vhost-user-backend-unit-'));
  server = createBlockServer({
    socketPath: join(dir, 'sock'),
    size: SIZE,
    blockSize: 4096,
    sizeMax: 65536,
    trace: (line) => lines.push(line),
  });
  server.on('protocol-error', (err: Error) => protocolErrors.push(err));
  await server.listen();
});

after(async () => {
  await server.close();
  rmSync(dir, { recursive: true, force: true });
});

type Conn = RawFrontend;

/** A raw frontend: sends one request, returns the reply. */
async function connect(to: BlockServer = server): Promise<Conn> {
  return Promise.resolve(new RawFrontend(to.socketPath!, 1000));
}

function u64(value: bigint): Uint8Array {
  return U64.encode({ value });
}

test('GET_CONFIG answers exactly the size asked, zero-padded to 256, and refuses more', async () => {
  const c = await connect();
  try {
    const ask = async (offset: number, size: number): Promise<Uint8Array> =>
      c.ask(
        'VHOST_USER_GET_CONFIG',
        encodeConfig({ offset, flags: 0, data: new Uint8Array(size) }),
      );
    const exact = decodeConfig(await ask(0, 60), 'GET_CONFIG');
    assert.equal(exact.data.length, 60);
    const config = VirtioBlkConfig.decode(exact.data);
    assert.equal(config.capacity, BigInt(SIZE / 512));
    assert.equal(config.blkSize, 4096);
    assert.equal(config.sizeMax, 65536);
    assert.equal(config.segMax, 126);
    assert.equal(config.numQueues, 1);

    const full = decodeConfig(await ask(0, 256), 'GET_CONFIG');
    assert.equal(full.data.length, 256);
    assert.deepEqual(full.data.subarray(0, 60), exact.data);
    assert.ok(full.data.subarray(60).every((b) => b === 0));

    const part = decodeConfig(await ask(20, 4), 'GET_CONFIG');
    assert.equal(part.offset, 20);
    assert.equal(Buffer.from(part.data).readUInt32LE(0), 4096);

    assert.equal((await ask(0, 257)).length, 0, '> 256 bytes: empty payload = refused');
    assert.equal((await ask(200, 100)).length, 0, 'offset + size > 256 refused');
    // Still connected after a refusal.
    assert.ok((await c.ask('VHOST_USER_GET_FEATURES')).length === 8);
  } finally {
    c.ep.close();
  }
});

async function negotiate(c: Conn, replyAck: boolean): Promise<void> {
  const features = U64.decode(await c.ask('VHOST_USER_GET_FEATURES')).value;
  const protocol = U64.decode(await c.ask('VHOST_USER_GET_PROTOCOL_FEATURES')).value;
  assert.equal(protocol, (1n << 0n) | (1n << 3n) | (1n << 9n), 'MQ | REPLY_ACK | CONFIG');
  c.tell('VHOST_USER_SET_PROTOCOL_FEATURES', u64(replyAck ? protocol : protocol & ~(1n << 3n)));
  c.tell('VHOST_USER_SET_FEATURES', u64(features));
  c.tell('VHOST_USER_SET_OWNER');
}

function truncatedMemfd(claimed: number, actual: number): { payload: Uint8Array; fd: number } {
  const fd = native.memfdCreate('truncated', 0);
  native.ftruncate(fd, actual);
  native.memfdSeal(fd);
  const payload = encodeMemoryTable([
    {
      guestPhysAddr: 0x1000_0000n,
      memorySize: BigInt(claimed),
      userspaceAddr: 0x7e00_0000_0000n,
      mmapOffset: 0n,
    },
  ]);
  return { payload, fd };
}

test('SET_MEM_TABLE with a truncated memfd is nacked (no SIGBUS); a valid one is acked', async () => {
  const c = await connect();
  try {
    await negotiate(c, true);
    const bad = truncatedMemfd(1 << 20, 4096);
    const nack = await c.ask(
      'VHOST_USER_SET_MEM_TABLE',
      bad.payload,
      V | VHOST_USER_NEED_REPLY_MASK,
      [bad.fd],
    );
    native.close(bad.fd);
    assert.notEqual(U64.decode(nack).value, 0n);

    const good = truncatedMemfd(1 << 20, 1 << 20);
    const ack = await c.ask(
      'VHOST_USER_SET_MEM_TABLE',
      good.payload,
      V | VHOST_USER_NEED_REPLY_MASK,
      [good.fd],
    );
    native.close(good.fd);
    assert.equal(U64.decode(ack).value, 0n);

    // A ring bigger than queueSize (1024 by default) and a bad feature bit are nacked too.
    const num = VhostUserVringState.encode({ index: 0, num: 2048 });
    assert.notEqual(
      U64.decode(await c.ask('VHOST_USER_SET_VRING_NUM', num, V | VHOST_USER_NEED_REPLY_MASK))
        .value,
      0n,
    );
    const noSuchRing = VhostUserVringState.encode({ index: 3, num: 64 });
    assert.notEqual(
      U64.decode(
        await c.ask('VHOST_USER_SET_VRING_NUM', noSuchRing, V | VHOST_USER_NEED_REPLY_MASK),
      ).value,
      0n,
    );
    assert.notEqual(
      U64.decode(
        await c.ask('VHOST_USER_SET_FEATURES', u64(1n << 24n), V | VHOST_USER_NEED_REPLY_MASK),
      ).value,
      0n,
    );
    // GET_VRING_BASE on a ring that never started reports its base.
    const base = await c.ask(
      'VHOST_USER_GET_VRING_BASE',
      VhostUserVringState.encode({ index: 0, num: 0 }),
    );
    assert.deepEqual(VhostUserVringState.decode(base), { index: 0, num: 0 });
  } finally {
    c.ep.close();
  }
});

test('without REPLY_ACK a refused request drops the connection with a protocol-error', async () => {
  const before = protocolErrors.length;
  const c = await connect();
  try {
    await negotiate(c, false);
    const bad = truncatedMemfd(1 << 20, 4096);
    c.tell('VHOST_USER_SET_MEM_TABLE', bad.payload, V, [bad.fd]);
    native.close(bad.fd);
    await assert.rejects(c.ep.receive(1000, 'after SET_MEM_TABLE'), {
      code: 'VHOST_USER_ERR_DISCONNECTED',
    });
    assert.equal(protocolErrors.length, before + 1);
    assert.match(protocolErrors.at(-1)!.message, /fd holds 4096 bytes/);
  } finally {
    c.ep.close();
  }
});

test('unknown requests and stray fds end the connection; the server keeps serving', async () => {
  const before = protocolErrors.length;
  const c = await connect();
  c.tell('VHOST_USER_SET_LOG_BASE', u64(0n));
  await assert.rejects(c.ep.receive(1000, 'after SET_LOG_BASE'), {
    code: 'VHOST_USER_ERR_DISCONNECTED',
  });
  c.ep.close();
  const d = await connect();
  const fd = native.eventfd();
  d.tell('VHOST_USER_GET_FEATURES', new Uint8Array(0), V, [fd]);
  native.close(fd);
  await assert.rejects(d.ep.receive(1000, 'after GET_FEATURES with fd'), {
    code: 'VHOST_USER_ERR_DISCONNECTED',
  });
  d.ep.close();
  assert.equal(protocolErrors.length, before + 2);
  const e = await connect();
  assert.equal((await e.ask('VHOST_USER_GET_QUEUE_NUM')).length, 8);
  e.ep.close();
  assert.ok(lines.some((l) => l.includes('<- VHOST_USER_GET_QUEUE_NUM')));
  assert.ok(lines.some((l) => l.includes('-> VHOST_USER_GET_QUEUE_NUM') && l.includes('REPLY')));
});

const ACK = V | VHOST_USER_NEED_REPLY_MASK;

/** The backend's trace line for the last request it refused. */
function lastRefusal(): string {
  return [...lines].reverse().find((l) => l.includes('refused:')) ?? '';
}

/** Sends `name` asking for an ack; returns the ack value (0 = done). */
async function acked(
  c: Conn,
  name: keyof typeof VhostUserRequest,
  payload?: Uint8Array,
  fds?: number[],
): Promise<bigint> {
  return U64.decode(await c.ask(name, payload ?? new Uint8Array(0), ACK, fds)).value;
}

test('SET_VRING_CALL / KICK / ERR fds that are not eventfds are nacked; the backend lives', async () => {
  const c = await connect();
  const fifo = join(dir, 'fifo');
  execFileSync('mkfifo', [fifo]);
  const fifoFd = openSync(fifo, 'r+');
  writeFileSync(fifo, 'abc'); // three bytes waiting: eventfdRead would fail with EINVAL
  const devNull = openSync('/dev/null', 'r'); // eventfdWrite would fail with EBADF
  const file = join(dir, 'plain');
  writeFileSync(file, '');
  const plain = openSync(file, 'r+');
  try {
    await negotiate(c, true);
    const cases: [keyof typeof VhostUserRequest, number][] = [
      ['VHOST_USER_SET_VRING_CALL', devNull],
      ['VHOST_USER_SET_VRING_KICK', fifoFd],
      ['VHOST_USER_SET_VRING_ERR', plain],
      ['VHOST_USER_SET_VRING_CALL', fifoFd],
    ];
    for (const [name, fd] of cases) {
      assert.equal(await acked(c, name, encodeVringFd(0, true), [fd]), 1n, `${name} fd ${fd}`);
    }
    assert.ok(lines.some((l) => l.includes('is not an eventfd')));
    // Real eventfds are taken.
    for (const name of ['VHOST_USER_SET_VRING_CALL', 'VHOST_USER_SET_VRING_ERR'] as const) {
      const efd = native.eventfd();
      assert.equal(await acked(c, name, encodeVringFd(0, true), [efd]), 0n);
      native.close(efd);
    }
    assert.equal((await c.ask('VHOST_USER_GET_QUEUE_NUM')).length, 8);
  } finally {
    c.ep.close();
    for (const fd of [fifoFd, devNull, plain]) closeSync(fd);
  }
  // Without REPLY_ACK the connection is dropped with a protocol-error instead.
  const before = protocolErrors.length;
  const d = await connect();
  const devNull2 = openSync('/dev/null', 'r');
  try {
    await negotiate(d, false);
    d.tell('VHOST_USER_SET_VRING_CALL', encodeVringFd(0, true), V, [devNull2]);
    await assert.rejects(d.ep.receive(1000, 'after SET_VRING_CALL'), {
      code: 'VHOST_USER_ERR_DISCONNECTED',
    });
    assert.equal(protocolErrors.length, before + 1);
    assert.match(protocolErrors.at(-1)!.message, /is not an eventfd/);
  } finally {
    d.ep.close();
    closeSync(devNull2);
  }
});

test('SET_MEM_TABLE: an unsealed memfd is refused, a sealed one is accepted', async () => {
  const c = await connect();
  try {
    await negotiate(c, true);
    const region = (): Uint8Array =>
      encodeMemoryTable([
        {
          guestPhysAddr: 0x1000_0000n,
          memorySize: 1n << 20n,
          userspaceAddr: 0x7e00_0000_0000n,
          mmapOffset: 0n,
        },
      ]);
    const unsealed = native.memfdCreate('unsealed', 0);
    native.ftruncate(unsealed, 1 << 20);
    assert.equal(native.memfdSeals(unsealed), 0, 'sealable, no seal yet');
    assert.equal(await acked(c, 'VHOST_USER_SET_MEM_TABLE', region(), [unsealed]), 1n);
    assert.ok(lines.some((l) => l.includes('not sealed with F_SEAL_SHRINK')));
    native.memfdSeal(unsealed);
    assert.equal(native.memfdSeals(unsealed), 2 | 4, 'F_SEAL_SHRINK | F_SEAL_GROW');
    assert.equal(await acked(c, 'VHOST_USER_SET_MEM_TABLE', region(), [unsealed]), 0n);
    native.close(unsealed);
    // A file that can never be sealed (tmpfs: F_SEAL_SEAL already set) is accepted as it is.
    const shm = openSync(`/dev/shm/vhost-user-test-${process.pid}`, 'w+');
    try {
      native.ftruncate(shm, 1 << 20);
      assert.equal(native.memfdSeals(shm), 1);
      assert.equal(await acked(c, 'VHOST_USER_SET_MEM_TABLE', region(), [shm]), 0n);
    } finally {
      closeSync(shm);
      rmSync(`/dev/shm/vhost-user-test-${process.pid}`, { force: true });
    }
  } finally {
    c.ep.close();
  }
});

test('RESET_DEVICE is not accepted (not negotiated); RESET_OWNER forgets the ring state', async () => {
  const c = await connect();
  try {
    await negotiate(c, true);
    assert.equal(await acked(c, 'VHOST_USER_RESET_DEVICE'), 1n);
    assert.ok(lines.some((l) => l.includes('RESET_DEVICE was not negotiated')));
    assert.equal(
      await acked(c, 'VHOST_USER_SET_VRING_NUM', VhostUserVringState.encode({ index: 0, num: 8 })),
      0n,
    );
    assert.equal(
      await acked(c, 'VHOST_USER_SET_VRING_BASE', VhostUserVringState.encode({ index: 0, num: 5 })),
      0n,
    );
    c.tell('VHOST_USER_RESET_OWNER');
    const base = await c.ask(
      'VHOST_USER_GET_VRING_BASE',
      VhostUserVringState.encode({ index: 0, num: 0 }),
    );
    assert.deepEqual(VhostUserVringState.decode(base), { index: 0, num: 0 }, 'base was reset');
    // Features were reset too: negotiate again, then the ring has no size any more.
    await negotiate(c, true);
    const mem = sealedMemory();
    try {
      assert.equal(await acked(c, 'VHOST_USER_SET_MEM_TABLE', mem.table, [mem.fd]), 0n);
      const kick = native.eventfd();
      assert.equal(await acked(c, 'VHOST_USER_SET_VRING_KICK', encodeVringFd(0, true), [kick]), 1n);
      native.close(kick);
      assert.match(lastRefusal(), /vring 0 has no size yet/);
    } finally {
      mem.close();
    }
  } finally {
    c.ep.close();
  }
});

const MEM = 1 << 20;
const GPA = 0x1000_0000;
const UVA = 0x7e00_0000_0000;
const QSIZE = 8;
const LAYOUT = splitRingLayout(QSIZE, 0);
const HDR = 0x10000;
const DATA = 0x11000;
const STATUS = 0x12000;

/** A sealed memfd with the ring at offset 0, mapped here too (the frontend's view). */
function sealedMemory(): {
  fd: number;
  table: Uint8Array;
  view: DataView;
  u16: Uint16Array;
  close(): void;
} {
  const fd = native.memfdCreate('session-ring', 0);
  native.ftruncate(fd, MEM);
  native.memfdSeal(fd);
  const { handle, buffer } = native.mmap(fd, MEM, 0, 'shared');
  const table = encodeMemoryTable([
    {
      guestPhysAddr: BigInt(GPA),
      memorySize: BigInt(MEM),
      userspaceAddr: BigInt(UVA),
      mmapOffset: 0n,
    },
  ]);
  return {
    fd,
    table,
    view: new DataView(buffer),
    u16: new Uint16Array(buffer),
    close: () => {
      native.munmap(handle);
      native.close(fd);
    },
  };
}

/** Starts vring 0 over `mem` (size 8, base 0, enabled); returns the kick eventfd. */
async function startRing(c: Conn, mem: ReturnType<typeof sealedMemory>): Promise<number> {
  assert.equal(await acked(c, 'VHOST_USER_SET_MEM_TABLE', mem.table, [mem.fd]), 0n);
  const state = (num: number): Uint8Array => VhostUserVringState.encode({ index: 0, num });
  assert.equal(await acked(c, 'VHOST_USER_SET_VRING_NUM', state(QSIZE)), 0n);
  const addr = VhostUserVringAddr.encode({
    index: 0,
    flags: 0,
    descriptor: BigInt(UVA + LAYOUT.descOffset),
    used: BigInt(UVA + LAYOUT.usedOffset),
    available: BigInt(UVA + LAYOUT.availOffset),
    log: 0n,
  });
  assert.equal(await acked(c, 'VHOST_USER_SET_VRING_ADDR', addr), 0n);
  assert.equal(await acked(c, 'VHOST_USER_SET_VRING_BASE', state(0)), 0n);
  const call = native.eventfd();
  assert.equal(await acked(c, 'VHOST_USER_SET_VRING_CALL', encodeVringFd(0, true), [call]), 0n);
  native.close(call);
  const kick = native.eventfd();
  assert.equal(await acked(c, 'VHOST_USER_SET_VRING_KICK', encodeVringFd(0, true), [kick]), 0n);
  assert.equal(await acked(c, 'VHOST_USER_SET_VRING_ENABLE', state(1)), 0n);
  return kick;
}

/** Publishes GET_ID request number `n` (0-based) in descriptors 0..2, kicks. */
function publishGetId(mem: ReturnType<typeof sealedMemory>, kick: number, n: number): void {
  const { view, u16 } = mem;
  view.setUint32(HDR, VirtioBlkType.VIRTIO_BLK_T_GET_ID, true);
  view.setUint8(STATUS, 0xff);
  const desc = (i: number, off: number, len: number, flags: number, next: number): void => {
    const at = LAYOUT.descOffset + i * 16;
    view.setBigUint64(at, BigInt(GPA + off), true);
    view.setUint32(at + 8, len, true);
    view.setUint16(at + 12, flags, true);
    view.setUint16(at + 14, next, true);
  };
  desc(0, HDR, 16, VIRTQ_DESC_F_NEXT, 1);
  desc(1, DATA, 20, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 2);
  desc(2, STATUS, 1, VIRTQ_DESC_F_WRITE, 0);
  const avail = LAYOUT.availOffset / 2;
  Atomics.store(u16, avail + 2 + (n % QSIZE), 0);
  Atomics.store(u16, avail + 1, n + 1);
  native.eventfdWrite(kick);
}

/** Waits until used.idx reaches `idx`; false after `ms`. */
async function usedReaches(
  mem: ReturnType<typeof sealedMemory>,
  idx: number,
  ms: number,
): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (Atomics.load(mem.u16, LAYOUT.usedOffset / 2 + 1) !== idx) {
    if (Date.now() > deadline) return false;
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  return true;
}

test('SET_MEM_TABLE while a ring runs: a refused table changes nothing, an accepted one moves it', async () => {
  const c = await connect();
  const mem = sealedMemory();
  let kick = -1;
  try {
    await negotiate(c, true);
    kick = await startRing(c, mem);
    publishGetId(mem, kick, 0);
    assert.ok(await usedReaches(mem, 1, 1000), 'first request completed');
    // A table without the ring in it: the rebuild fails, nothing is replaced.
    const other = native.memfdCreate('other', 0);
    native.ftruncate(other, MEM);
    native.memfdSeal(other);
    const elsewhere = encodeMemoryTable([
      {
        guestPhysAddr: BigInt(GPA),
        memorySize: BigInt(MEM),
        userspaceAddr: BigInt(UVA + 0x1000_0000),
        mmapOffset: 0n,
      },
    ]);
    assert.equal(await acked(c, 'VHOST_USER_SET_MEM_TABLE', elsewhere, [other]), 1n);
    native.close(other);
    assert.match(lastRefusal(), /vring 0: .* is not in guest memory/);
    publishGetId(mem, kick, 1);
    assert.ok(await usedReaches(mem, 2, 1000), 'the ring still runs over the old table');
    // The same memory again, as a new mapping: the ring goes on from where it was.
    assert.equal(await acked(c, 'VHOST_USER_SET_MEM_TABLE', mem.table, [mem.fd]), 0n);
    publishGetId(mem, kick, 2);
    assert.ok(await usedReaches(mem, 3, 1000), 'the ring runs over the new table');
    assert.equal(mem.view.getUint8(STATUS), 0);
    assert.equal(
      Buffer.from(mem.view.buffer, DATA, 19).toString(),
      'vhost-user-embedded',
      'GET_ID answered',
    );
  } finally {
    c.ep.close();
    if (kick >= 0) native.close(kick);
    mem.close();
  }
});

test('delayed completions are delivered, not dropped, when SET_MEM_TABLE rebuilds the ring', async () => {
  const slow = createBlockServer({
    socketPath: join(dir, 'slow.sock'),
    size: SIZE,
    faults: { delayCompletionsMs: 10_000 },
  });
  await slow.listen();
  const c = await connect(slow);
  const mem = sealedMemory();
  let kick = -1;
  try {
    await negotiate(c, true);
    kick = await startRing(c, mem);
    publishGetId(mem, kick, 0);
    assert.equal(await usedReaches(mem, 1, 200), false, 'the completion is held');
    assert.equal(await acked(c, 'VHOST_USER_SET_MEM_TABLE', mem.table, [mem.fd]), 0n);
    assert.ok(await usedReaches(mem, 1, 200), 'delivered at the rebuild');
    assert.equal(mem.view.getUint8(STATUS), 0);
  } finally {
    c.ep.close();
    if (kick >= 0) native.close(kick);
    mem.close();
    await slow.close();
  }
});
