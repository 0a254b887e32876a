import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { native } from '../../src/native.js';
import { SocketEndpoint } from '../../src/protocol/endpoint.js';
import {
  U64,
  VHOST_USER_NEED_REPLY_MASK,
  VHOST_USER_REPLY_MASK,
  VHOST_USER_VERSION,
  VhostUserRequest,
  decodeConfig,
  encodeConfig,
  encodeMemoryTable,
  VhostUserVringState,
} from '../../src/protocol/messages.js';
import { createBlockServer, type BlockServer } from '../../src/backend/index.js';
import { VirtioBlkConfig } from '../../src/devices/blk/spec.js';

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

/** A raw frontend: sends one request, returns the reply. */
async function connect(): Promise<{
  ep: SocketEndpoint;
  ask(
    name: keyof typeof VhostUserRequest,
    payload?: Uint8Array,
    flags?: number,
    fds?: number[],
  ): Promise<Uint8Array>;
  tell(
    name: keyof typeof VhostUserRequest,
    payload?: Uint8Array,
    flags?: number,
    fds?: number[],
  ): void;
}> {
  const ep = SocketEndpoint.connect(server.socketPath!);
  const tell = (
    name: keyof typeof VhostUserRequest,
    payload: Uint8Array = new Uint8Array(0),
    flags = V,
    fds: number[] = [],
  ): void => ep.send(VhostUserRequest[name], flags, payload, fds);
  return {
    ep,
    tell,
    ask: async (name, payload, flags, fds) => {
      tell(name, payload, flags, fds);
      const reply = await ep.receive(1000, name);
      assert.equal(reply.request, VhostUserRequest[name]);
      assert.equal(reply.flags, V | VHOST_USER_REPLY_MASK);
      return reply.payload;
    },
  };
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

async function negotiate(c: Awaited<ReturnType<typeof connect>>, replyAck: boolean): Promise<void> {
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
